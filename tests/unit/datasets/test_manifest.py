"""The generic manifest adapter and load_samples: formats, bad rows, accounting, swaps."""
from __future__ import annotations

import gzip
import json
import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vlm_eval.config import DatasetConfig, PromptsConfig
from vlm_eval.datasets import ADAPTERS, assign_swaps, describe_adapters, load_samples
from vlm_eval.datasets.manifest import default_sample_id
from vlm_eval.errors import InputError, UserError
from vlm_eval.schema import ERRORS, SAMPLES, conform

HEADER = "image,question,paraphrases,label,sample_id,patient_id,study_id,split,finding\n"
SECRET_Q = "Is there a zebra-shaped opacity?"  # must never appear in error messages


def _write(path, text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    path.write_bytes(data)
    return str(path)


def _load(manifest: str, images: str | None = None, prompts: PromptsConfig | None = None, **kw):
    cfg = DatasetConfig(adapter="manifest", manifest=manifest, images=images, **kw)
    return load_samples(cfg, prompts or PromptsConfig())


def test_registry_names_every_builtin_adapter():
    for name in ("manifest", "synthetic", "padchest", "chexpert", "nih", "mimic_cxr", "vindr", "psf_med"):
        assert name in ADAPTERS and ":" in ADAPTERS[name]
    text = describe_adapters()
    assert "manifest" in text and "options.format" in text and "synthetic" in text


def test_csv_happy_path_labels_paraphrases_and_uris(tmp_path):
    rows = [
        'a.png,Is there a pleural effusion?,,Yes,,p1,s1,test,pleural effusion',
        'sub/b.png,Is there a lung nodule?,"[""Is a nodule seen?"", ""Does the lung show a nodule?""]",NO,,p2,s2,,nodule',
        'c.png,Is there cardiomegaly?,,true,,p3,,,cardiomegaly',
        'd.png,Is there cardiomegaly?,,0,,p4,,,cardiomegaly',
        's3://bucket/e.png,Is there a pneumothorax?,,,id-e,p5,,,',
    ]
    path = _write(tmp_path / "m.csv", HEADER + "\n".join(rows) + "\n")
    out = _load(path, images=str(tmp_path / "imgs"))
    s = out.samples
    assert len(s) == 5 and len(out.errors) == 0
    assert list(s.columns) == SAMPLES.names
    assert s.label.tolist() == ["yes", "no", "yes", "no", None]
    assert s.image_uri[0] == os.path.join(str(tmp_path), "imgs", "a.png")
    assert s.image_uri[1] == os.path.join(str(tmp_path), "imgs", "sub", "b.png")
    assert s.image_uri[4] == "s3://bucket/e.png"  # absolute URLs kept
    assert s.prompts[1] == ["Is there a lung nodule?", "Is a nodule seen?", "Does the lung show a nodule?"]
    assert len(s.prompts[0]) == 6 and s.prompts[0][0] == "Is there a pleural effusion?"
    assert s.question_id[0] == "cxr-binary-v1:pleural_effusion"
    assert s.dataset.unique().tolist() == ["m"]
    assert s.sample_id[4] == "id-e"
    assert s.sample_id[0] == default_sample_id("a.png", "Is there a pleural effusion?")
    # the table converts to the contract's Arrow schema
    conform(pa.Table.from_pandas(s, preserve_index=False), SAMPLES)
    # default ids are stable across reruns
    assert _load(path, images=str(tmp_path / "imgs")).samples.sample_id.tolist() == s.sample_id.tolist()
    assert out.stats["input_rows"] == 5 and out.stats["prompt_sources"] == {"set": 3, "generic": 1, "data_short": 1}


def test_images_default_to_manifest_folder(tmp_path):
    path = _write(tmp_path / "m.csv", "image,question\nx/a.png,Is there a mass?\n")
    assert _load(path).samples.image_uri[0] == os.path.join(str(tmp_path), "x", "a.png")


def test_csv_gz_parquet_and_jsonl_read_the_same(tmp_path):
    csv_text = ('image,question,paraphrases,label\n'
                'a.png,Is there a lung mass?,"[""Is a mass seen?""]",yes\n')
    (tmp_path / "m.csv.gz").write_bytes(gzip.compress(csv_text.encode()))
    table = pa.table({"Image": ["a.png"], "Question": ["Is there a lung mass?"],
                      "paraphrases": [["Is a mass seen?"]], "label": [True]})
    pq.write_table(table, tmp_path / "m.parquet")
    _write(tmp_path / "m.jsonl", json.dumps({"image": "a.png", "question": "Is there a lung mass?",
                                             "paraphrases": ["Is a mass seen?"], "label": 1}) + "\n\n")
    got = []
    for name in ("m.csv.gz", "m.parquet", "m.jsonl"):
        s = _load(str(tmp_path / name), images=str(tmp_path)).samples
        got.append((s.image_uri[0], s.prompts[0], s.label[0], s.sample_id[0]))
    assert got[0] == got[1] == got[2]
    assert got[0][1] == ["Is there a lung mass?", "Is a mass seen?"]


def test_missing_manifest_stops_before_any_work(tmp_path):
    with pytest.raises(InputError) as info:
        _load(str(tmp_path / "nope.csv"))
    assert "manifest not found" in str(info.value) and "nope.csv" in str(info.value)
    assert isinstance(info.value, UserError)


def test_missing_required_columns_named_with_file_and_found_columns(tmp_path):
    path = _write(tmp_path / "m.csv", "img,text,label\na.png,q,yes\n")
    with pytest.raises(InputError) as info:
        _load(path)
    msg = str(info.value)
    assert "['image', 'question']" in msg and "m.csv" in msg and "['img', 'text', 'label']" in msg


def test_header_only_manifest_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no data rows"):
        _load(_write(tmp_path / "m.csv", "image,question\n"))


def test_bad_rows_become_error_rows_with_file_and_line(tmp_path):
    lines = [
        "image,question,paraphrases,label,finding",
        "ok.png,Is there a pleural effusion?,,yes,",          # 2 ok
        'a.png,Is there a mass?,"[not json",yes,',          # 3 bad_paraphrases
        "b.png,   ,,no,",                                    # 4 empty_question
        f"c.png,{SECRET_Q},,maybe,",                         # 5 bad_label
        "d.png,Is there a mass?,,yes,,EXTRA",                # 6 malformed_row
        f"../../etc/passwd,{SECRET_Q},,yes,",                # 7 path_escape
        f"/etc/hosts,{SECRET_Q},,yes,",                      # 8 path_escape (absolute, outside root)
        ",Is there a mass?,,yes,",                           # 9 missing_image
        '"e.png","[1, 2]",["x"],yes,',                       # 10 ok (question is text)
        'f.png,Is there a mass?,"[""""]",,',                 # 11 bad_paraphrases (empty string)
        "g.png,Is there a mass?,,-1,",                       # 12 bad_label (uncertain)
        "",                                                  # blank line: not a row
    ]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    data += "h.png,Is there an \xe9dema?,,yes,\n".encode("latin-1")  # 14 bad_encoding
    path = _write(tmp_path / "m.csv", data)
    out = _load(path, images=str(tmp_path / "root"))
    errs = out.errors.set_index("source")
    expected = {3: "bad_paraphrases", 4: "empty_question", 5: "bad_label", 6: "malformed_row",
                7: "path_escape", 8: "path_escape", 9: "missing_image", 11: "bad_paraphrases",
                12: "bad_label", 14: "bad_encoding"}
    assert {int(k.rsplit(":", 1)[1]): v for k, v in errs.error_type.items()} == expected
    assert (out.errors.stage == "manifest").all() and out.errors.sample_id.notna().all()
    assert len(out.samples) == 2 and out.stats["input_rows"] == 12
    assert out.stats["blank_lines"] == 1
    for msg in out.errors.message:
        assert SECRET_Q not in msg and "dema" not in msg
    assert "uncertain" in errs.loc[f"{path}:12", "message"]
    conform(pa.Table.from_pandas(out.errors, preserve_index=False), ERRORS)


def test_non_utf8_manifest_readable_with_encoding_option(tmp_path):
    path = _write(tmp_path / "m.csv", "image,question\na.png,Is there an \xe9dema?\n".encode("latin-1"))
    out = _load(path, options={"encoding": "latin-1"})
    assert out.samples.question[0] == "Is there an \xe9dema?" and len(out.errors) == 0


def test_jsonl_bad_lines_and_bad_encoding(tmp_path):
    good = json.dumps({"image": "a.png", "question": "Is there a mass?"}).encode()
    data = b"\n".join([good, b"{not json", b"[1, 2]", b'{"image": "b.png", "question": "\xff"}']) + b"\n"
    out = _load(_write(tmp_path / "m.jsonl", data))
    assert len(out.samples) == 1
    assert sorted(out.errors.error_type) == ["bad_encoding", "malformed_row", "malformed_row"]


def test_duplicate_sample_ids_later_ones_are_errors(tmp_path):
    path = _write(tmp_path / "m.csv", "image,question,sample_id\na.png,Is there a mass?,x\n"
                                      "b.png,Is there a mass?,x\nc.png,Is there a mass?,y\n"
                                      "a.png,Is there a mass?,\na.png,Is there a mass?,\n")
    out = _load(path)
    assert out.samples.sample_id.tolist()[:2] == ["x", "y"] and len(out.samples) == 3
    assert out.samples.image_uri[0].endswith("a.png")
    dup = out.errors[out.errors.error_type == "duplicate_sample_id"]
    assert len(dup) == 2 and "x" in dup.sample_id.tolist()
    assert dup.source.str.endswith(":3").any() and dup.source.str.endswith(":6").any()
    assert out.stats["duplicates"] == 2 and out.stats["input_rows"] == 5


def test_limit_keeps_first_rows_and_counts_the_rest(tmp_path):
    body = "".join(f"i{k}.png,Is there a mass?\n" for k in range(10))
    out = _load(_write(tmp_path / "m.csv", "image,question\n" + body), limit=4)
    assert len(out.samples) == 4 and out.samples.image_uri[3].endswith("i3.png")
    assert out.stats["limited_out"] == 6 and out.stats["input_rows"] == 4 and out.stats["source_rows"] == 10


def test_all_rows_bad_gives_empty_samples_and_every_error(tmp_path):
    path = _write(tmp_path / "m.csv", "image,question,label\na.png,Is there a mass?,maybe\n,Is there a mass?,\n")
    out = _load(path)
    assert len(out.samples) == 0 and list(out.samples.columns) == SAMPLES.names
    assert sorted(out.errors.error_type) == ["bad_label", "missing_image"] and out.stats["input_rows"] == 2


def test_file_url_under_local_root_is_checked(tmp_path):
    root = tmp_path / "root"
    path = _write(tmp_path / "m.csv", f"image,question\nfile://{root}/a.png,Is there a mass?\n"
                                      "file:///etc/passwd,Is there a mass?\n")
    out = _load(path, images=str(root))
    assert out.samples.image_uri.tolist() == [str(root / "a.png")]
    assert out.errors.error_type.tolist() == ["path_escape"]


def test_url_images_root_join_and_escape(tmp_path):
    path = _write(tmp_path / "m.csv", "image,question\na/b.png,Is there a mass?\n../x.png,Is there a mass?\n")
    out = _load(path, images="s3://bucket/imgs/")
    assert out.samples.image_uri.tolist() == ["s3://bucket/imgs/a/b.png"]
    assert out.errors.error_type.tolist() == ["path_escape"]


def test_findings_filter_and_unknown_option(tmp_path):
    path = _write(tmp_path / "m.csv", "image,question,finding\na.png,Is there a mass?,Mass\n"
                                      "b.png,Is there a lung nodule?,nodule\n")
    out = _load(path, findings=["mass"])
    assert out.samples.finding.tolist() == ["Mass"] and out.stats["filtered_out_by_finding"] == 1
    with pytest.raises(InputError, match="unknown key"):
        _load(path, options={"colour": "red"})


def test_manifest_paraphrases_take_precedence_and_are_not_topped_up(tmp_path):
    path = _write(tmp_path / "m.csv", 'image,question,paraphrases,finding\n'
                                      'a.png,Is there a pleural effusion?,"[""Is fluid seen?""]",pleural effusion\n')
    s = _load(path, prompts=PromptsConfig(paraphrases=5)).samples
    assert s.prompts[0] == ["Is there a pleural effusion?", "Is fluid seen?"]


def _swap_frame() -> pd.DataFrame:
    rows = []
    for k in range(12):
        rows.append({"sample_id": f"s{k}", "image_uri": f"/i/{k}.png", "patient_id": f"p{k // 2}",
                     "finding": "cardiomegaly" if k < 8 else "nodule", "label": "yes" if k % 2 == 0 else "no"})
    return pd.DataFrame(rows)


def test_swap_is_another_patient_opposite_label_and_seeded():
    df = _swap_frame()
    swaps, tiers = assign_swaps(df, seed=1)
    uri_to_row = df.set_index("image_uri")
    for (_, row), swap in zip(df.iterrows(), swaps):
        other = uri_to_row.loc[swap]
        assert other.patient_id != row.patient_id
        assert other.finding == row.finding and other.label != row.label
    assert tiers == {"opposite_label": 12}
    assert assign_swaps(df, seed=1)[0].tolist() == swaps.tolist()
    assert assign_swaps(df, seed=2)[0].tolist() != swaps.tolist()
    # stable per sample: shuffling rows does not change any sample's swap
    shuffled = df.sample(frac=1, random_state=0)
    again = dict(zip(shuffled.sample_id, assign_swaps(shuffled, seed=1)[0]))
    assert again == dict(zip(df.sample_id, swaps))


def test_swap_falls_back_and_load_samples_fills_column(tmp_path):
    df = pd.DataFrame({"sample_id": ["a", "b"], "image_uri": ["/1.png", "/2.png"], "patient_id": ["p", "q"],
                       "finding": ["mass", "mass"], "label": ["yes", "yes"]})
    swaps, tiers = assign_swaps(df)
    assert swaps.tolist() == ["/2.png", "/1.png"] and tiers == {"same_finding": 2}
    one = df.iloc[:1]
    assert assign_swaps(one)[0].tolist() == [None]
    path = _write(tmp_path / "m.csv", "image,question,patient_id\na.png,Is there a mass?,p1\n"
                                      "b.png,Is there a mass?,p2\n")
    cfg = DatasetConfig(adapter="manifest", manifest=path)
    out = load_samples(cfg, PromptsConfig(), conditions=["image", "swap"])
    assert out.samples.swap_image_uri.tolist() == out.samples.image_uri.tolist()[::-1]
    assert load_samples(cfg, PromptsConfig()).samples.swap_image_uri.isna().all()


def test_unknown_adapter_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="unknown dataset adapter"):
        load_samples(DatasetConfig(adapter="nope"), PromptsConfig())
