"""The driver's bounded-memory samples table (issue 13) is the straightforward one.

``load_samples_table(...).write_parquet`` (codes per column, narrow sort key, a few row
groups materialised at a time) must write exactly the table of ``load_samples`` ->
Arrow -> ``conform`` -> ``units.sort_image_major`` -> ``pq.write_table``: same rows,
columns, values, order and row groups.
"""
from __future__ import annotations

import gzip
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vlm_eval.config import DatasetConfig, PromptsConfig
from vlm_eval.datasets import _samples_table, load_samples, load_samples_table
from vlm_eval.pipeline.units import sort_image_major
from vlm_eval.schema import SAMPLES, conform

FINDINGS = ["cardiomegaly", "pleural effusion", "pneumonia", "atelectasis", "nodule"]
ROW_GROUP = 5  # small row groups and chunks, so the writer goes through many chunks


def _padchest(path, n: int = 60) -> str:
    rows = ["ImageID,ImageDir,StudyID,PatientID,Projection,MethodLabel,Labels"]
    for i in range(n):
        labels = [FINDINGS[i % 5], " " + FINDINGS[(i * 3) % 5]] if i % 7 else ["normal"]
        text = "[" + ", ".join(f"'{x}'" for x in labels) + "]"
        if i == 11:
            text = "nonsense"  # an error row, not a sample
        rows.append(f'img{(i * 37) % n:04d}.png,{i % 3},st{i},p{i // 3},{"L" if i % 9 == 0 else "PA"},'
                    f'Physician,"{text}"')
    rows.append(rows[5])  # the same image twice: a duplicate_image error
    with gzip.open(path, "wt") as f:
        f.write("\n".join(rows) + "\n")
    return str(path)


def _straightforward(cfg: DatasetConfig, prompts: PromptsConfig, conditions: list[str]) -> tuple[pa.Table, bytes]:
    sset = load_samples(cfg, prompts, conditions=conditions)
    table = sort_image_major(conform(pa.Table.from_pandas(sset.samples, preserve_index=False), SAMPLES))
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=ROW_GROUP)
    return table, buf.getvalue()


def _chunked(cfg: DatasetConfig, prompts: PromptsConfig, conditions: list[str]) -> bytes:
    buf = io.BytesIO()
    load_samples_table(cfg, prompts, conditions=conditions).write_parquet(buf, ROW_GROUP)
    return buf.getvalue()


def _same_file(ref: bytes, got: bytes) -> pa.Table:
    a, b = pq.ParquetFile(io.BytesIO(ref)), pq.ParquetFile(io.BytesIO(got))
    assert b.schema_arrow == SAMPLES
    assert [a.metadata.row_group(i).num_rows for i in range(a.num_row_groups)] == [
        b.metadata.row_group(i).num_rows for i in range(b.num_row_groups)]
    ta, tb = a.read(), b.read()
    assert ta.to_pylist() == tb.to_pylist()
    assert tb.equals(ta)
    return tb


@pytest.mark.parametrize("conditions", [["image", "text_only"], ["image", "text_only", "swap"]])
def test_padchest_chunked_table_equals_straightforward(tmp_path, monkeypatch, conditions):
    monkeypatch.setattr(_samples_table, "CHUNK_ROW_GROUPS", 3)  # 15 rows per chunk
    cfg = DatasetConfig(adapter="padchest", manifest=_padchest(tmp_path / "labels.csv.gz"),
                        images=str(tmp_path / "images"), findings=FINDINGS)
    prompts = PromptsConfig(paraphrases=3)
    table, ref = _straightforward(cfg, prompts, conditions)
    got = _same_file(ref, _chunked(cfg, prompts, conditions))
    assert got.num_rows == 59 * len(FINDINGS) > 10 * ROW_GROUP * 3  # several chunks, every finding
    uris = got["image_uri"].to_pylist()
    assert 1 + sum(a != b for a, b in zip(uris, uris[1:])) == len(set(uris))  # an image's rows together
    assert ("swap" in conditions) == (got["swap_image_uri"].null_count == 0)
    assert len({tuple(p) for p in got["prompts"].to_pylist()}) == len(FINDINGS)


def test_manifest_with_own_paraphrases_blanks_and_duplicates(tmp_path, monkeypatch):
    """The generic adapter (object columns, per-row paraphrases, blank cells, a repeated
    sample_id, a row without question or finding) gives the same table too."""
    monkeypatch.setattr(_samples_table, "CHUNK_ROW_GROUPS", 1)
    rows = ["image,question,paraphrases,label,sample_id,patient_id,study_id,split,finding"]
    for i in range(23):
        paras = '"[""Seen?"", ""Present?""]"' if i % 4 == 0 else ""
        question = "" if i % 5 == 0 else f"Is there finding {i % 3}?"
        finding = "nodule" if i % 5 == 0 else ("" if i % 2 else "mass")
        sid = "dup" if i in (3, 8) else ""
        rows.append(f"im{(i * 7) % 23}.png,{question},{paras},{'yes' if i % 2 else 'no'},{sid},p{i % 4}, ,,{finding}")
    rows.append("im9.png,,,yes,,p1,,,")  # neither question nor finding: an error row
    path = tmp_path / "m.csv"
    path.write_text("\n".join(rows) + "\n")
    cfg = DatasetConfig(adapter="manifest", manifest=str(path), images=str(tmp_path))
    for conditions in (["image", "text_only"], ["image", "swap"]):
        table, ref = _straightforward(cfg, PromptsConfig(paraphrases=2), conditions)
        got = _same_file(ref, _chunked(cfg, PromptsConfig(paraphrases=2), conditions))
        # 24 rows - 6 without a question (the manifest adapter needs one) - 1 repeated sample_id
        assert got.num_rows == 17 and got["study_id"].null_count == 17  # a blank cell is null


def test_empty_selection_writes_the_empty_table(tmp_path):
    cfg = DatasetConfig(adapter="padchest", manifest=_padchest(tmp_path / "labels.csv.gz", n=12),
                        images=str(tmp_path), findings=FINDINGS, options={"label_methods": ["RNN_model"]})
    _, ref = _straightforward(cfg, PromptsConfig(), ["image"])
    assert _same_file(ref, _chunked(cfg, PromptsConfig(), ["image"])).num_rows == 0
