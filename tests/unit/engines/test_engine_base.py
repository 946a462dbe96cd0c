"""The engine-side single sources of truth (issue #12): the answer options, the
retry-alone policy every engine and the actor use, and model-path resolution."""
from __future__ import annotations

import os

import fsspec
import pytest

from vlm_eval.engines.base import ANSWER_OPTIONS, ScoreRequest, ScoreResult, score_one_by_one
from vlm_eval.engines.model_paths import DEMO_MODEL, localize, resolve_model_path
from vlm_eval.engines.scripted import ScriptedEngine
from vlm_eval.errors import EngineError, InputError


class _Flaky:
    """Refuses any batch holding a request whose prompt starts with 'bad'; counts calls."""

    def __init__(self, dead_after: int | None = None):
        self.calls: list[list[str]] = []
        self.dead_after = dead_after

    def score(self, requests):
        self.calls.append([r.prompt for r in requests])
        if self.dead_after is not None and len(self.calls) > self.dead_after:
            raise EngineError("engine died")
        if any(r.prompt.startswith("bad") for r in requests):
            raise ValueError(f"cannot score {requests[0].prompt!r}")
        return [ScoreResult(logprobs={"Yes": -0.1, "No": -2.4}) for _ in requests]


def _reqs(*prompts):
    return [ScoreRequest(prompt=p) for p in prompts]


def test_answer_options_are_the_default_of_every_request():
    assert ANSWER_OPTIONS == ("Yes", "No")
    assert ScoreRequest(prompt="q").options == ANSWER_OPTIONS
    # the scripted engine answers exactly these options, positive first
    res = ScriptedEngine({"options": {"default": 1.0}}).score(_reqs("q"))[0]
    assert list(res.logprobs) == list(ANSWER_OPTIONS) and res.logprobs["Yes"] > res.logprobs["No"]


def test_one_by_one_isolates_the_bad_request_in_order():
    eng = _Flaky()
    res = score_one_by_one(eng.score, _reqs("ok1", "bad", "ok2"), cause=ValueError("batch"))
    assert eng.calls == [["ok1"], ["bad"], ["ok2"]]  # each request alone, once, in order
    assert [r.error for r in res] == [None, "ValueError: cannot score 'bad'", None]
    assert res[0].logprobs == {"Yes": -0.1, "No": -2.4}


def test_every_request_failing_alone_is_a_dead_engine_only_after_a_failed_batch():
    with pytest.raises(EngineError, match="every request .*ValueError: the batch failed"):
        score_one_by_one(_Flaky().score, _reqs("bad1", "bad2"), cause=ValueError("the batch failed"))
    # without a failed batch (an engine isolating bad requests inside its own batch): error rows
    res = score_one_by_one(_Flaky().score, _reqs("bad1", "bad2"))
    assert [r.error is not None for r in res] == [True, True]


def test_an_engine_that_says_it_is_dead_stops_the_retries_at_once():
    eng = _Flaky(dead_after=1)
    with pytest.raises(EngineError, match="engine died"):
        score_one_by_one(eng.score, _reqs("ok1", "ok2", "ok3"), cause=ValueError("batch"))
    assert len(eng.calls) == 2  # ok1 scored, ok2 raised EngineError, ok3 never tried


def test_a_malformed_answer_is_that_request_s_error():
    def wrong_count(requests):
        return [ScoreResult(logprobs={"Yes": -1.0, "No": -1.0})] * 2

    res = score_one_by_one(wrong_count, _reqs("a", "b"))
    assert all(r.error and "2 results for 1 requests" in r.error for r in res)


def test_model_paths(tmp_path, monkeypatch):
    assert resolve_model_path("/models/medgemma") == "/models/medgemma"
    assert resolve_model_path(None) is None
    pytest.importorskip("transformers")
    demo = resolve_model_path(DEMO_MODEL)  # built on first use, by name (engines never import models)
    assert os.path.isfile(os.path.join(demo, "config.json")) and resolve_model_path(DEMO_MODEL) == demo
    folder = tmp_path / "m"
    folder.mkdir()
    assert localize(str(folder)) == str(folder)
    assert localize(f"file://{folder}") == str(folder)
    with pytest.raises(InputError, match="does not exist"):
        localize(str(tmp_path / "missing"), "model 'x'")

    # a remote folder is copied once into the cache, atomically, and reused
    monkeypatch.setenv("VLM_EVAL_CACHE", str(tmp_path / "cache"))
    fs = fsspec.filesystem("memory")
    fs.pipe({"/models/tiny/config.json": b"{}", "/models/tiny/sub/w.bin": b"123"})
    local = localize("memory://models/tiny")
    assert local.startswith(str(tmp_path / "cache"))
    assert open(os.path.join(local, "sub", "w.bin"), "rb").read() == b"123"
    fs.rm("/models/tiny", recursive=True)
    assert localize("memory://models/tiny") == local  # served from the cache
    with pytest.raises(InputError, match="does not exist"):
        localize("memory://models/none")


def test_engines_share_prepare_and_chunk_isolation():
    from vlm_eval.engines.prompting import all_scored, prepare_each, score_chunk

    reqs = _reqs("ok1", "bad-prep", "bad-row", "ok2")

    def prepare(req):
        if req.prompt == "bad-prep":
            raise ValueError("cannot render")
        return req.prompt

    prepared, results = prepare_each(prepare, reqs)
    assert sorted(prepared) == [0, 2, 3] and results[1].error == "ValueError: cannot render"
    passes: list[list[int]] = []

    def score_rows(idx):  # one "forward pass"; fails whenever the bad row is in it
        passes.append(list(idx))
        if any(prepared[i] == "bad-row" for i in idx):
            raise RuntimeError("NaN in forward")
        return [ScoreResult(logprobs={"Yes": -0.5, "No": -1.0}) for _ in idx]

    score_chunk(score_rows, [0, 2, 3], reqs, results)
    assert passes == [[0, 2, 3], [0], [2], [3]]  # the batch, then each alone
    assert [r.error for r in all_scored(results)] == [None, "ValueError: cannot render",
                                                      "RuntimeError: NaN in forward", None]
    passes.clear()
    lone: list = [None] * len(reqs)
    score_chunk(score_rows, [2], reqs, lone)  # a chunk of one is not retried
    assert passes == [[2]] and lone[2].error == "RuntimeError: NaN in forward"
    assert all_scored([None])[0].error == "EngineError: not scored"


def test_a_folder_is_built_once_and_never_left_half_written(tmp_path):
    from vlm_eval.engines.model_paths import build_folder_once

    target = str(tmp_path / "models" / "m")
    done = lambda folder: os.path.isfile(os.path.join(folder, "done"))  # noqa: E731

    def crash(tmp):
        open(os.path.join(tmp, "half"), "w").close()
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError):
        build_folder_once(target, crash, done)
    assert os.listdir(tmp_path / "models") == []  # no partial folder, no temp folder left
    os.makedirs(target)  # a stale partial folder in the way is replaced
    builds = []

    def build(tmp):
        builds.append(tmp)
        open(os.path.join(tmp, "done"), "w").close()

    assert build_folder_once(target, build, done) == target and done(target)
    assert build_folder_once(target, build, done) == target and len(builds) == 1  # made once
