#!/usr/bin/env bash
# Fetch the published chest X-ray label files that the PyPI package
# `torchxrayvision` ships in torchxrayvision/data/*.csv.gz (PadChest, CheXpert,
# NIH ChestX-ray14, VinDr-CXR, RSNA, SIIM, OpenI ...). Only the wheel is
# downloaded; the library is never installed or imported. No pixels.
#
#   scripts/fetch-label-files.sh [DEST_DIR]     (default: .cache/label-files)
#
# Idempotent: does nothing when DEST_DIR already holds the label files.
# Tests find them through VLM_EVAL_LABEL_FILES (default <repo>/.cache/label-files).
set -euo pipefail

DEST="${1:-.cache/label-files}"
MARKER="PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"
# Any Python with pip will do: $PYTHON, else the repo's .venv, else python3.
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi

if [ -s "$DEST/$MARKER" ] && [ -s "$DEST/chexpert_train.csv.gz" ]; then
    echo "label files already present in $DEST"
    exit 0
fi

mkdir -p "$DEST"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

"$PY" -m pip download --no-deps --only-binary=:all: --quiet torchxrayvision -d "$TMP"
WHEEL="$(ls "$TMP"/torchxrayvision-*.whl | head -n1)"

# Unzip only torchxrayvision/data/*.csv.gz, flattened into DEST (python's zipfile:
# no dependency on the `unzip` binary).
"$PY" - "$WHEEL" "$DEST" <<'PYEOF'
import os, shutil, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
n = 0
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        name = info.filename
        if name.startswith("torchxrayvision/data/") and name.endswith(".csv.gz"):
            target = os.path.join(dest, os.path.basename(name))
            tmp = target + ".part"
            with z.open(info) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out)
            os.replace(tmp, target)
            n += 1
if n == 0:
    sys.exit(f"no torchxrayvision/data/*.csv.gz in {wheel}")
print(f"extracted {n} label files into {dest}")
PYEOF
