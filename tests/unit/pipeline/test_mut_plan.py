"""The run's plan (``pipeline/plan.py``) and its units (``pipeline/units.py``), checked
against values worked out by hand (written for the session-5 mutation runs; each test
names what it pins). Prompt ids are sha256 digests of JSON strings written out here.
"""
from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest

from pipeline_helpers import write_samples
from vlm_eval.config import Job
from vlm_eval.pipeline.plan import distinct_text_prompts, forward_passes, plan_for_job
from vlm_eval.pipeline.units import Plan, plan_units

# Each test takes well under a second; a planning loop that never ends (x_plan_units__mutmut_77,
# `ui = 1`) fails here instead of hanging.
pytestmark = pytest.mark.timeout(30)

Q1, Q2 = "Is there a nodule?", "Is a nodule visible?"


def _pid(payload: str) -> str:
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# prompt_id(system, text) = sha256 of json.dumps([system, text], separators=(",", ":")), 16 hex digits.
PID_SYS_Q1 = _pid('["sys","Is there a nodule?"]')
PID_SYS_Q2 = _pid('["sys","Is a nodule visible?"]')


# --- plan.py -----------------------------------------------------------------------------

def _job(**over) -> Job:
    spec = {"name": "t", "dataset": {"manifest": "m.csv"}, "models": [{"name": "m", "engine": "scripted"}],
            "prompts": {"paraphrases": 1, "system": "sys"}, "resources": {"batch_size": 2}}
    spec.update(over)
    return Job.model_validate(spec)


def test_plan_for_job_caps_units_at_batch_size_samples_of_all_variants(tmp_path):
    # 3 images, one sample each, 2 prompts (the question + 1 paraphrase); conditions image
    # + text_only: 1 image condition. Cap = batch_size 2 x (1 + 1 paraphrase) x 1 = 4
    # prompts, each image has 2: units of 2 images (rows 0-2, 4 prompts) and 1 image
    # (row 2-3, 2 prompts). (A cap of 2 would give 3 units, of 6 one unit.)
    rows = [{"sample_id": f"s{i}", "image_uri": f"/img/{i}.png", "swap_image_uri": None, "prompts": [Q1, Q2]}
            for i in range(3)]
    f = write_samples(tmp_path / "s.parquet", rows)
    plan = plan_for_job(f, _job())
    image = [u for u in plan.units.to_pylist() if u["kind"] == "image"]
    assert [(u["start"], u["end"], u["n_images"], u["n_prompts"]) for u in image] == [(0, 2, 2, 4), (2, 3, 1, 2)]
    # text_only: the 2 distinct texts in one text unit (16 = 2 x 8 a unit), by prompt_id,
    # with the job's system prompt in the id.
    (text,) = [u for u in plan.units.to_pylist() if u["kind"] == "text"]
    want = sorted([{"prompt": Q1, "prompt_id": PID_SYS_Q1}, {"prompt": Q2, "prompt_id": PID_SYS_Q2}],
                  key=lambda it: it["prompt_id"])
    assert json.loads(text["items"]) == want
    assert (plan.n_samples, plan.n_images, plan.n_text_prompts, plan.n_variants) == (3, 3, 2, 6)


def test_forward_passes_add_text_prompts_only_with_an_image_free_ablation():
    plan = Plan(units=None, n_samples=10, n_images=5, n_text_prompts=7, n_variants=30)
    # blank only: 30 variants x 2 image conditions (image, blank); naive also 30 x 2.
    assert forward_passes(plan, ["blank"]) == {"planned": 60, "naive": 60}
    # text_only only: 30 x 1 image condition + 7 distinct texts; naive 30 x 2.
    assert forward_passes(plan, ["text_only"]) == {"planned": 37, "naive": 60}
    assert forward_passes(plan, []) == {"planned": 30, "naive": 30}


def test_distinct_text_prompts_one_row_per_text_sorted_by_prompt_id():
    samples = pd.DataFrame({"prompts": [[Q2, Q1], [Q1], [Q2]]})
    got = distinct_text_prompts(samples, "sys")
    want = sorted([(PID_SYS_Q1, Q1), (PID_SYS_Q2, Q2)])
    assert got.to_dict("list") == {"prompt": [t for _, t in want], "prompt_id": [p for p, _ in want]}
    assert list(got.index) == [0, 1]
    # No system prompt: json null in the id.
    none = distinct_text_prompts(samples, None)
    assert set(none["prompt_id"]) == {_pid('[null,"Is there a nodule?"]'), _pid('[null,"Is a nodule visible?"]')}


# --- units.py ----------------------------------------------------------------------------

Q3 = "Is the heart enlarged?"


def test_unit_prompt_cap_is_batch_size_samples_of_every_variant_and_image_condition():
    from vlm_eval.pipeline.units import unit_prompt_cap

    assert unit_prompt_cap(2, 3, ["blank"]) == 12  # 2 x 3 x 2 (image, blank)
    assert unit_prompt_cap(4, 1, ["text_only"]) == 4  # 4 x 1 x 1 (text_only is no image condition)
    assert unit_prompt_cap(4, 0, []) == 4  # at least one variant
    assert unit_prompt_cap(1, 1, []) == 1


def test_sort_image_major_orders_by_partition_then_uri_then_sample_id():
    import pyarrow as pa

    from vlm_eval.pipeline.units import sort_image_major

    # Partitions (first 2 hex digits of sha256 of the URI): /img/c.png 85, /img/a.png b2,
    # /img/d.png c3, /img/b.png dc; a null URI is placed as "" (e3) and sorts last.
    rows = [("s1", "/img/a.png"), ("s0", "/img/a.png"), ("s2", "/img/b.png"), ("s5", None), ("s3", "/img/c.png"),
            ("s4", "/img/d.png")]
    t = pa.table({"sample_id": [s for s, _ in rows], "image_uri": pa.array([u for _, u in rows], pa.string())})
    assert sort_image_major(t)["sample_id"].to_pylist() == ["s3", "s0", "s1", "s4", "s2", "s5"]


def _mixed_rows() -> list[dict]:
    # Image-major order (see the test above): c (rows 0-1), a (2-4), d (5), b (6-8).
    # Prompts per image: c 2 + 1 = 3, a 2 + 2 + 0 (null prompts) = 4, d 1, b 3 + 1 + 1 = 5.
    def s(sid, img, prompts):
        return {"sample_id": sid, "image_uri": f"/img/{img}.png", "swap_image_uri": None, "prompts": prompts}

    return [s("s0", "a", [Q1, Q2]), s("s1", "a", [Q1, Q2]), s("s7", "a", None), s("s3", "c", [Q1, Q2]),
            s("s6", "c", [Q1]), s("s4", "d", [Q2]), s("s2", "b", [Q1, Q2, Q3]), s("s8", "b", [Q3]), s("s9", "b", [Q1])]


def test_plan_units_is_the_same_for_every_scan_batch_and_row_group_size(tmp_path, monkeypatch):
    from vlm_eval.pipeline import units

    abl = ["blank", "text_only"]  # 2 image conditions
    # Prompts x 2 conditions per image: c 6, a 8, d 2, b 10. Cap 10, greedy: c (6; + a = 14
    # > 10), a + d (10; + b = 20 > 10), b (10).
    want = [(0, 2, 1, 6), (2, 6, 2, 10), (6, 9, 1, 10)]
    ids = {}
    for rg in (2, 3, 4096):  # row groups: the scan batches span them
        f = write_samples(tmp_path / f"s{rg}.parquet", _mixed_rows(), row_group=rg)
        for scan in (2, 3, 4, 6, units.SCAN_ROWS):  # scan 2: row 8 is a batch inside image b
            monkeypatch.setattr(units, "SCAN_ROWS", scan)
            plan = units.plan_units(f, "sys", abl, 1, 10)
            image = [u for u in plan.units.to_pylist() if u["kind"] == "image"]
            assert [(u["start"], u["end"], u["n_images"], u["n_prompts"]) for u in image] == want, (rg, scan)
            assert (plan.n_samples, plan.n_images, plan.n_text_prompts, plan.n_variants) == (9, 4, 3, 13)
            assert type(plan.n_variants) is int  # 26 image-condition prompts // 2 conditions
            ids[(rg, scan)] = plan.ids()
    # A unit's id hashes its rows batch by batch: the same for every row-group layout, and
    # for every scan size that cuts no unit (6: batches [0, 6) [6, 9); one batch of 9).
    assert len({tuple(v) for k, v in ids.items() if k[1] in (6, units.SCAN_ROWS)}) == 1
    for scan in (2, 3, 4):
        assert ids[(2, scan)] == ids[(3, scan)] == ids[(4096, scan)]
    assert len(set(ids[(4096, units.SCAN_ROWS)])) == 4  # 3 image units + 1 text unit


def test_a_unit_cut_by_scan_batches_hashes_every_row_it_holds(tmp_path, monkeypatch):
    # Units c (rows 0-1), a + d (2-5), b (6-8). Sample s4 (image d, row 5) gets another
    # question: only the unit holding it gets another id, however the scan cuts it
    # (scan 2: batches [2, 4) [4, 6); scan 4: [0, 4) [4, 8)).
    from vlm_eval.pipeline import units

    rows = _mixed_rows()
    changed = [dict(r, prompts=[Q3]) if r["sample_id"] == "s4" else r for r in rows]
    f1 = write_samples(tmp_path / "a.parquet", rows)
    f2 = write_samples(tmp_path / "b.parquet", changed)
    for scan in (2, 3, 4, units.SCAN_ROWS):
        monkeypatch.setattr(units, "SCAN_ROWS", scan)
        a, b = units.plan_units(f1, "sys", [], 1, 5).ids(), units.plan_units(f2, "sys", [], 1, 5).ids()
        assert (a[0] == b[0], a[1] == b[1], a[2] == b[2]) == (True, False, True), scan


def test_an_image_spanning_three_scan_batches_is_one_image(tmp_path, monkeypatch):
    # Bug found in session 5 (fixed in units._images): a scan batch that lies wholly inside
    # one image added an empty prompt-count array, and the next batch continuing the same
    # image indexed it (IndexError). By default SCAN_ROWS = 65536: one image with more
    # than 65537 samples. Here one row a batch and image b has 3 rows (6, 7, 8).
    from vlm_eval.pipeline import units

    f = write_samples(tmp_path / "s.parquet", _mixed_rows())
    monkeypatch.setattr(units, "SCAN_ROWS", 1)
    plan = units.plan_units(f, "sys", ["blank", "text_only"], 1, 10)
    image = [u for u in plan.units.to_pylist() if u["kind"] == "image"]
    assert [(u["start"], u["end"], u["n_images"], u["n_prompts"]) for u in image] == [(0, 2, 1, 6), (2, 6, 2, 10),
                                                                                       (6, 9, 1, 10)]
    assert (plan.n_images, plan.n_variants) == (4, 13)


def test_distinct_texts_of_many_scan_batches(tmp_path, monkeypatch):
    from vlm_eval.pipeline import units

    # 20 one-sample images, each its own question: 20 scan batches of one row merge
    # their distinct texts every 16 batches; every text reaches the text units.
    rows = [{"sample_id": f"s{i:02d}", "image_uri": f"/img/{i}.png", "swap_image_uri": None, "prompts": [f"q{i}"]}
            for i in range(20)]
    f = write_samples(tmp_path / "s.parquet", rows)
    monkeypatch.setattr(units, "SCAN_ROWS", 1)
    plan = units.plan_units(f, None, ["text_only"], 4, 100)
    (text,) = [u for u in plan.units.to_pylist() if u["kind"] == "text"]  # 4 x 8 = 32 texts a unit
    assert sorted(it["prompt"] for it in json.loads(text["items"])) == sorted(f"q{i}" for i in range(20))
    assert plan.n_text_prompts == 20 and text["n_prompts"] == 20


def _le8(n: int) -> bytes:
    return n.to_bytes(8, "little")


def test_unit_ids_are_the_documented_content_hashes(tmp_path):
    # Pinned: a resume by a newer version must plan the same ids, or every committed shard
    # of the run is stale and rescored. Image unit id = "u" + 24 hex digits of sha256 of
    # json.dumps(["image", system, image conditions]), then per column (sample_id, image_uri,
    # swap_image_uri: null hashed as "") the int64 value lengths and the bytes, then the
    # prompts: the int64 list lengths, the int64 text lengths, the texts.
    f = write_samples(tmp_path / "s.parquet", [{"sample_id": "s0", "image_uri": "/img/a.png", "swap_image_uri": None,
                                                "prompts": [Q1]}])
    plan = plan_units(f, "sys", ["text_only"], 1, 10)
    h = hashlib.sha256(b'["image", "sys", ["image"]]')
    h.update(_le8(2) + b"s0")
    h.update(_le8(10) + b"/img/a.png")
    h.update(_le8(0))
    h.update(_le8(1) + _le8(len(Q1)) + Q1.encode())
    image_id = "u" + h.hexdigest()[:24]
    # Text unit id = "t" + 24 hex digits of sha256 of json.dumps(["text", system, its prompt ids]).
    text_id = "t" + hashlib.sha256(f'["text", "sys", ["{PID_SYS_Q1}"]]'.encode()).hexdigest()[:24]
    assert plan.units.to_pylist() == [
        {"unit_id": image_id, "kind": "image", "start": 0, "end": 1, "n_images": 1, "n_prompts": 1, "items": None},
        {"unit_id": text_id, "kind": "text", "start": 0, "end": 0, "n_images": 0, "n_prompts": 1,
         "items": json.dumps([{"prompt": Q1, "prompt_id": PID_SYS_Q1}])}]


def test_unit_ids_change_with_the_system_prompt_and_the_conditions(tmp_path):
    f = write_samples(tmp_path / "s.parquet", _mixed_rows())
    # Prompts per image c 3, a 4, d 1, b 5; cap 5: units c, a + d, b.
    base = plan_units(f, "sys", [], 1, 5)
    assert [(u["start"], u["end"]) for u in base.units.to_pylist()] == [(0, 2), (2, 6), (6, 9)]
    ids = set(base.ids())
    assert len(ids) == 3
    assert not ids & set(plan_units(f, "other", [], 1, 5).ids())
    assert not ids & set(plan_units(f, None, [], 1, 5).ids())
    # The same cuts with another condition list (cap doubled with the prompts: 2 conditions).
    noise = plan_units(f, "sys", ["noise"], 1, 10)
    assert [(u["start"], u["end"]) for u in noise.units.to_pylist()] == [(0, 2), (2, 6), (6, 9)]
    assert not ids & set(noise.ids())


def test_a_plan_of_image_units_only_has_the_plan_schema(tmp_path):
    from vlm_eval.pipeline.units import PLAN_SCHEMA

    f = write_samples(tmp_path / "s.parquet", _mixed_rows())
    plan = plan_units(f, "sys", ["blank"], 1, 10)
    assert plan.units.schema == PLAN_SCHEMA  # "items" a string column even when all null
    assert plan.units["items"].null_count == 3


def test_read_rows_reads_the_unit_columns_of_a_row_range(tmp_path, monkeypatch):
    from vlm_eval.pipeline import units
    from vlm_eval.pipeline.units import UNIT_COLUMNS, read_rows

    rows = [dict(r, label="yes") for r in _mixed_rows()]
    f = write_samples(tmp_path / "s.parquet", rows, row_group=2)  # row groups [0,2) [2,4) [4,6) [6,8) [8,9)
    t = read_rows(f, 3, 7)  # groups 1-3
    assert t.column_names == UNIT_COLUMNS  # not label, dataset, ...
    assert t["sample_id"].to_pylist() == ["s1", "s7", "s4", "s2"]
    assert read_rows(f, 2, 9, ["sample_id"]).to_pydict() == {"sample_id": ["s0", "s1", "s7", "s4", "s2", "s8", "s9"]}
    # Only the row groups holding the rows are read (rows [4, 7): groups 2 and 3).
    pf, _ = units._OPEN[f]
    read = []
    real = pf.read_row_groups
    monkeypatch.setattr(pf, "read_row_groups", lambda groups, **kw: read.append(list(groups)) or real(groups, **kw),
                        raising=False)
    assert read_rows(f, 4, 7)["sample_id"].to_pylist() == ["s7", "s4", "s2"]
    assert read_rows(f, 1, 2)["sample_id"].to_pylist() == ["s6"]
    assert read == [[2, 3], [0]]
    # An empty range at a row-group boundary: no rows.
    empty = read_rows(f, 4, 4)
    assert empty.num_rows == 0 and empty.column_names == UNIT_COLUMNS
