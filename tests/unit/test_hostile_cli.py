"""Hostile job files and CLI arguments (issue #11 items 14 and 17): refused at once with
exit 2 and one clear message; nothing is created, Ray never starts."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vlm_eval.cli import main
from vlm_eval.config import validate_job
from vlm_eval.errors import ConfigError

BOMB = "\n".join(
    ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
) + "\nname: bomb\ndataset: {manifest: m.csv}\nmodels: [{name: m, engine: scripted}]\n"


def _base() -> dict:
    return {"name": "x", "dataset": {"manifest": "m.csv"}, "models": [{"name": "m", "engine": "scripted"}]}


def _problems(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate_job(data)
    return str(info.value)


# ---------------------------------------------------------------- item 14: YAML


@pytest.mark.timeout(120)
def test_yaml_alias_bomb_is_refused_with_exit_2(tmp_path, capsys):
    assert len(BOMB) < 1000  # a small file: 9 ** 9 values once expanded
    (tmp_path / "bomb.yaml").write_text(BOMB)
    assert main(["run", str(tmp_path / "bomb.yaml")]) == 2
    err = capsys.readouterr().err
    assert "aliases" in err and "bomb.yaml" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.timeout(120)
def test_yaml_deep_nesting_is_refused_before_pydantic(tmp_path, capsys):
    deep = "name: x\ndataset: {manifest: m.csv}\nmodels: [{name: m, engine: scripted, options: " \
           + "[" * 400 + "]" * 400 + "}]\n"
    (tmp_path / "deep.yaml").write_text(deep)
    assert main(["run", str(tmp_path / "deep.yaml")]) == 2
    assert "deeper than" in capsys.readouterr().err
    nested: dict = {}
    node = nested
    for _ in range(200):  # the same through the Python API (a dict, no YAML)
        node["k"] = {}
        node = node["k"]
    assert "deeper than" in _problems({**_base(), "models": [{"name": "m", "engine": "scripted",
                                                               "options": nested}]})


def test_yaml_oversized_job_file_is_refused(tmp_path, capsys):
    (tmp_path / "big.yaml").write_text("name: x\n# " + "x" * (2 << 20) + "\n")
    assert main(["run", str(tmp_path / "big.yaml")]) == 2
    assert "byte limit" in capsys.readouterr().err


def test_yaml_duplicate_key_names_the_key_and_its_line(tmp_path, capsys):
    (tmp_path / "dup.yaml").write_text("name: x\ndataset: {manifest: m.csv}\nmodels: [{name: m}]\n"
                                       "name: y\n")
    assert main(["run", str(tmp_path / "dup.yaml")]) == 2
    err = capsys.readouterr().err
    assert "duplicate key 'name' at line 4" in err and "line 1" in err


def test_yaml_merge_keys_still_work():
    from vlm_eval import safe_yaml

    assert safe_yaml.load("base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  x: 3\n")["d"] == {"x": 3, "y": 2}


def test_yaml_deep_value_in_a_set_override_is_refused(tmp_path, capsys):
    (tmp_path / "job.yaml").write_text("name: x\ndataset: {manifest: m.csv}\nmodels: [{name: m, engine: scripted}]\n")
    deep = "[" * 100 + "]" * 100
    assert main(["run", str(tmp_path / "job.yaml"), "--set", f"models.0.options.x={deep}"]) == 2
    assert "deeper than" in capsys.readouterr().err


# ---------------------------------------------------------------- item 17: names, engines, run folders


@pytest.mark.parametrize("where", ["name", "run_id", "model"])
def test_names_with_a_trailing_newline_are_refused(where):
    data = _base()
    if where == "model":
        data["models"][0]["name"] = "m\n"
    else:
        data[where] = "x\n"
    assert "letters, digits" in _problems(data)


@pytest.mark.parametrize("engine, says", [
    ("no_such_package.engines:factory", "cannot be imported"),
    ("json:no_such_factory", "has no attribute"),
    ("json:__doc__", "not a callable"),
    ("vlm_eval.engines.scripted:", "package.module:factory"),
])
def test_engine_plugin_that_does_not_import_is_refused_at_validation(engine, says):
    data = _base()
    data["models"][0]["engine"] = engine
    assert says in _problems(data)


def test_engine_plugin_failing_at_import_exits_2_in_one_line_before_ray(tmp_path):
    (tmp_path / "broken_plugin.py").write_text("import no_such_dependency_xyz\n")
    job = tmp_path / "job.yaml"
    job.write_text(f"name: x\noutput: {tmp_path / 'runs'}\ndataset: {{manifest: {tmp_path / 'm.csv'}}}\n"
                   "models: [{name: m, engine: 'broken_plugin:factory'}]\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    code = ("import sys; from vlm_eval.cli import main; rc = main(sys.argv[1:]); "
            "assert 'ray' not in sys.modules, 'Ray was imported'; sys.exit(rc)")
    res = subprocess.run([sys.executable, "-c", code, "run", str(job)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 2, res.stderr
    problem = [line for line in res.stderr.splitlines() if "models.0.engine" in line]
    assert len(problem) == 1 and "no_such_dependency_xyz" in problem[0]
    assert "Traceback" not in res.stderr and len(res.stderr.splitlines()) <= 3
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", ["reduce", "report"])
def test_reduce_and_report_refuse_a_folder_that_is_not_a_run(tmp_path, capsys, command):
    missing = tmp_path / "no" / "such" / "run"
    assert main([command, str(missing)]) == 2
    assert "not a vlm-eval run folder" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()  # nothing created
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("mine")
    assert main([command, str(tmp_path / "plain")]) == 2
    assert "has no run.json" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == ["notes.txt"]


def test_status_subcommand_is_wired(tmp_path, capsys):
    assert main(["status", str(tmp_path / "nothing")]) == 2
    assert str(tmp_path / "nothing") in capsys.readouterr().err


def test_yaml_alias_bomb_as_a_prompt_set_is_refused(tmp_path):
    from vlm_eval.errors import InputError
    from vlm_eval.prompts.sets import load_prompt_set

    (tmp_path / "bomb.yaml").write_text(BOMB)
    with pytest.raises(InputError, match="aliases"):
        load_prompt_set(str(tmp_path / "bomb.yaml"))
