"""README's "Where things live" map is true of the code (issue #12).

Reads the map table from README.md and every ``import`` of every module under
``vlm_eval/`` from its AST (function-level imports included; nothing is imported):

- every package imports only what its row allows (plus the foundation rows, layers 0-1),
  and no row allows a package of a higher layer: nothing imports upward;
- torch / transformers / vllm / peft only in ``engines`` and ``models``; ray only in
  ``pipeline`` and ``run`` (so reduce and report import no engine, Ray or torch);
- no two modules import each other, directly or around a circle.
"""
from __future__ import annotations

import ast
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = os.path.join(REPO, "vlm_eval")
HEAVY = {"torch": {"engines", "models"}, "transformers": {"engines", "models"}, "vllm": {"engines", "models"},
         "peft": {"engines", "models"}, "ray": {"pipeline", "run"}}
FOUNDATION_LAYERS = 1  # rows of layers 0..1 may be imported by every higher layer


def read_map() -> dict[str, tuple[int, set[str]]]:
    """{package: (layer, packages it may import)} from README's "Where things live" table."""
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    section = text.split("## Where things live", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[int, set[str]]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].isdigit():
            continue
        layer, names, _owns, may = cells
        allowed = set(re.findall(r"`([a-z_]+)`", may))
        for name in re.findall(r"`([a-z_]+)`", names):
            rows[name] = (int(layer), allowed)
    return rows


def module_imports() -> tuple[dict[str, str], dict[str, set[str]]]:
    """({module: file}, {module: every module or name it imports}) for vlm_eval, by AST."""
    mods: dict[str, str] = {}
    for dirpath, dirnames, files in os.walk(PACKAGE):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                mods[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = path
    imports: dict[str, set[str]] = {}
    for name, path in mods.items():
        pkg = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
        out: set[str] = set()
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = pkg.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1])
                    mod = f"{base}.{node.module}" if node.module else base
                else:
                    mod = node.module or ""
                # "from vlm_eval import storage" imports the module vlm_eval.storage
                out.update(f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names)
        imports[name] = out
    return mods, imports


def area(module: str) -> str:
    """The map row a module belongs to: vlm_eval.reduce.tables -> reduce; vlm_eval -> vlm_eval."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


MAP = read_map()
MODS, IMPORTS = module_imports()


def test_every_package_has_a_row():
    missing = sorted({area(m) for m in MODS} - set(MAP))
    assert not missing, f"packages/modules missing from README's 'Where things live' table: {missing}"
    stale = sorted(set(MAP) - {area(m) for m in MODS})
    assert not stale, f"rows for packages that do not exist: {stale}"


def test_no_row_allows_an_upward_import():
    upward = [f"{pkg} (layer {layer}) may import {dep} (layer {MAP[dep][0]})"
              for pkg, (layer, allowed) in MAP.items() for dep in sorted(allowed)
              if dep in MAP and MAP[dep][0] > layer]
    unknown = [f"{pkg}: {dep}" for pkg, (_, allowed) in MAP.items() for dep in allowed if dep not in MAP]
    assert not upward and not unknown, upward + unknown


def map_violations(imports: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, targets in sorted(imports.items()):
        here = area(mod)
        layer, allowed = MAP[here]
        for target in sorted(targets):
            if target.split(".")[0] != "vlm_eval" or target == "vlm_eval":
                continue
            there = area(target)
            if there == here:
                continue
            foundation = MAP[there][0] <= FOUNDATION_LAYERS < layer
            if there not in allowed and not foundation:
                bad.append(f"{mod} imports {target} ({here} may not import {there})")
    return bad


def test_imports_follow_the_map():
    bad = map_violations(IMPORTS)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("lib", sorted(HEAVY))
def test_heavy_libraries_only_where_allowed(lib):
    bad = sorted(f"{mod} imports {lib}" for mod, targets in IMPORTS.items()
                 if area(mod) not in HEAVY[lib] and any(t.split(".")[0] == lib for t in targets))
    assert not bad, bad


def test_no_import_circles():
    # package faces (__init__) re-export their modules; circles are between modules
    faces = {m for m, p in MODS.items() if p.endswith("__init__.py")}
    graph = {m: {t for t in ts if t in MODS and t not in faces and t != m}
             for m, ts in IMPORTS.items() if m not in faces}
    circles = strongly_connected(graph)
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_the_walls_catch_a_violation():
    """The checks can fail: a circle, and reduce or report reaching for an engine or the pipeline."""
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    planted = {"vlm_eval.reduce.tables": {"vlm_eval.engines.vllm"},
               "vlm_eval.report.html": {"vlm_eval.pipeline.actors"},
               "vlm_eval.storage": {"vlm_eval.config"}}
    assert len(map_violations(planted)) == 3


def _loaded_after(code: str) -> set[str]:
    """Modules a fresh interpreter holds after running ``code``."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True, cwd=REPO, timeout=120)
    return set(out.stdout.split())


def test_importing_the_package_or_the_reducer_loads_no_engine():
    heavy = {"torch", "transformers", "vllm", "ray", "peft"}
    bare = _loaded_after("import vlm_eval")
    assert {m for m in bare if m.startswith("vlm_eval")} == {"vlm_eval"}
    reduce = _loaded_after("import vlm_eval.reduce, vlm_eval.report")
    assert not {m for m in reduce if m.startswith(("vlm_eval.engines", "vlm_eval.pipeline"))}
    assert not heavy & reduce
    # the public names still work, loading only what they need
    names = _loaded_after("from vlm_eval.engines import ScoreRequest\nfrom vlm_eval import ScoreResult, UserError")
    assert "vlm_eval.engines.base" in names and not heavy & names
    assert not {"vlm_eval.engines.vllm", "vlm_eval.engines.transformers", "vlm_eval.config"} & names
