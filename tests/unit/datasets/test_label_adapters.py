"""Label-dataset adapters on the REAL published label files (PadChest, CheXpert,
NIH ChestX-ray14, VinDr-CXR, as shipped in the torchxrayvision wheel) and on
documented-schema fixtures (MIMIC-CXR-JPG, PSF-Med: no public file here).

The real files come from ``scripts/fetch-label-files.sh .cache/label-files``;
``VLM_EVAL_LABEL_FILES`` points elsewhere. Each real file is read once per module.
Counts asserted below were observed on those files (torchxrayvision 1.x wheel)
and cross-checked with ``ast.literal_eval`` / plain pandas.
"""
from __future__ import annotations

import ast

import pandas as pd
import pytest

from label_helpers import PADCHEST, cfg, check_canonical, real_file
from vlm_eval.datasets.chexpert import CheXpertAdapter
from vlm_eval.datasets.nih import NIHAdapter
from vlm_eval.datasets.padchest import PadChestAdapter, parse_labels
from vlm_eval.datasets.vindr import VinDrAdapter
from vlm_eval.errors import InputError


@pytest.fixture(scope="module")
def padchest():
    path = real_file(PADCHEST)
    return PadChestAdapter.read(path), path


def test_padchest_full_file_counts_labels_and_errors(padchest):
    raw, path = padchest
    assert len(raw) == 160861
    ss = PadChestAdapter().from_frame(raw, cfg("padchest", path, findings=["cardiomegaly", "Pleural_Effusion",
                                                                          "normal", "pneumothorax"]), path)
    check_canonical(ss, "padchest")
    st = ss.stats
    assert st["rows_read"] == 160861 and st["rows_invalid_labels"] == 103
    assert st["rows_dropped_by_label"]["rows"] == 1312 and st["rows_kept"] == 159446
    # 'pleural effusion' is spelt with and without a leading space in the file: both count
    assert {f: v["yes"] for f, v in st["per_finding"].items()} == {
        "cardiomegaly": 15006, "pleural effusion": 9850, "normal": 50616, "pneumothorax": 533}
    assert len(ss.samples) == 4 * 159446
    assert len(ss.errors) == 103 and set(ss.errors["error_type"]) == {"bad_labels"}
    assert ss.errors["source"].str.match(rf".*{PADCHEST}:\d+$").all()
    first = ss.samples[ss.samples["sample_id"].str.startswith(
        "padchest:20536686640136348236148679891455886468_k6ga29.png:")]  # Labels = ['normal']
    assert dict(zip(first["finding"], first["label"])) == {
        "cardiomegaly": "no", "pleural effusion": "no", "normal": "yes", "pneumothorax": "no"}
    assert set(first["image_uri"]) == {"/data/img/0/20536686640136348236148679891455886468_k6ga29.png"}
    assert set(first["patient_id"]) == {"839860488694292331637988235681460987"}


def test_padchest_vectorised_parse_matches_literal_eval(padchest):
    raw, _ = padchest
    sample = pd.concat([raw["Labels"].sample(20000, random_state=0), raw["Labels"][raw["Labels"].isna()],
                        pd.Series(["['a', \"crohn's\", '  b ', '']", "[]", "['x'", "nonsense"])], ignore_index=True)
    valid, entries = parse_labels(sample)
    by_row = entries.groupby(level=0).agg(sorted).to_dict()
    for i, text in sample.items():
        try:
            ref = ast.literal_eval(text)
            ok = isinstance(ref, list)
        except (ValueError, SyntaxError):
            ok = False
        assert bool(valid[i]) == ok, text
        if ok:
            expected = sorted(x.strip().lower() for x in ref if x.strip())
            assert by_row.get(i, []) == expected, text


def test_padchest_views_methods_and_options(padchest):
    raw, path = padchest
    a = PadChestAdapter()
    front = a.from_frame(raw, cfg("padchest", path, findings=["cardiomegaly"], options={"frontal_only": True}), path)
    assert front.stats["rows_kept"] == 109581
    pa = a.from_frame(raw, cfg("padchest", path, findings=["cardiomegaly"], options={"views": ["pa"]}), path)
    assert pa.stats["rows_kept"] == 90850 and pa.stats["per_finding"]["cardiomegaly"]["yes"] == 8411
    assert pa.stats["rows_invalid_labels"] == 65
    nolat = a.from_frame(raw, cfg("padchest", path, findings=["cardiomegaly"], options={"exclude_lateral": True}),
                         path)
    assert nolat.stats["rows_dropped_lateral"] == 49579
    doc = a.from_frame(raw, cfg("padchest", path, findings=["normal"], options={"label_methods": ["Physician"]}), path)
    assert doc.stats["rows_kept"] == 38971
    with pytest.raises(InputError, match=r"cardiomegalia.*did you mean \['cardiomegaly'\].*Valid findings"):
        a.from_frame(raw, cfg("padchest", path, findings=["cardiomegalia"]), path)
    with pytest.raises(InputError, match="views present"):
        a.from_frame(raw, cfg("padchest", path, options={"views": ["LATERAL"]}), path)


def test_padchest_balanced_sampling_exact_deterministic_and_order_free(padchest):
    raw, path = padchest
    a = PadChestAdapter()
    c = cfg("padchest", path, findings=["cardiomegaly", "pleural effusion", "mass"],
            options={"balanced_per_finding": 125, "seed": 7, "frontal_only": True})
    one = a.from_frame(raw, c, path)
    counts = one.samples.groupby(["finding", "label"]).size().to_dict()
    assert counts[("cardiomegaly", "yes")] == counts[("cardiomegaly", "no")] == 125
    assert counts[("pleural effusion", "yes")] == counts[("pleural effusion", "no")] == 125
    # only 39 frontal images mention a mass: the shortfall is reported, not hidden
    assert counts[("mass", "yes")] == 39 and counts[("mass", "no")] == 125
    assert one.stats["balanced_per_finding"]["shortfall"] == {"mass:yes": 125 - 39}
    assert one.errors.empty and one.stats["error_rows_not_reported"] == 65 + 11 + 3  # frontal rows, Labels empty
    # spread over patients: every patient's first image comes before anyone's second
    full = one.samples[one.samples["finding"] != "mass"]
    assert (full.groupby(["finding", "label"])["patient_id"].nunique() >= 120).all()
    again = a.from_frame(raw.sample(frac=1.0, random_state=3), c, path)  # shuffled file order
    assert sorted(again.samples["sample_id"]) == sorted(one.samples["sample_id"])
    other = a.from_frame(raw, c.model_copy(update={"options": {**c.options, "seed": 8}}), path)
    assert set(other.samples["sample_id"]) != set(one.samples["sample_id"])
    limited = a.from_frame(raw, cfg("padchest", path, findings=["cardiomegaly", "normal"], limit=10), path)
    assert len(limited.samples) == 10 and len(limited.errors) == 103  # a limit never hides a bad row


# ------------------------------------------------------------------ CheXpert


@pytest.fixture(scope="module")
def chexpert():
    path = real_file("chexpert_train.csv.gz")
    return CheXpertAdapter.read(path), path


def test_chexpert_counts_ids_and_default_policy(chexpert):
    raw, path = chexpert
    assert len(raw) == 223414
    ss = CheXpertAdapter().from_frame(raw, cfg("chexpert", path, findings=["pleural effusion", "Cardiomegaly"],
                                               options={"strip_path_prefix": "CheXpert-v1.0-small/"}), path)
    check_canonical(ss, "chexpert")
    st = ss.stats
    assert st["raw_values"]["pleural effusion"] == {"1.0": 86187, "0.0": 35396, "-1.0": 11628, "blank": 90203,
                                                    "invalid": 0}
    # default: uncertain excluded, blank excluded -> only explicit 1.0 / 0.0
    assert st["per_finding"]["pleural effusion"] == {"yes": 86187, "no": 35396, "unknown": 0}
    assert st["labels_excluded_by_policy"]["pleural effusion"] == 11628 + 90203
    assert st["per_finding"]["cardiomegaly"] == {"yes": 27000, "no": 11116, "unknown": 0}
    ids = set(ss.samples["sample_id"])
    # patient00002/study2: Cardiomegaly -1.0 (uncertain), Pleural Effusion -1.0; patient00002/study1: both blank
    assert "chexpert:patient00002/study2/view1_frontal:cardiomegaly" not in ids
    assert "chexpert:patient00002/study1/view1_frontal:pleural_effusion" not in ids
    s = ss.samples.set_index("sample_id")
    any_row = s.iloc[0]
    assert any_row["image_uri"].startswith("/data/img/train/patient") and any_row["split"] == "train"
    assert any_row["study_id"].count("/") == 1 and any_row["patient_id"].startswith("patient")


def test_chexpert_uncertain_and_blank_policies(chexpert):
    raw, path = chexpert
    a = CheXpertAdapter()

    def counts(**opts):
        ss = a.from_frame(raw, cfg("chexpert", path, findings=["pleural effusion"], options=opts), path)
        return ss.stats["per_finding"]["pleural effusion"]

    assert counts(uncertain="positive") == {"yes": 86187 + 11628, "no": 35396, "unknown": 0}
    assert counts(uncertain="negative", blank="negative") == {"yes": 86187, "no": 35396 + 11628 + 90203,
                                                              "unknown": 0}
    assert counts(uncertain="unknown") == {"yes": 86187, "no": 35396, "unknown": 11628}
    with pytest.raises(InputError, match="uncertain must be one of"):
        counts(uncertain="maybe")


def test_chexpert_views_and_invalid_values(chexpert):
    raw, path = chexpert
    a = CheXpertAdapter()
    front = a.from_frame(raw, cfg("chexpert", path, findings=["edema"], options={"frontal_only": True}), path)
    assert front.stats["rows_kept"] == 191027 and front.stats["rows_dropped_by_view"] == 32387
    pa = a.from_frame(raw, cfg("chexpert", path, findings=["edema"], options={"views": ["PA"]}), path)
    assert pa.stats["rows_kept"] == 29420
    bad = raw.head(50).copy()
    bad.loc[3, "Edema"] = "2.0"
    bad.loc[4, "Path"] = "somewhere/else.jpg"
    ss = a.from_frame(bad, cfg("chexpert", path, findings=["edema"]), path)
    assert sorted(ss.errors["error_type"]) == ["bad_label", "bad_path"]
    assert ss.errors["source"].str.endswith((":4", ":5")).all()


# ------------------------------------------------------------------ NIH


@pytest.fixture(scope="module")
def nih():
    path = real_file("Data_Entry_2017_v2020.csv.gz")
    return NIHAdapter.read(path), path


def test_nih_counts_labels_views_and_splits(nih, tmp_path):
    raw, path = nih
    assert len(raw) == 112120
    a = NIHAdapter()
    ss = a.from_frame(raw, cfg("nih", path, findings=["effusion", "No Finding", "hernia"]), path)
    check_canonical(ss, "nih")
    assert {f: v["yes"] for f, v in ss.stats["per_finding"].items()} == {
        "pleural effusion": 13317, "no finding": 60361, "hernia": 227}
    assert ss.samples["patient_id"].nunique() == 30805
    s = ss.samples.set_index("sample_id")
    assert s.loc["nih:00000001_001.png:pleural_effusion", "label"] == "no"  # Cardiomegaly|Emphysema
    assert s.loc["nih:00000001_002.png:pleural_effusion", "label"] == "yes"  # Cardiomegaly|Effusion
    assert s.loc["nih:00000001_002.png:pleural_effusion", "image_uri"] == "/data/img/00000001_002.png"
    ap = a.from_frame(raw, cfg("nih", path, findings=["edema"], options={"views": ["AP"]}), path)
    assert ap.stats["rows_kept"] == 44810
    (tmp_path / "test_list.txt").write_text("00000001_000.png\n00000001_001.png\n")
    sp = a.from_frame(raw, cfg("nih", path, findings=["edema"], options={
        "test_list": str(tmp_path / "test_list.txt"), "splits": ["test"]}), path)
    assert sorted(sp.samples["sample_id"]) == ["nih:00000001_000.png:edema", "nih:00000001_001.png:edema"]
    bad = raw.head(5).copy()
    bad.loc[2, "Finding Labels"] = "Cardiomegaly|Dragon"
    eb = a.from_frame(bad, cfg("nih", path, findings=["cardiomegaly"]), path)
    assert list(eb.errors["error_type"]) == ["bad_labels"] and len(eb.samples) == 4
    bal = a.from_frame(raw, cfg("nih", path, findings=["pneumothorax"], options={"balanced_per_finding": 125}), path)
    assert bal.samples["label"].value_counts().to_dict() == {"yes": 125, "no": 125}


# ------------------------------------------------------------------ VinDr


@pytest.fixture(scope="module")
def vindr():
    path = real_file("vinbigdata-train.csv.gz")
    return VinDrAdapter.read(path), path


def test_vindr_reader_aggregation(vindr):
    raw, path = vindr
    assert len(raw) == 67914
    a = VinDrAdapter()
    maj = a.from_frame(raw, cfg("vindr", path, findings=["cardiomegaly", "nodule/mass", "No finding"]), path)
    check_canonical(maj, "vindr")
    assert maj.stats["images"] == 15000 and maj.stats["readers_per_image"] == {"3": 15000}
    # majority (>= 2 of 3 readers) = yes, 0 readers = no, 1 reader = excluded
    assert maj.stats["per_finding"]["cardiomegaly"] == {"yes": 1817, "no": 12700, "unknown": 0}
    assert maj.stats["labels_excluded_by_policy"]["cardiomegaly"] == 483
    any_ = a.from_frame(raw, cfg("vindr", path, findings=["cardiomegaly"], options={"min_readers": 1}), path)
    assert any_.stats["per_finding"]["cardiomegaly"] == {"yes": 2300, "no": 12700, "unknown": 0}
    neg = a.from_frame(raw, cfg("vindr", path, findings=["cardiomegaly"], options={"ambiguous": "negative"}), path)
    assert neg.stats["per_finding"]["cardiomegaly"] == {"yes": 1817, "no": 12700 + 483, "unknown": 0}
    row = maj.samples.iloc[0]
    assert row["image_uri"] == f"/data/img/train/{row['patient_id']}.dicom" and row["split"] == "train"
    with pytest.raises(InputError, match="no view position"):
        a.from_frame(raw, cfg("vindr", path, options={"views": ["PA"]}), path)


def test_vindr_wide_image_label_format(tmp_path):
    # PhysioNet image_labels_train.csv schema: image_id, rad_ID, one 0/1 column per label
    p = tmp_path / "image_labels_train.csv"
    p.write_text("image_id,rad_ID,Cardiomegaly,Pleural effusion,No finding\n"
                 "img1,R1,1,0,0\nimg1,R2,1,0,0\nimg1,R3,0,1,0\n"
                 "img2,R1,0,0,1\nimg2,R2,0,0,1\nimg2,R3,0,0,1\n")
    ss = VinDrAdapter().load(cfg("vindr", str(p), findings=["cardiomegaly", "pleural effusion"],
                                 options={"image_template": "png/{image_id}.png"}))
    got = dict(zip(ss.samples["sample_id"], ss.samples["label"]))
    assert got == {"vindr:img1:cardiomegaly": "yes", "vindr:img2:cardiomegaly": "no",
                   "vindr:img2:pleural_effusion": "no"}  # img1 effusion: 1 of 3 readers -> excluded
    assert set(ss.samples["image_uri"]) == {"/data/img/png/img1.png", "/data/img/png/img2.png"}
