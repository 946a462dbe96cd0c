"""Hostile inputs of issue #11 (items 11-15, 17): each becomes an error row or a clear
refusal (exit 2), never a dead or hung job, never a leaked credential.

Hang tests carry a pytest timeout as a guard (the code they test would otherwise
block forever); no test asserts a duration.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from vlm_eval import storage
from vlm_eval.cli import main
from vlm_eval.datasets.images import ImageLoadError, load_image

SECRET = "hunter2pass"


def _error(uri: str, **kw) -> ImageLoadError:
    with pytest.raises(ImageLoadError) as info:
        load_image(uri, **kw)
    return info.value


def _job(tmp_path, manifest, **extra) -> str:
    lines = [f"name: hostile\noutput: {tmp_path / 'runs'}", f"dataset: {{manifest: '{manifest}'}}",
             "models: [{name: m, engine: scripted}]"] + [f"{k}: {v}" for k, v in extra.items()]
    path = tmp_path / "job.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def no_aws_credentials(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never answers (a stalled host)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    conns: list[socket.socket] = []

    def accept():
        while True:
            try:
                conns.append(srv.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()
    for c in conns:
        c.close()


# ---------------------------------------------------------------- item 11: bad image rows


def test_s3_image_without_credentials_is_a_no_credentials_error_row(no_aws_credentials, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    err = _error("s3://bucket/scan.png")
    assert err.error_type == "no_credentials"
    assert "AWS_ACCESS_KEY_ID" in str(err) and "s3://bucket/scan.png" in str(err)


def test_s3_manifest_without_credentials_exits_2_naming_the_fix(no_aws_credentials, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    assert main(["run", _job(tmp_path, "s3://bucket/manifest.csv")]) == 2
    err = capsys.readouterr().err
    assert "s3://bucket/manifest.csv" in err and "AWS_ACCESS_KEY_ID" in err and "Traceback" not in err


def test_image_path_with_nul_byte_is_a_bad_path_error_row(tmp_path):
    err = _error(str(tmp_path / "a\x00b.png"))
    assert err.error_type == "bad_path" and "NUL" in str(err)


def test_manifest_row_with_nul_byte_path_is_a_row_error(tmp_path):
    from vlm_eval.datasets.manifest import read_manifest

    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "a\u0000b.png", "question": "Q?"}) + "\n"
                                      + json.dumps({"image": "ok.png", "question": "Q?"}) + "\n")
    sset = read_manifest(str(tmp_path / "m.jsonl"), str(tmp_path))
    assert list(sset.errors["error_type"]) == ["bad_path"] and len(sset.samples) == 1


def test_unreachable_image_url_is_unreachable_and_retryable():
    from vlm_eval.datasets.images import RETRYABLE_ERROR_TYPES

    err = _error(f"http://127.0.0.1:{_closed_port()}/scan.png")
    assert err.error_type == "unreachable"  # not "missing": nothing said it does not exist
    assert "unreachable" in RETRYABLE_ERROR_TYPES and "missing" not in RETRYABLE_ERROR_TYPES


def test_missing_image_over_http_stays_missing(tmp_path):
    import http.server

    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        assert _error(f"http://127.0.0.1:{srv.server_port}/absent.png").error_type == "missing"
    finally:
        srv.shutdown()


# ---------------------------------------------------------------- item 12: nothing hangs


@pytest.mark.timeout(60)
def test_hang_fifo_as_image_is_not_a_file(tmp_path):
    fifo = tmp_path / "scan.png"
    os.mkfifo(fifo)
    err = _error(str(fifo))
    assert err.error_type == "not_a_file" and "FIFO" in str(err)
    assert _error(str(tmp_path)).error_type == "not_a_file"  # a directory is no image either


@pytest.mark.timeout(60)
def test_hang_fifo_as_manifest_exits_2_naming_the_path(tmp_path, capsys):
    fifo = tmp_path / "manifest.csv"
    os.mkfifo(fifo)
    assert main(["run", _job(tmp_path, fifo)]) == 2
    err = capsys.readouterr().err
    assert str(fifo) in err and "FIFO" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.parquet"))


@pytest.mark.timeout(60)
def test_hang_fifo_as_label_file_or_job_file_is_refused(tmp_path, capsys):
    from vlm_eval.datasets import _label_common as lc
    from vlm_eval.errors import InputError

    fifo = tmp_path / "labels.csv"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="FIFO"):
        lc.read_csv(str(fifo), ["Path"], "labels CSV")
    assert main(["run", str(fifo)]) == 2
    assert "FIFO" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_hang_http_server_that_never_answers_times_out_as_unreachable(silent_server, monkeypatch):
    monkeypatch.setenv("VLM_EVAL_IO_TIMEOUT_S", "1")
    err = _error(f"http://127.0.0.1:{silent_server}/scan.png")
    assert err.error_type == "unreachable"


@pytest.mark.timeout(300)
def test_hang_s3_endpoint_that_never_answers_times_out_as_unreachable(silent_server, monkeypatch):
    monkeypatch.setenv("VLM_EVAL_IO_TIMEOUT_S", "1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{silent_server}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-key-value")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert _error("s3://bucket/scan.png").error_type == "unreachable"
    assert storage.storage_options("s3://b/k")["config_kwargs"]["read_timeout"] == 1.0


# ---------------------------------------------------------------- item 13: multi-frame DICOM


def _multiframe_dicom(path, frames: int, side: int) -> None:
    """RLE multi-frame DICOM: frame 0 has a bright top half, every other frame is flat.
    Small on disk (the frames compress to almost nothing), large when every frame is decoded."""
    pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate, generate_frames
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.3"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    two = np.full((2, side, side), 1000, dtype=np.uint16)
    two[0, : side // 2] = 4000
    ds.NumberOfFrames = 2
    ds.PixelData = two.tobytes()
    ds.compress(RLELossless, two, encoding_plugin="pydicom")  # encode two frames, repeat the second
    first, other = list(generate_frames(ds.PixelData, number_of_frames=2))
    ds.PixelData = encapsulate([first] + [other] * (frames - 1))
    ds.NumberOfFrames = frames
    ds.save_as(str(path), enforce_file_format=True)


def test_dicom_multiframe_decodes_only_the_first_frame(tmp_path):
    frames, side = 300, 512
    _multiframe_dicom(tmp_path / "cine.dcm", frames, side)
    load_image(str(tmp_path / "cine.dcm"), max_side=64)  # warm-up: imports and codecs are not the image's
    tracemalloc.start()
    try:
        got = load_image(str(tmp_path / "cine.dcm"), max_side=side)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    arr = np.asarray(got.image)
    assert got.source_format == "DICOM" and got.original_size == (side, side)
    assert arr[0, 0, 0] == 255 and arr[-1, 0, 0] == 0  # frame 0: bright top, dark bottom
    all_frames = frames * side * side * 2  # what decoding every frame would hold (150 MiB)
    assert peak < all_frames / 8, f"peak {peak >> 20} MiB: more than one frame's worth was decoded"


def test_dicom_multiframe_budget_is_one_frame(tmp_path):
    _multiframe_dicom(tmp_path / "cine.dcm", 64, 256)
    one_frame = 256 * 256 * 4  # float32 per pixel while windowing
    assert load_image(str(tmp_path / "cine.dcm"), max_decode_bytes=one_frame).width == 256
    assert _error(str(tmp_path / "cine.dcm"), max_decode_bytes=one_frame - 1).error_type == "too_large"


def test_png_read_does_not_allocate_the_file_limit(tmp_path):
    Image.new("L", (32, 32), 7).save(tmp_path / "a.png")
    load_image(str(tmp_path / "a.png"))
    tracemalloc.start()
    try:
        load_image(str(tmp_path / "a.png"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20  # read(1 GiB + 1) used to reserve the whole limit per image


# ---------------------------------------------------------------- item 15: no credential leaks


def test_leak_credentialed_image_url_in_manifest_is_refused_without_echo(tmp_path):
    from vlm_eval.datasets.manifest import read_manifest

    rows = [{"image": f"https://alice:{SECRET}@images.example/x.png", "question": "Q?"},
            {"image": "ok.png", "question": "Q?"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sset = read_manifest(str(tmp_path / "m.jsonl"), str(tmp_path))
    assert list(sset.errors["error_type"]) == ["credentials_in_url"]
    assert "environment" in sset.errors["message"][0]
    assert SECRET not in sset.errors.to_json() and SECRET not in sset.samples.to_json()


def test_leak_credentialed_image_url_in_a_label_dataset_is_refused(tmp_path):
    import pandas as pd

    from vlm_eval.config import DatasetConfig
    from vlm_eval.datasets.psf_med import PsfMedAdapter

    pd.DataFrame({"image_path": [f"https://alice:{SECRET}@h.example/a.jpg", "b.jpg"],
                  "question": ["Is there edema?"] * 2, "answer": ["yes", "no"], "finding": ["Edema"] * 2,
                  }).to_csv(tmp_path / "q.csv", index=False)
    sset = PsfMedAdapter().load(DatasetConfig(adapter="psf_med", manifest=str(tmp_path / "q.csv"),
                                              images=str(tmp_path)))
    assert list(sset.errors["error_type"]) == ["credentials_in_url"] and len(sset.samples) == 1
    assert SECRET not in sset.errors.to_json() and SECRET not in sset.samples.to_json()


def test_leak_credentialed_url_in_job_file_exits_2_without_echo(tmp_path, capsys):
    job = _job(tmp_path, tmp_path / "m.csv", cache=f"{{url: 'http://bob:{SECRET}@cache.example/c'}}")
    assert main(["run", job, "--set", f"dataset.images=https://bob:{SECRET}@h.example/img/"]) == 2
    err = capsys.readouterr().err
    assert "dataset.images" in err and "cache.url" in err and "credentials" in err
    assert SECRET not in err and not (tmp_path / "runs").exists()


def test_leak_endpoint_credentials_never_reach_image_errors(no_aws_credentials, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://carol:{SECRET}@127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "another-secret-value")
    monkeypatch.setenv("VLM_EVAL_IO_TIMEOUT_S", "2")
    err = _error("s3://bucket/scan.png")
    assert err.error_type in ("unreachable", "unreadable", "no_credentials")
    assert SECRET not in str(err) and "another-secret-value" not in str(err)


def test_leak_run_json_strings_are_redacted(tmp_path):
    storage.write_json_atomic({"status": "failed", "error": f"ConnectError: http://dave:{SECRET}@h/x failed",
                               "job": {"options": {"max_new_tokens": 4}}}, str(tmp_path / "run.json"))
    text = (tmp_path / "run.json").read_text()
    assert SECRET not in text and "http://<redacted>@h/x" in text
    assert json.loads(text)["job"]["options"]["max_new_tokens"] == 4  # not a secret


def test_leak_stderr_and_logs_are_redacted(tmp_path, capsys, monkeypatch):
    from vlm_eval.cli import _RedactingFilter

    monkeypatch.setenv("VLM_EVAL_TEST_TOKEN", "tok-" + SECRET)
    record = logging.LogRecord("vlm_eval", logging.WARNING, __file__, 1, "fetch %s failed with %s",
                               (f"https://eve:{SECRET}@h/x.png", "tok-" + SECRET), None)
    _RedactingFilter().filter(record)
    assert SECRET not in record.getMessage() and "https://<redacted>@h/x.png" in record.getMessage()
    assert main(["report", f"https://eve:{SECRET}@127.0.0.1:{_closed_port()}/runs/r1"]) == 2
    assert SECRET not in capsys.readouterr().err


def test_leak_one_redaction_rule_everywhere(monkeypatch):
    from vlm_eval import provenance

    assert provenance.is_secret_name("AWS_SECRET_ACCESS_KEY") and provenance.is_secret_name("HF_TOKEN")
    assert provenance.is_secret_name("apiKey") and not provenance.is_secret_name("max_new_tokens")
    red = provenance.redact({"hf_token": "x", "url": f"s3://k:{SECRET}@b/p?X-Amz-Signature=abc", "n": 3})
    assert red == {"hf_token": "<redacted>", "url": "s3://<redacted>@b/p?X-Amz-Signature=<redacted>", "n": 3}
    for module in ("vlm_eval/pipeline/ray_env.py", "vlm_eval/report/html.py"):  # no private copies
        text = open(os.path.join(os.path.dirname(provenance.__file__), "..", module)).read()
        assert "re.compile(r\"secret" not in text.lower() and "provenance" in text, module


# ---------------------------------------------------------------- #12: one rule for missing values, findings


def test_one_missing_value_rule_and_one_finding_name_rule():
    from vlm_eval.datasets import _label_common as lc
    from vlm_eval.findings import finding_slug, normalise_finding
    from vlm_eval.prompts import sets
    from vlm_eval.values import is_missing

    assert all(is_missing(v) for v in (None, float("nan"), np.float32("nan"), "", "  "))
    assert not any(is_missing(v) for v in (0, 0.0, "no", False))
    assert lc.normalise_name("Pleural-Effusion ") == normalise_finding("pleural_effusion") == "pleural effusion"
    assert lc.slugify("Pleural-Effusion") == finding_slug("pleural effusion") == "pleural_effusion"
    assert sets.normalise_finding("ＰＬＥＵＲＡＬ  effusion") == lc.normalise_name("ＰＬＥＵＲＡＬ  effusion")
