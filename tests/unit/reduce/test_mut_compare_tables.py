"""vlm_eval/reduce/compare_tables.py, value by value (issue 16, mutation testing session 5).

Most tests build ``RunData`` by hand (a few quadrant rows each) so every expected count,
label and text is worked out in the comments; ``load_run`` / ``sample_identity`` read
small run folders written with reduce_builders. Migration cases include samples present in
only one run, incomplete samples, complete samples without a quadrant, a model only one run
has, runs of another taxonomy, and three runs (every pair, in order).
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reduce_builders import preds, sample, write_run
from vlm_eval.errors import InputError
from vlm_eval.reduce import reduce_run, stats
from vlm_eval.reduce.compare_tables import (MIGRATION_COLUMNS, RunData, _run_label, by_config, comparable,
                                            config_table, crosstab, load_run, migration, paired_table,
                                            sample_identity, unique_labels, warnings)
from vlm_eval.schema import SAMPLES, conform

SEP = "\x1f"
TAX = {"ablation": "text_only", "reliance": "original"}


def _quad(model, sid, quadrant, *, dataset="ds", complete=True, consistent=None, identity=None, patient=None,
          finding="effusion", label="yes", prediction="yes", margin=1.0, ablated=-1.0):
    if consistent is None:
        consistent = quadrant in ("Ideal", "Dangerous")
    return {"model": model, "dataset": dataset, "sample_id": sid, "patient_id": patient or f"p-{sid}",
            "finding": finding, "label": label, "quadrant": quadrant, "prediction": prediction, "margin": margin,
            "ablated_margin": ablated, "complete": complete, "consistent": consistent,
            "identity": identity or f"{dataset}{SEP}{sid}"}


def _run(label, rows, models=None, taxonomy=TAX, url=None, by_content=True, **summary_cols):
    quad = pd.DataFrame(rows)
    models = models if models is not None else sorted(set(quad["model"]))
    summary = pd.DataFrame({"model": models, "dataset": "ds", **summary_cols})
    return RunData(url or f"/runs/{label}", label, {"run_id": label}, summary, quad, dict(taxonomy), by_content)


# ------------------------------------------------------------------ labels
def test_run_label_prefers_run_id_then_folder_then_url():
    assert _run_label("/x/run-9/", {"run_id": "r1"}) == "r1"
    assert _run_label("/x/run-9/", {}) == "run-9"  # trailing slash stripped before basename
    assert _run_label("/x/run-9", {"run_id": ""}) == "run-9"
    assert _run_label("/", {}) == "/"  # no folder name: the url itself
    assert _run_label("s3://b/k/", {"run_id": 7}) == "7"


def test_unique_labels_keep_distinct_ids_else_folders_else_numbered():
    runs = [_run("x", [], models=[], url="/r/one"), _run("y", [], models=[], url="/r/two/")]
    unique_labels(runs)
    assert [r.label for r in runs] == ["x", "y"]  # distinct run_ids are kept (not the folder names)
    runs = [_run("t", [], models=[], url="/r/one/"), _run("t", [], models=[], url="/r/two")]
    unique_labels(runs)
    assert [r.label for r in runs] == ["one", "two"]
    runs = [_run("t", [], models=[], url=u) for u in ("/a/same", "/b/same/", "/c/other")]
    unique_labels(runs)
    assert [r.label for r in runs] == ["same#1", "same#2", "other#3"]  # numbered from 1, every run


# ------------------------------------------------------------------ comparable, warnings
def test_comparable_means_same_taxonomy():
    a = _run("a", [], models=[])
    other = _run("b", [], models=[], taxonomy={"ablation": "noise", "reliance": "original"})
    same = _run("c", [], models=[])
    assert comparable(a, a) and comparable(a, same) and not comparable(a, other)
    a.taxonomy = None  # a run is always comparable with itself, whatever its taxonomy
    assert comparable(a, a)


def test_warnings_name_taxonomies_runs_without_samples_and_each_clash():
    # a, b, c: b has another taxonomy; c has no samples/. s1 clashes between a and c (other image),
    # s2 between a and b and between b and c; s3 only in a. Pairs in order: (a,b) 1, (a,c) 1, (b,c) 1.
    a = _run("a", [_quad("m", "s1", "Ideal", identity="ds|s1|img1"), _quad("m", "s2", "Ideal", identity="ds|s2|img2"),
                   _quad("k", "s2", "Ideal", identity="ds|s2|img2"), _quad("m", "s3", "Ideal", identity="ds|s3|img3")])
    b = _run("b", [_quad("m", "s1", "Ideal", identity="ds|s1|img1"), _quad("m", "s2", "Ideal", identity="ds|s2|OTHER")],
             taxonomy={"ablation": "noise", "reliance": "any"})
    c = _run("c", [_quad("m", "s1", "Ideal", identity="ds|s1|NEW"), _quad("m", "s2", "Ideal", identity="ds|s2|img2")],
             by_content=False)
    got = warnings([a, b, c])
    assert got == [
        "runs were reduced with different taxonomies (a: ablation=text_only, reliance=original; b: ablation=noise, "
        "reliance=any; c: ablation=text_only, reliance=original): their quadrants mean different things, so they are "
        "not paired or migrated (reduce them with one taxonomy to compare)",
        "c has no samples/: its samples are matched by dataset and sample_id only",
        "1 samples of a and b share dataset and sample_id but not image_uri or question: they are different samples "
        "and are not paired",
        "1 samples of a and c share dataset and sample_id but not image_uri or question: they are different samples "
        "and are not paired",
        "2 samples of b and c share dataset and sample_id but not image_uri or question: they are different samples "
        "and are not paired",
    ]
    # same dataset name in another dataset column is not the same sample; one taxonomy: no warning at all
    d = _run("d", [_quad("m", "s1", "Ideal", dataset="other", identity="x")])
    assert warnings([a, d]) == []
    assert warnings([a]) == []


# ------------------------------------------------------------------ config_table, by_config
def test_config_table_puts_run_url_model_dataset_first_and_redacts_the_url():
    a = _run("a", [], models=["m"], url="s3://user:secret@bucket/runs/a", n=[4], frac_dangerous=[0.25])
    b = _run("b", [], models=["k", "m"], taxonomy={"ablation": "noise", "reliance": "any"}, n=[1, 2],
             frac_dangerous=[0.0, 0.5])
    t = config_table([a, b])
    assert list(t.columns) == ["run", "run_url", "model", "dataset", "n", "frac_dangerous", "taxonomy"]
    assert t["run"].tolist() == ["a", "b", "b"] and t["model"].tolist() == ["m", "k", "m"]
    assert "secret" not in t["run_url"][0] and t["run_url"][0].endswith("bucket/runs/a")
    assert t["taxonomy"].tolist() == ["ablation=text_only, reliance=original"] + ["ablation=noise, reliance=any"] * 2
    assert t["n"].tolist() == [4, 1, 2] and t.index.tolist() == [0, 1, 2]


def test_by_config_lists_each_runs_models_sorted_with_their_rows():
    a = _run("a", [_quad("m", "s1", "Ideal"), _quad("k", "s1", "Worst"), _quad("m", "s2", "Fragile")],
             models=["m", "k", None])
    got = [(r.label, m, q["sample_id"].tolist(), q["quadrant"].tolist()) for r, m, q in by_config([a])]
    assert got == [("a", "k", ["s1"], ["Worst"]), ("a", "m", ["s1", "s2"], ["Ideal", "Fragile"])]


# ------------------------------------------------------------------ paired_table
def test_paired_table_pairs_comparable_configurations_per_shared_dataset_on_identity():
    # a:m and b:m on ds: identities s1..s4 shared (b's s2 is another sample: its identity differs, and b's
    # sample_id "zz" for identity ds|s3 still pairs with a's s3: pairing is on identity, not sample_id).
    # Dangerous a {s1, s3}, b {s3} over the 3 shared complete (s1, s3, s4) -> 2/3 - 1/3 = 1/3.
    # Inconsistent a {s4}, b {}: flips a only 1, b only 0.
    a = _run("a", [_quad("m", "s1", "Dangerous"), _quad("m", "s2", "Ideal"), _quad("m", "s3", "Dangerous"),
                   _quad("m", "s4", "Worst"), _quad("m", "t1", "Ideal", dataset="only-a")])
    b = _run("b", [_quad("m", "s1", "Ideal"), _quad("m", "s2", "Ideal", identity="ds|s2|other"),
                   _quad("m", "zz", "Dangerous", identity=f"ds{SEP}s3"), _quad("m", "s4", "Ideal"),
                   _quad("m", "u1", "Ideal", dataset="only-b")])
    c = _run("c", [_quad("m", "s1", "Ideal")], taxonomy={"ablation": "noise", "reliance": "original"})
    p = paired_table([a, b, c], n_boot=50, seed=3)
    assert p[["run_a", "model_a", "run_b", "model_b", "dataset", "n"]].values.tolist() == [["a", "m", "b", "m", "ds", 3]]
    r = p.iloc[0]
    assert r["diff_dangerous"] == pytest.approx(1 / 3)
    assert (r["frac_dangerous_a"], r["frac_dangerous_b"]) == (pytest.approx(2 / 3), pytest.approx(1 / 3))
    assert (r["flips_a_only"], r["flips_b_only"], r["dangerous_a_only"], r["dangerous_b_only"]) == (1, 0, 1, 0)
    # the bootstrap is seeded by (seed, run_a, model_a, run_b, model_b, dataset) and uses n_boot resamples
    qa = a.quad[a.quad["dataset"] == "ds"].assign(sample_id=lambda f: f["identity"])
    qb = b.quad[b.quad["dataset"] == "ds"].assign(sample_id=lambda f: f["identity"])
    want = stats.paired_comparison(qa, qb, 50, stats.seed_for(3, "a", "m", "b", "m", "ds"))
    assert (r["diff_dangerous_ci_low"], r["diff_dangerous_ci_high"]) == (want["diff_dangerous_ci_low"],
                                                                       want["diff_dangerous_ci_high"])
    other = stats.paired_comparison(qa, qb, 50, stats.seed_for(4, "a", "m", "b", "m", "ds"))
    assert (other["diff_dangerous_ci_low"], other["diff_dangerous_ci_high"]) != (want["diff_dangerous_ci_low"],
                                                                               want["diff_dangerous_ci_high"])


def test_paired_table_two_models_of_one_run_and_no_common_sample():
    a = _run("a", [_quad("k", "s1", "Dangerous"), _quad("m", "s1", "Ideal"), _quad("m", "s2", "Ideal"),
                   _quad("k", "s2", "Ideal", complete=False)])
    p = paired_table([a], n_boot=20, seed=0)
    # k vs m on s1 only (s2 incomplete under k): Dangerous 1/1 - 0/1 = 1
    assert p[["run_a", "model_a", "run_b", "model_b", "n"]].values.tolist() == [["a", "k", "a", "m", 1]]
    assert p["diff_dangerous"].tolist() == [1.0]
    b = _run("b", [_quad("m", "s9", "Ideal")])
    empty = paired_table([b, _run("c", [_quad("m", "s8", "Ideal")])], n_boot=20)
    assert empty.empty and list(empty.columns) == ["run_a", "model_a", "run_b", "model_b", "dataset", "n"]


# ------------------------------------------------------------------ migration, crosstab
def _three_runs():
    # model m in a, b, c (one taxonomy); model k in a and b only.
    # a: s1 Ideal, s2 Fragile, s3 incomplete, s4 complete without a quadrant (one variant), s5 Worst (a only)
    # b: s1 Dangerous, s2 Fragile, s3 Ideal, s4 Ideal, s6 Dangerous (b only, patient pb6, finding nodule)
    a = _run("a", [_quad("m", "s1", "Ideal", margin=1.5), _quad("m", "s2", "Fragile"),
                   _quad("m", "s3", None, complete=False, margin=0.25),
                   _quad("m", "s4", None, margin=2.0), _quad("m", "s5", "Worst"), _quad("k", "s1", "Ideal")],
             models=["m", "k"])
    b = _run("b", [_quad("m", "s1", "Dangerous", margin=-0.5, ablated=0.5, prediction="no"), _quad("m", "s2", "Fragile"),
                   _quad("m", "s3", "Ideal", margin=0.75), _quad("m", "s4", "Ideal", margin=3.0),
                   _quad("m", "s6", "Dangerous", patient="pb6", finding="nodule", label="no"),
                   _quad("k", "s1", "Ideal")], models=["m", "k"])
    c = _run("c", [_quad("m", "s1", "Dangerous")], models=["m"])
    return a, b, c


def test_migration_counts_every_sample_of_either_run_and_lists_the_moved():
    a, b, c = _three_runs()
    counts, moved = migration([a, b, c])
    got = {tuple(r[:5]): r[5] for r in counts.values.tolist()}
    assert list(counts.columns) == ["run_from", "run_to", "model", "quadrant_from", "quadrant_to", "n"]
    assert got == {
        # a -> b, model k: s1 Ideal -> Ideal
        ("a", "b", "k", "Ideal", "Ideal"): 1,
        # a -> b, model m: s1 I->D, s2 F->F, s3 incomplete->I, s4 (no quadrant) incomplete->I,
        # s5 W->absent, s6 absent->D
        ("a", "b", "m", "Ideal", "Dangerous"): 1, ("a", "b", "m", "Fragile", "Fragile"): 1,
        ("a", "b", "m", "incomplete", "Ideal"): 2, ("a", "b", "m", "Worst", "absent"): 1,
        ("a", "b", "m", "absent", "Dangerous"): 1,
        # a -> c (m only): s1 I->D; s2 s3 s4 s5 -> absent
        ("a", "c", "m", "Ideal", "Dangerous"): 1, ("a", "c", "m", "Fragile", "absent"): 1,
        ("a", "c", "m", "incomplete", "absent"): 2, ("a", "c", "m", "Worst", "absent"): 1,
        # b -> c: s1 D->D; s2 s3 s4 s6 -> absent
        ("b", "c", "m", "Dangerous", "Dangerous"): 1, ("b", "c", "m", "Fragile", "absent"): 1,
        ("b", "c", "m", "Ideal", "absent"): 2, ("b", "c", "m", "Dangerous", "absent"): 1,
    }
    # counts add up per pair and model: every sample of either run once
    assert counts.groupby(["run_from", "run_to", "model"])["n"].sum().to_dict() == {
        ("a", "b", "k"): 1, ("a", "b", "m"): 6, ("a", "c", "m"): 5, ("b", "c", "m"): 5}
    # moved: present in both runs, state changed (absent never counts as a move); sorted by pair, model, sample
    assert list(moved.columns) == MIGRATION_COLUMNS and moved.index.tolist() == [0, 1, 2, 3]
    assert moved[["run_from", "run_to", "model", "sample_id", "quadrant_from", "quadrant_to"]].values.tolist() == [
        ["a", "b", "m", "s1", "Ideal", "Dangerous"], ["a", "b", "m", "s3", "incomplete", "Ideal"],
        ["a", "b", "m", "s4", "incomplete", "Ideal"], ["a", "c", "m", "s1", "Ideal", "Dangerous"]]
    first = moved.iloc[0]
    assert (first["prediction_from"], first["prediction_to"]) == ("yes", "no")
    assert (first["margin_from"], first["margin_to"], first["ablated_margin_from"], first["ablated_margin_to"]) == (
        1.5, -0.5, -1.0, 0.5)
    assert (first["dataset"], first["patient_id"], first["finding"], first["label"]) == ("ds", "p-s1", "effusion", "yes")
    assert moved.iloc[1][["margin_from", "margin_to"]].tolist() == [0.25, 0.75]


def test_migration_of_runs_without_a_common_sample_moves_nothing():
    # a2 has only s7 (d1), b2 only s6 (d2): s7 Ideal -> absent, s6 absent -> Dangerous, no moved row
    only_b = _run("b2", [_quad("m", "s6", "Dangerous", patient="pb6", finding="nodule", label="no", dataset="d2")])
    only_a = _run("a2", [_quad("m", "s7", "Ideal", dataset="d1")])
    counts, moved = migration([only_a, only_b])
    assert moved.empty and list(moved.columns) == MIGRATION_COLUMNS
    assert sorted(map(tuple, counts[["quadrant_from", "quadrant_to", "n"]].values.tolist())) == [
        ("Ideal", "absent", 1), ("absent", "Dangerous", 1)]


def test_migration_moved_rows_fill_sample_fields_from_the_to_run():
    # a sample whose from-row lacks patient / finding / label (null) takes them from the to-run's row
    a = _run("a", [dict(_quad("m", "s1", "Ideal"), patient_id=None, finding=None, label=None, dataset=None)])
    b = _run("b", [dict(_quad("m", "s1", "Worst"), patient_id="pb", finding="nodule", label="no", dataset="dsb")])
    _, moved = migration([a, b])
    assert moved[["dataset", "sample_id", "patient_id", "finding", "label"]].values.tolist() == [
        ["dsb", "s1", "pb", "nodule", "no"]]


def test_migration_skips_other_taxonomies_and_models_only_one_run_has():
    a, b, _ = _three_runs()
    b.taxonomy = {"ablation": "noise", "reliance": "original"}
    counts, moved = migration([a, b])
    assert counts.empty and moved.empty
    assert list(counts.columns) == ["run_from", "run_to", "model", "quadrant_from", "quadrant_to", "n"]
    a, b, c = _three_runs()
    counts, _ = migration([a, c])  # k: only a ran it
    assert set(counts["model"]) == {"m"}


def test_crosstab_sums_one_pair_and_model_with_incomplete_and_absent_only_when_seen():
    counts = pd.DataFrame([
        ["a", "b", "m", "Ideal", "Dangerous", 2], ["a", "b", "m", "Ideal", "Dangerous", 3],  # summed: 5
        ["a", "b", "m", "Worst", "Ideal", 1], ["a", "b", "m", "incomplete", "Fragile", 4],
        ["a", "b", "k", "Ideal", "absent", 7],  # other model
        ["a", "c", "m", "Ideal", "absent", 8],  # other run_to
        ["c", "b", "m", "absent", "Ideal", 9],  # other run_from
    ], columns=["run_from", "run_to", "model", "quadrant_from", "quadrant_to", "n"])
    ct = crosstab(counts, "a", "b", "m")
    states = ["Ideal", "Fragile", "Dangerous", "Worst", "incomplete"]  # "incomplete" seen, "absent" not
    want = pd.DataFrame(0, index=pd.Index(states, name="from"), columns=pd.Index(states, name="to"), dtype="int64")
    want.loc["Ideal", "Dangerous"], want.loc["Worst", "Ideal"], want.loc["incomplete", "Fragile"] = 5, 1, 4
    pd.testing.assert_frame_equal(ct, want)
    # absent seen only as a destination still gets its row and column
    ct = crosstab(counts, "a", "b", "k")
    assert list(ct.index) == list(ct.columns) == ["Ideal", "Fragile", "Dangerous", "Worst", "absent"]
    assert ct.loc["Ideal", "absent"] == 7 and int(ct.to_numpy().sum()) == 7
    # no counts at all: the four quadrants, zeros
    ct = crosstab(counts, "x", "y", "m")
    assert list(ct.index) == ["Ideal", "Fragile", "Dangerous", "Worst"] and int(ct.to_numpy().sum()) == 0


# ------------------------------------------------------------------ load_run, sample_identity (run folders)
PLANT = {"Ideal": ([2, 1, 3], [-1, -1, -1]), "Dangerous": ([2, 1, 3], [1, 1, 1])}


def _folder(root, quadrants=("Ideal", "Dangerous", "Ideal"), run_id="rid-1"):
    samples = [sample(f"s{i}", patient=f"p{i}") for i in range(len(quadrants))]
    rows = sum((preds(f"s{i}", *PLANT[q], shared=False) for i, q in enumerate(quadrants)), [])
    run = write_run(root, samples, {"m": rows})
    info = open(os.path.join(run, "run.json")).read().replace('"t-1"', f'"{run_id}"')
    open(os.path.join(run, "run.json"), "w").write(info)
    reduce_run(run, n_boot=20, seed=0)
    return run


def _rewrite_samples(run, samples):
    shutil.rmtree(os.path.join(run, "samples"))
    os.makedirs(os.path.join(run, "samples"))
    pq.write_table(conform(pa.Table.from_pylist(samples), SAMPLES), os.path.join(run, "samples", "part-0.parquet"))


def test_sample_identity_joins_dataset_id_image_and_question(tmp_path):
    run = _folder(tmp_path / "r")
    # s1 repeated (first row wins), a null sample_id dropped, s2 without image and question
    _rewrite_samples(run, [sample("s0"), dict(sample("s1"), image_uri="mem://first.png"),
                           dict(sample("s1"), image_uri="mem://second.png"), dict(sample("x"), sample_id=None),
                           dict(sample("s2"), image_uri=None, question=None)])
    ident = sample_identity(run)
    assert ident.to_dict() == {"s0": f"ds{SEP}s0{SEP}mem://s0.png{SEP}Is there X?",
                               "s1": f"ds{SEP}s1{SEP}mem://first.png{SEP}Is there X?",
                               "s2": f"ds{SEP}s2{SEP}{SEP}"}
    shutil.rmtree(os.path.join(run, "samples"))
    assert sample_identity(run) is None


def test_load_run_reads_top_level_rows_identity_and_taxonomy(tmp_path):
    run = _folder(tmp_path / "r")
    r = load_run(run)
    assert (r.url, r.label, r.info["run_id"], r.taxonomy, r.by_content) == (run, "rid-1", "rid-1", TAX, True)
    # summary.json has one row per finding and one with finding null: only the latter
    assert r.summary["finding"].isna().all() and r.summary["model"].tolist() == ["m"]
    assert r.summary.index.tolist() == [0] and r.summary["n"].tolist() == [3]
    assert r.summary["frac_dangerous"].tolist() == [pytest.approx(1 / 3)]
    ident = dict(zip(r.quad["sample_id"], r.quad["identity"]))
    assert ident == {f"s{i}": f"ds{SEP}s{i}{SEP}mem://s{i}.png{SEP}Is there X?" for i in range(3)}
    # a sample of quadrants/ missing from samples/: dataset + sample_id; no samples/ at all: the same, flagged
    _rewrite_samples(run, [sample("s0"), sample("s1")])
    r = load_run(run)
    assert dict(zip(r.quad["sample_id"], r.quad["identity"]))["s2"] == f"ds{SEP}s2"
    assert dict(zip(r.quad["sample_id"], r.quad["identity"]))["s0"].endswith("Is there X?") and r.by_content
    shutil.rmtree(os.path.join(run, "samples"))
    r = load_run(run)
    assert dict(zip(r.quad["sample_id"], r.quad["identity"])) == {f"s{i}": f"ds{SEP}s{i}" for i in range(3)}
    assert r.by_content is False


def test_load_run_summary_numbers_are_float_even_when_null(tmp_path):
    # no Worst sample: summary.json writes accuracy_worst / entropy_worst as null; they stay float columns
    # (NaN), as in summary.parquet, so comparison.parquet types them as numbers
    r = load_run(_folder(tmp_path / "r"))
    for col in ("accuracy_worst", "entropy_worst", "frac_worst"):
        assert r.summary[col].dtype == np.float64, col
    assert np.isnan(r.summary["accuracy_worst"][0]) and r.summary["frac_worst"][0] == 0.0
    assert r.summary["model"].dtype != np.float64 and r.summary["dataset"].tolist() == ["ds"]


def test_load_run_model_names_stay_strings_and_unreduced_runs_are_refused(tmp_path):
    run = _folder(tmp_path / "r")
    path = os.path.join(run, "summary.json")
    import json

    doc = json.load(open(path))
    for row in doc["rows"]:
        row["model"] = 7
    json.dump(doc, open(path, "w"))
    assert load_run(run).summary["model"].tolist() == ["7"]
    doc["rows"] = []
    json.dump(doc, open(path, "w"))
    with pytest.raises(InputError) as e:
        load_run(run)
    assert str(e.value) == f"{path} has no summary rows: run `vlm-eval reduce {run}` first"
    doc["rows"] = [{"dataset": "ds", "finding": None}]
    json.dump(doc, open(path, "w"))
    with pytest.raises(InputError, match="has no summary rows"):
        load_run(run)
    del doc["rows"]
    json.dump(doc, open(path, "w"))
    with pytest.raises(InputError, match="has no summary rows"):
        load_run(run)
    os.remove(path)
    with pytest.raises(InputError) as e:
        load_run(run)
    assert str(e.value) == f"{run} has no summary ({path} not found): run `vlm-eval reduce {run}` first"


# ------------------------------------------------------------------ edge cases found by the mutation run
def test_labels_strip_only_slashes_from_folder_names():
    # a folder name ending in "X" keeps it (only "/" is stripped before basename)
    assert _run_label("/runs/RUNX/", {}) == "RUNX"
    runs = [_run("t", [], models=[], url="/r/AX/"), _run("t", [], models=[], url="/r/BX")]
    unique_labels(runs)
    assert [r.label for r in runs] == ["AX", "BX"]


def test_sample_identity_names_a_junk_samples_file_and_fills_a_null_dataset(tmp_path):
    run = _folder(tmp_path / "r")
    _rewrite_samples(run, [dict(sample("s0"), dataset=None), sample("s1")])
    ident = sample_identity(run)
    assert ident["s0"] == f"{SEP}s0{SEP}mem://s0.png{SEP}Is there X?"  # null dataset -> "" (not "None" / "nan")
    with open(os.path.join(run, "samples", "junk.parquet"), "wb") as f:
        f.write(b"not parquet")
    with pytest.raises(Exception) as e:
        sample_identity(run)
    assert "1 file(s) under" in str(e.value) and "are not samples files" in str(e.value)
    assert "junk.parquet" in str(e.value)


def _letters(text):
    return [{"I": "Ideal", "F": "Fragile", "D": "Dangerous", "W": "Worst"}[c] for c in text]


# 40 samples, 20 patients (two samples each): enough distinct bootstrap values that the seed key,
# the seed and the number of resamples each move the interval
BIG_A = _letters("WIWIIDFFFDDWWFIFWIFDWFFDWWFWDDFIIDFFDDDD")
BIG_B = _letters("FWIIWFFDWFIWWDWFIIDIDIFIWFWWWFDWFWFIWWID")


def _big_runs():
    a = _run("a", [_quad("m", f"s{i}", q, patient=f"p{i // 2}") for i, q in enumerate(BIG_A)])
    b = _run("b", [_quad("m", f"s{i}", q, patient=f"p{i // 2}") for i, q in enumerate(BIG_B)])
    return a, b


def _ci(p):
    return tuple(p[["diff_dangerous_ci_low", "diff_dangerous_ci_high"]].values[0])


def test_paired_table_seeds_each_comparison_by_its_whole_key():
    a, b = _big_runs()
    qa, qb = (r.quad.assign(sample_id=lambda f: f["identity"]) for r in (a, b))

    def ref(seed):
        r = stats.paired_comparison(qa, qb, 40, seed)
        return r["diff_dangerous_ci_low"], r["diff_dangerous_ci_high"]

    got = _ci(paired_table([a, b], n_boot=40, seed=0))
    assert got == ref(stats.seed_for(0, "a", "m", "b", "m", "ds"))
    # each part of the key matters: a key without a run label, a model, the dataset, or the plain seed
    for other in (stats.seed_for(0, "m", "b", "m", "ds"), stats.seed_for(0, "a", "b", "m", "ds"),
                  stats.seed_for(0, "a", "m", "b", None, "ds"), stats.seed_for(0, "a", "m", "b", "m", None), 0):
        assert ref(other) != got
    assert _ci(paired_table([a, b], n_boot=40, seed=0)) == got  # reproducible (no unseeded draw)


def test_paired_table_defaults_are_1000_resamples_and_seed_0():
    a, b = _big_runs()
    default = _ci(paired_table([a, b]))
    assert default == _ci(paired_table([a, b], 1000, 0))
    assert default != _ci(paired_table([a, b], 1001, 0)) and default != _ci(paired_table([a, b], 1000, 1))


def test_an_incomparable_run_first_does_not_stop_the_others():
    a, b, _ = _three_runs()
    odd = _run("odd", [_quad("m", "s1", "Ideal"), _quad("k", "s1", "Ideal")], taxonomy={"ablation": "noise",
                                                                                        "reliance": "any"})
    p = paired_table([odd, a, b], n_boot=20)
    assert sorted(map(tuple, p[["run_a", "model_a", "run_b", "model_b"]].values.tolist())) == [
        ("a", "k", "a", "m"), ("a", "k", "b", "k"), ("a", "k", "b", "m"), ("a", "m", "b", "k"), ("a", "m", "b", "m"),
        ("b", "k", "b", "m"), ("odd", "k", "odd", "m")]  # a run is comparable with itself
    counts, moved = migration([odd, a, b])
    assert set(map(tuple, counts[["run_from", "run_to"]].values.tolist())) == {("a", "b")}
    assert counts.index.tolist() == list(range(len(counts)))  # one index over all pairs and models
    assert moved["sample_id"].tolist() == ["s1", "s3", "s4"]


def test_load_run_without_run_id_or_samples_and_with_a_null_dataset(tmp_path):
    # run.json without run_id: the folder name labels the run; no extra columns in the summary rows
    run = str(tmp_path / "folder-x")
    samples = [dict(sample("s0", patient="p0"), dataset=None), sample("s1", patient="p1")]
    rows = preds("s0", *PLANT["Ideal"], shared=False) + preds("s1", *PLANT["Dangerous"], shared=False)
    write_run(run, samples, {"m": rows})
    reduce_run(run, n_boot=20, seed=0)
    import json

    info = json.load(open(os.path.join(run, "run.json")))
    del info["run_id"]
    json.dump(info, open(os.path.join(run, "run.json"), "w"))
    r = load_run(run)
    assert r.label == "folder-x"
    keys = [k for k in json.load(open(os.path.join(run, "summary.json")))["rows"][0]]
    assert sorted(r.summary.columns) == sorted(keys) and r.summary.index.tolist() == list(range(len(r.summary)))
    # without samples/: identity = dataset + sample_id, a null dataset as ""
    shutil.rmtree(os.path.join(run, "samples"))
    r = load_run(run)
    assert dict(zip(r.quad["sample_id"], r.quad["identity"])) == {"s0": f"{SEP}s0", "s1": f"ds{SEP}s1"}
