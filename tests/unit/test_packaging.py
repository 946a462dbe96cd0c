"""The built wheel holds the package and its data, and nothing else (issue #12).

Builds the wheel offline from a copy of the source tree (``pip wheel --no-deps
--no-build-isolation``, with the test venv's setuptools), then reads its file list.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_ENTRY_POINTS: list[str] = []  # the wheel's entry_points.txt, read by the fixture


def _pyproject() -> dict:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory) -> list[str]:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), src / name)
    # the package folder only: the build must not depend on (or write into) the shared tree
    shutil.copytree(os.path.join(REPO, "vlm_eval"), src / "vlm_eval",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheels = glob.glob(str(out / "vlm_eval-*.whl"))
    assert len(wheels) == 1, os.listdir(out)
    with zipfile.ZipFile(wheels[0]) as zf:
        entry = next(n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt"))
        _ENTRY_POINTS.append(zf.read(entry).decode())
        return zf.namelist()


def test_every_module_and_prompt_set_is_in_the_wheel(wheel_files):
    names = set(wheel_files)
    source = []
    for dirpath, dirnames, files in os.walk(os.path.join(REPO, "vlm_eval")):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for f in files:
            if f.endswith(".py") or f.endswith(".yaml"):
                source.append(os.path.relpath(os.path.join(dirpath, f), REPO).replace(os.sep, "/"))
    # a folder of modules without __init__.py would be silently left out by find_packages
    missing = sorted(set(source) - names)
    assert not missing, f"in the source tree but not in the wheel: {missing}"
    assert "vlm_eval/prompts/sets/cxr-binary-v1.yaml" in names


def test_wheel_carries_no_tests_and_no_cpu_test_hook(wheel_files):
    bad = [n for n in wheel_files
           if n.startswith(("tests/", "benchmarks/", "scripts/", "jobs/", "cluster/"))
           or "_cpu_compat" in n or "torchvision_cpu_hook" in n]
    assert not bad, bad
    tops = {n.split("/")[0] for n in wheel_files}
    assert tops == {"vlm_eval", next(t for t in tops if t.endswith(".dist-info"))}, tops


def test_every_listed_package_data_pattern_matches_real_files():
    data = _pyproject()["tool"]["setuptools"]["package-data"]
    empty = [f"{pkg}: {pattern}" for pkg, patterns in data.items() for pattern in patterns
             if not glob.glob(os.path.join(REPO, *pkg.split("."), pattern))]
    assert not empty, f"package-data patterns matching no file: {empty}"


def test_the_vlm_eval_command_is_in_the_wheel(wheel_files):
    lines = [line.replace(" ", "") for line in _ENTRY_POINTS[0].splitlines()]
    assert "[console_scripts]" in lines and "vlm-eval=vlm_eval.cli:main" in lines, _ENTRY_POINTS[0]
