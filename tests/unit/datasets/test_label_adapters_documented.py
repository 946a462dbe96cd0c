"""Label adapters whose public files are not available here (MIMIC-CXR-JPG, PSF-Med:
fixtures written from the documented / inferred schema) and the input errors every
adapter shares."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from label_helpers import cfg, check_canonical
from vlm_eval.config import DatasetConfig
from vlm_eval.datasets.chexpert import CheXpertAdapter
from vlm_eval.datasets.mimic_cxr import MimicCxrAdapter
from vlm_eval.datasets.nih import NIHAdapter
from vlm_eval.datasets.padchest import PadChestAdapter
from vlm_eval.datasets.psf_med import PsfMedAdapter
from vlm_eval.errors import InputError


# ------------------------------------------------------------- MIMIC-CXR-JPG
# No MIMIC-CXR-JPG file is public (PhysioNet credentialed access): the fixture
# below follows the documented schema of mimic-cxr-2.0.0-{chexpert,negbio,
# metadata,split}.csv.gz (MIMIC-CXR-JPG 2.0.0 on PhysioNet), written gzipped (pandas infers it from .gz).

LABELS14 = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
            "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
            "Pneumothorax", "Support Devices"]


@pytest.fixture
def mimic(tmp_path):
    def study(subject, study_id, **vals):
        row = {"subject_id": subject, "study_id": study_id, **{c: None for c in LABELS14}}
        row.update({k.replace("_", " "): v for k, v in vals.items()})
        return row
    chexpert = pd.DataFrame([
        study(10000032, 50414267, Pleural_Effusion=1.0, Cardiomegaly=0.0),
        study(10000032, 53189527, Pleural_Effusion=-1.0, Cardiomegaly=1.0),
        study(10000764, 57375967, Pleural_Effusion=0.0),  # cardiomegaly blank
        study(10000898, 50771383, Pleural_Effusion=1.0, Cardiomegaly=-1.0),  # no image in metadata
    ])
    chexpert.to_csv(tmp_path / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False)
    negbio = chexpert.copy()
    negbio.loc[1, "Pleural Effusion"] = 1.0
    negbio.to_csv(tmp_path / "mimic-cxr-2.0.0-negbio.csv.gz", index=False)
    meta = pd.DataFrame({
        "dicom_id": ["02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962",
                     "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714",
                     "fffabebf-74fd3a1f-673b6b41-96ec0ac9-2ab69818"],
        "subject_id": [10000032, 10000032, 10000032, 10000764, 10000999],
        "study_id": [50414267, 50414267, 53189527, 57375967, 59999999],
        "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
        "ViewPosition": ["PA", "LATERAL", "AP", "AP", "PA"],
        "Rows": 3056, "Columns": 2544, "StudyDate": 21800506, "StudyTime": 213014.531,
    })
    meta.to_csv(tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
    split = meta[["dicom_id", "study_id", "subject_id"]].assign(split=["train", "train", "validate", "test", "test"])
    split.to_csv(tmp_path / "mimic-cxr-2.0.0-split.csv.gz", index=False)
    return tmp_path


def test_mimic_documented_schema(mimic):
    a = MimicCxrAdapter()
    ss = a.load(cfg("mimic_cxr", str(mimic), images="s3://bucket/mimic-cxr-jpg/2.0.0",
                    findings=["pleural effusion", "cardiomegaly"]))
    check_canonical(ss, "mimic_cxr")
    got = {(r.image_uri.rsplit("/", 1)[1][:8], r.finding): r.label for r in ss.samples.itertuples()}
    assert got == {("02aa804e", "pleural effusion"): "yes", ("174413ec", "pleural effusion"): "yes",
                   ("02aa804e", "cardiomegaly"): "no", ("174413ec", "cardiomegaly"): "no",
                   ("2a2277a9", "cardiomegaly"): "yes", ("68b5c4b1", "pleural effusion"): "no"}
    first = ss.samples.iloc[0]
    assert first["image_uri"] == ("s3://bucket/mimic-cxr-jpg/2.0.0/files/p10/p10000032/s50414267/"
                                  "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg")
    assert (first["patient_id"], first["study_id"], first["split"]) == ("10000032", "50414267", "train")
    assert ss.stats["images_without_labels"] == 1 and ss.stats["studies_without_images"] == 1
    front = a.load(cfg("mimic_cxr", str(mimic / "mimic-cxr-2.0.0-chexpert.csv.gz"), findings=["pleural effusion"],
                       options={"frontal_only": True, "uncertain": "positive", "splits": ["train", "validate"]}))
    assert dict(zip(front.samples["image_uri"].str.split("/").str[-1].str.slice(0, 8), front.samples["label"])) == {
        "02aa804e": "yes", "2a2277a9": "yes"}
    neg = a.load(cfg("mimic_cxr", str(mimic), findings=["pleural effusion"], options={"labeler": "negbio"}))
    assert neg.stats["per_finding"]["pleural effusion"] == {"yes": 3, "no": 1, "unknown": 0}
    blank = a.load(cfg("mimic_cxr", str(mimic), findings=["cardiomegaly"], options={"blank": "negative"}))
    assert blank.stats["per_finding"]["cardiomegaly"] == {"yes": 1, "no": 3, "unknown": 0}


def test_mimic_missing_files_and_bad_values(mimic):
    a = MimicCxrAdapter()
    (mimic / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    ss = a.load(cfg("mimic_cxr", str(mimic), findings=["edema"], options={"blank": "unknown"}))
    assert ss.samples["split"].isna().all() and ss.samples["label"].isna().all()
    with pytest.raises(InputError, match="split"):
        a.load(cfg("mimic_cxr", str(mimic), options={"splits": ["test"]}))
    with pytest.raises(InputError, match="metadata file .*not found|not found: .*metadata"):
        a.load(cfg("mimic_cxr", str(mimic), options={"metadata": str(mimic / "nope.csv.gz")}))
    lab = pd.read_csv(mimic / "mimic-cxr-2.0.0-chexpert.csv.gz")
    lab.loc[0, "Edema"] = 3
    lab.to_csv(mimic / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False)
    bad = a.load(cfg("mimic_cxr", str(mimic), findings=["edema"]))
    assert set(bad.errors["error_type"]) == {"bad_label"} and len(bad.errors) == 2  # both images of the study
    assert bad.errors["message"].str.contains("Edema=3").all()


# ------------------------------------------------------------------ PSF-Med
# No public PSF-Med file here: fixtures follow the schema inferred in psf_med.py.


def test_psf_med_wide_csv_and_jsonl(tmp_path):
    rows = pd.DataFrame({
        "image_path": ["files/p10/a.jpg", "files/p10/a.jpg", "files/p11/b.jpg", "files/p12/c.jpg", "x.jpg"],
        "question": ["Is there a pleural effusion?", "Is there cardiomegaly?", "Is there a pleural effusion?",
                     "What is the heart size?", "Is there edema?"],
        "paraphrases": [json.dumps(["Can a pleural effusion be seen?", "Is pleural fluid present?"]),
                        json.dumps(["Is the heart enlarged?"]), "[]", "[]", "not json"],
        "answer": ["Yes", "no", "NO", "enlarged", "yes"],
        "finding": ["pleural effusion", "cardiomegaly", "Pleural_Effusion", None, "edema"],
        "subject_id": ["1", "1", "2", "3", "4"],
    })
    rows.to_csv(tmp_path / "q.csv", index=False)
    ss = PsfMedAdapter().load(cfg("psf_med", str(tmp_path / "q.csv")))
    assert list(ss.samples["label"]) == ["yes", "no", "no"]
    assert ss.samples.loc[0, "paraphrases"] == ["Can a pleural effusion be seen?", "Is pleural fluid present?"]
    assert ss.samples.loc[0, "question"] == "Is there a pleural effusion?"
    assert ss.samples.loc[0, "image_uri"] == "/data/img/files/p10/a.jpg"
    assert ss.samples["sample_id"].is_unique and ss.samples.loc[2, "finding"] == "pleural effusion"
    assert ss.samples.loc[0, "question_id"] == ss.samples.loc[2, "question_id"]  # same question text
    assert ss.stats["rows_skipped_non_binary"] == 1
    assert list(ss.errors["error_type"]) == ["bad_paraphrases"] and ss.errors.loc[0, "source"].endswith(":5")
    strict = PsfMedAdapter().load(cfg("psf_med", str(tmp_path / "q.csv"), options={"binary_only": False}))
    assert sorted(strict.errors["error_type"]) == ["bad_paraphrases", "non_binary_answer"]
    only = PsfMedAdapter().load(cfg("psf_med", str(tmp_path / "q.csv"), findings=["pleural effusion"]))
    assert len(only.samples) == 2

    rows.assign(paraphrases=[["p1", "p2"], ["p3"], [], [], []]).to_json(tmp_path / "q.jsonl", orient="records",
                                                                       lines=True)
    js = PsfMedAdapter().load(cfg("psf_med", str(tmp_path / "q.jsonl")))
    assert len(js.samples) == 4 and js.samples.loc[0, "paraphrases"] == ["p1", "p2"]


def test_psf_med_long_format_and_balance(tmp_path):
    long = pd.DataFrame({
        "image": ["a.jpg"] * 3 + ["b.jpg"] * 2 + ["c.jpg"],
        "question": ["Is there X?"] * 5 + ["Is there X?"],
        "paraphrase": ["X present?", "Do you see X?", "Any X?", "X present?", "Any X?", "X?"],
        "answer": ["yes"] * 3 + ["no"] * 2 + ["no"],
        "finding": "x",
    })
    long.to_csv(tmp_path / "long.csv", index=False)
    ss = PsfMedAdapter().load(cfg("psf_med", str(tmp_path / "long.csv")))
    assert list(ss.samples["paraphrases"]) == [["X present?", "Do you see X?", "Any X?"], ["X present?", "Any X?"],
                                              ["X?"]]
    bal = PsfMedAdapter().load(cfg("psf_med", str(tmp_path / "long.csv"), options={"balanced_per_finding": 1}))
    assert sorted(bal.samples["label"]) == ["no", "yes"]
    (bad := tmp_path / "bad.csv").write_text("image,question\na.jpg,Q?\n")
    with pytest.raises(InputError, match=r"bad\.csv lacks column\(s\) \[.answer"):
        PsfMedAdapter().load(cfg("psf_med", str(bad)))


# ------------------------------------------------------------------ common


def test_common_input_errors(tmp_path):
    with pytest.raises(InputError, match=r"not found: .*nope\.csv"):
        PadChestAdapter().load(cfg("padchest", str(tmp_path / "nope.csv")))
    (p := tmp_path / "pc.csv").write_text("ImageID,Labels\na.png,['normal']\n")
    with pytest.raises(InputError, match=r"pc\.csv lacks column\(s\) \['ImageDir'.*it has \['ImageID', 'Labels'\]"):
        PadChestAdapter().load(cfg("padchest", str(p)))
    with pytest.raises(InputError, match=r"unknown option\(s\) \['view'\].*valid options"):
        NIHAdapter().load(cfg("nih", str(p), options={"view": ["PA"]}))
    with pytest.raises(InputError, match="balanced_per_finding"):
        NIHAdapter().load(cfg("nih", str(p), options={"balanced_per_finding": 0}))
    with pytest.raises(InputError, match="dataset.manifest is not set"):
        CheXpertAdapter().load(DatasetConfig(adapter="chexpert"))
