"""report.html is written, self-contained, and escapes text from models and datasets."""
from __future__ import annotations

import math
import os
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vlm_eval import storage
from vlm_eval.reduce import reduce_run
from vlm_eval.report import write_report
from vlm_eval.schema import ERRORS, PREDICTIONS_FILE, SAMPLES, conform

EVIL_FINDING = "<script>alert('finding')</script>"
EVIL_MODEL = "m<script>x"  # a folder-safe name would be rejected by the job; the reducer must still escape


def _lp(m):
    return -math.log1p(math.exp(-m)), -math.log1p(math.exp(m))


def _write(rows, schema, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(conform(pa.Table.from_pylist(rows, schema=schema), schema), path)


@pytest.fixture
def run(tmp_path):
    root = str(tmp_path / "run")
    samples, preds = [], {"good": [], EVIL_MODEL: []}
    for i in range(40):
        sid = f"s{i}"
        samples.append({"sample_id": sid, "dataset": "synthetic<b>", "image_uri": f"x/{sid}.png", "question_id": "q",
                        "question": "Is there an effusion?", "prompts": ["a", "b", "c"], "label": "yes" if i % 2 else "no",
                        "patient_id": f"p{i // 3}", "finding": EVIL_FINDING if i % 4 == 0 else "effusion"})
        for k, model in enumerate(preds):
            img = [((i * 7 + v * 3 + k) % 5) - 2.0 for v in range(3)]
            abl = [((i * 5 + v + k) % 4) - 1.5 for v in range(3)]
            for v in range(3):
                preds[model].append(dict(zip(("logprob_yes", "logprob_no"), _lp(img[v])), sample_id=sid, variant=v,
                                         condition="image", prompt_id=f"{sid}-{v}"))
                preds[model].append(dict(zip(("logprob_yes", "logprob_no"), _lp(abl[v])), sample_id=None, variant=None,
                                         condition="text_only", prompt_id=f"{sid}-{v}"))
    _write(samples, SAMPLES, f"{root}/samples/part-0.parquet")
    for model, rows in preds.items():
        _write(rows, PREDICTIONS_FILE, f"{root}/predictions/model={model}/part-0.parquet")
    _write([dict(sample_id="s99", stage="load_image", error_type="<OSError>", message="m", model=None, source=None)],
           ERRORS, f"{root}/errors/part-0.parquet")
    storage.write_json_atomic({"run_id": "demo-1", "status": "succeeded", "started_at": "2025-01-01T00:00:00Z",
                               "versions": {"vlm_eval": "0.1.0"}, "aws_secret_access_key": "SHOULD-NOT-APPEAR",
                               "job": {"name": "demo", "output": "s3://user:hunter2@bucket/x",
                                       "models": [{"name": "good", "engine": "scripted"}]}}, f"{root}/run.json")
    reduce_run(root, n_boot=100)
    return root


def test_report_is_self_contained_and_escaped(run):
    path = write_report(run)
    assert path.endswith("report.html") and os.path.exists(path)
    text = open(path, encoding="utf-8").read()
    assert text.startswith("<!DOCTYPE html>") and "<svg" in text and "<style>" in text
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    # Scripts: only the explorer's inline data block and code; nothing loaded from anywhere.
    assert text.lower().count("<script") == 2 and '<script type="application/json" id="samples-data">' in text
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, re.I)
    assert "<script>alert(" not in text and "m<script>x" not in text
    assert "&lt;script&gt;alert(&#x27;finding&#x27;)&lt;/script&gt;" in text
    assert "m&lt;script&gt;x" in text and "synthetic&lt;b&gt;" in text
    assert "SHOULD-NOT-APPEAR" not in text and "hunter2" not in text
    assert "demo-1" in text and "Dangerous" in text and "Per finding" in text
    assert text.count("<circle") <= 2 * 5000 + 10


def test_report_needs_a_reduced_run(tmp_path):
    from vlm_eval.errors import InputError

    with pytest.raises(InputError, match="reduce"):
        write_report(str(tmp_path))


def test_report_svg_is_well_formed(run):
    import xml.etree.ElementTree as ET

    text = open(write_report(run), encoding="utf-8").read()
    blocks = re.findall(r"<svg\b.*?</svg>", text, re.S)
    assert len(blocks) >= 4  # bars, two scatters, flip-vs-dangerous
    for block in blocks:
        ET.fromstring(block)  # raises on malformed markup


def _explorer_data(text):
    import json

    block = re.search(r'<script type="application/json" id="samples-data">(.*?)</script>', text, re.S).group(1)
    assert "<" not in block and ">" not in block  # nothing in the data can close the block
    return json.loads(block)


def test_report_opens_with_the_answer_and_ends_with_provenance(run):
    text = open(write_report(run), encoding="utf-8").read()
    order = [text.index(h) for h in ("status: <b>succeeded</b>", "<h2>The answer</h2>", "<h2>Quadrant shares</h2>",
                                     '<h2 id="explorer">Sample explorer</h2>', "<h2>Provenance</h2>")]
    assert order == sorted(order), order
    answer = text[text.index("<h2>The answer</h2>"):text.index("<h2>Quadrant shares</h2>")]
    assert answer.count('class="answer"') == 2  # one card per model (one dataset)
    assert "Dangerous" in answer and "95% CI" in answer and "confidence screening" in answer


def test_report_explorer_embeds_every_sample_without_prompt_text(run):
    import pandas as pd

    from vlm_eval.reduce import tables

    text = open(write_report(run), encoding="utf-8").read()
    data = _explorer_data(text)
    keys = [c["key"] for c in data["columns"]]
    assert {"quadrant", "finding", "label", "prediction", "margin", "ablated_margin", "flips", "entropy"} <= set(keys)
    assert not {"patient_id", "image_uri", "question", "prompts"} & set(keys)
    quad = tables.quadrants(run)
    assert len(data["rows"]) == len(quad) == 80
    got = pd.DataFrame(data["rows"], columns=keys)
    want = quad.assign(quadrant=quad["quadrant"].where(quad["complete"], "incomplete"))
    merged = got.merge(want, on=["model", "sample_id"], suffixes=("", "_t"))
    assert len(merged) == 80 and (merged["quadrant"] == merged["quadrant_t"]).all()
    assert EVIL_FINDING in set(got["finding"]) and EVIL_MODEL in set(got["model"])
    assert "Is there an effusion?" not in text


def test_report_of_a_run_in_flight_says_so(run):
    info = storage.read_json(f"{run}/run.json")
    storage.write_json_atomic(dict(info, status="running"), f"{run}/run.json")
    text = open(write_report(run), encoding="utf-8").read()
    assert "status: <b>running</b>" in text and "still in flight" in text


def test_report_shows_work_and_cache_counts_from_run_json(run):
    info = storage.read_json(f"{run}/run.json")
    info["counts"] = {"models": {"good": {"units": 12, "units_skipped": 2, "requests_scored": 300,
                                          "requests_cached": 100, "images_fetched": 40, "seconds": 9.5,
                                          "engine_cache_stats": {"prefix_cache_hit_rate": 0.625,
                                                                 "vision_encoder_passes": 40}}}}
    storage.write_json_atomic(info, f"{run}/run.json")
    text = open(write_report(run), encoding="utf-8").read()
    work = text[text.index("<h2>Work done</h2>"):text.index("<h2>Provenance</h2>")]
    assert ">25.0%<" in work and ">62.5%<" in work and "prefix cache hit rate" in work and ">40<" in work
