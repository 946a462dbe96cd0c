"""Every kind of bad input in one job: none stops it, none is dropped silently.

Each bad sample ends in errors/ with a stage and a machine-readable type; each
good-but-awkward input (16-bit PNG, DICOM, a huge JPEG) is scored; input rows =
quadrant rows + error rows.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vlm_eval.config import validate_job
from vlm_eval.run import run_job

pytestmark = pytest.mark.slow
Q = "Is there cardiomegaly?"


def _png(path, arr, mode="L"):
    Image.fromarray(arr, mode).save(path, format="PNG")


def _dicom(path):
    pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    arr = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 7) % 4096
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 64, 64, 1, "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = arr.tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def _build(root):
    img = root / "images"
    img.mkdir()
    rng = np.random.default_rng(1)
    _png(img / "good.png", rng.integers(0, 255, (48, 48), dtype=np.uint8))
    Image.fromarray((rng.integers(0, 4096, (48, 48)) * 16).astype(np.uint16)).save(img / "gray16.png")
    _dicom(img / "scan.dcm")
    big = Image.fromarray(rng.integers(0, 255, (600, 600), dtype=np.uint8), "L").resize((9000, 9000))
    big.save(img / "huge.jpg", format="JPEG", quality=50)
    good_png = (img / "good.png").read_bytes()
    mid = len(good_png) // 2  # full length, scrambled compressed pixel data
    (img / "corrupt.png").write_bytes(good_png[:mid] + bytes(b ^ 0x5A for b in good_png[mid:mid + 64])
                                      + good_png[mid + 64:])
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8), "L").save(buf, format="JPEG")
    (img / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (img / "empty.png").write_bytes(b"")
    paras = json.dumps(["Is the heart enlarged?", "Is cardiomegaly present?"])
    rows = [  # sample_id, image, question, paraphrases, label
        ("ok", "good.png", Q, paras, "yes"),
        ("gray16", "gray16.png", Q, paras, "no"),
        ("dicom", "scan.dcm", Q, paras, "yes"),
        ("huge", "huge.jpg", Q, paras, "no"),
        ("corrupt", "corrupt.png", Q, paras, "yes"),
        ("truncated", "truncated.jpg", Q, paras, "yes"),
        ("empty", "empty.png", Q, paras, "yes"),
        ("missing", "absent.png", Q, paras, "yes"),
        ("badlabel", "good.png", Q, paras, "probably"),
        ("badjson", "good.png", Q, "[not json", "yes"),
        ("dup", "good.png", Q, paras, "yes"),
        ("dup", "gray16.png", Q, paras, "no"),
        ("noquestion", "good.png", "", paras, "yes"),
        ("escape", "../../etc/passwd", Q, paras, "yes"),
    ]
    df = pd.DataFrame(rows, columns=["sample_id", "image", "question", "paraphrases", "label"])
    text = df.to_csv(index=False).encode("utf-8")
    # A row whose question is not UTF-8 (latin-1 bytes) and a row with too many fields.
    text += b'latin1,good.png,Is there cardiomegaly \xe9?,"[]",yes\n'
    text += b"extra,good.png,Q?,[],yes,surplus,fields\n"
    (root / "manifest.csv").write_bytes(text)
    return 16  # input rows


EXPECTED_ERRORS = {
    "corrupt": "corrupt", "truncated": "truncated", "empty": "empty", "missing": "missing",
    "badlabel": "bad_label", "badjson": "bad_paraphrases", "noquestion": "empty_question",
    "escape": "path_escape", "dup": "duplicate_sample_id",
}


def test_every_bad_input_is_accounted_for_and_the_job_finishes(tmp_path, ray_local):
    n_input = _build(tmp_path)
    job = validate_job({
        "name": "bad", "run_id": "bad", "output": str(tmp_path / "runs"),
        "dataset": {"adapter": "manifest", "manifest": str(tmp_path / "manifest.csv"),
                    "images": str(tmp_path / "images"), "max_image_side": 512},
        "prompts": {"paraphrases": 2},
        "models": [{"name": "s", "engine": "scripted"}],
        "resources": {"actors": 1, "gpus_per_actor": 0, "batch_size": 4},
        "failure": {"max_error_fraction": 1.0},
        "cache": {"enabled": False},
    })
    result = run_job(job)
    assert result.status == "succeeded"
    run = tmp_path / "runs" / "bad"
    quads = pd.read_parquet(run / "quadrants")
    errors = pd.read_parquet(run / "errors")
    assert set(quads["sample_id"]) == {"ok", "gray16", "dicom", "huge", "dup"}  # first "dup" row kept
    assert quads["complete"].all()
    by_id = errors.dropna(subset=["sample_id"]).groupby("sample_id")["error_type"].first().to_dict()
    for sid, etype in EXPECTED_ERRORS.items():
        assert by_id.get(sid) == etype, (sid, by_id.get(sid))
    types = set(errors["error_type"])
    assert {"bad_encoding", "malformed_row"} <= types
    assert errors["stage"].notna().all() and errors["message"].notna().all()
    # One of the two "dup" rows is scored, the other is an error: both accounted for.
    assert len(quads) + len(errors) == n_input
    # No question text, no pixels in error messages.
    assert not errors["message"].str.contains("cardiomegaly", case=False).any()
    record = json.loads((run / "run.json").read_text())
    assert record["counts"]["reduce"]["models"]["s"]["errors"] == len(errors)
