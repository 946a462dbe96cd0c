"""The optimised reducer (integer codes, dense samples x variants layout, dedup on codes)
equals a plain per-sample reference written here, on a random run with several models,
duplicates, engine errors, missing rows, text_only rows shared by prompt_id (some
overridden per sample) and an extra ablation."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from reduce_builders import preds_frame
from vlm_eval.config import TaxonomyConfig
from frame_reference import frame_quadrant_table
from vlm_eval.reduce import deduped_predictions, quadrant_table

FINDINGS = ["effusion", "nodule", "edema"]


def random_run(seed: int, n_samples: int = 2500):
    rng = np.random.default_rng(seed)
    sids = [f"s{i:05d}" for i in range(n_samples)]
    n_var = rng.choice([0, 1, 2, 3, 4, 5], size=n_samples, p=[0.01, 0.09, 0.2, 0.3, 0.2, 0.2])
    finding = rng.choice(FINDINGS, size=n_samples)
    samples = pd.DataFrame({
        "sample_id": sids, "dataset": rng.choice(["d1", "d2"], size=n_samples).astype(object),
        "patient_id": [None if rng.random() < 0.2 else f"p{rng.integers(800)}" for _ in sids],
        "finding": finding.astype(object),
        "label": rng.choice(np.array(["yes", "no", None], dtype=object), size=n_samples),
        "n_variants": n_var.astype("int64"),
    })
    for col in ("sample_id", "dataset", "patient_id", "finding", "label"):  # as tables.samples gives them
        samples[col] = samples[col].astype(object).where(samples[col].notna(), None)
    rows = []

    def row(sid, v, cond, pid, err=False, m=None):
        m = float(rng.normal(0, 2)) if m is None else m
        if rng.random() < 0.02:
            m = 0.0  # ties are 'no'
        ly, ln = (None, None) if err else (-math.log1p(math.exp(-m)), -math.log1p(math.exp(m)))
        if not err and rng.random() < 0.005:
            ly = None  # a null log-probability without an error message
        error = (rng.choice(["CUDA out of memory", "timeout"]) if rng.random() < 0.7 else None) if err else None
        rows.append(dict(sample_id=sid, variant=v, condition=cond, prompt_id=pid, logprob_yes=ly, logprob_no=ln,
                         other_mass=float(rng.random()), image_sha256=f"h{rng.integers(5)}", error=error))

    for f in FINDINGS:  # text_only stored once per prompt_id; some missing, some repeated
        for v in range(5):
            if rng.random() < 0.9:
                row(None, None, "text_only", f"{f}-v{v}", err=rng.random() < 0.1)
            if rng.random() < 0.3:
                row(None, None, "text_only", f"{f}-v{v}")
    for sid, n, f in zip(sids, n_var, finding):
        for v in range(n + (1 if rng.random() < 0.02 else 0)):  # sometimes a variant beyond n
            pid = f"{f}-v{v}"
            if rng.random() < 0.97:
                row(sid, v, "image", pid, err=rng.random() < 0.03)
            if rng.random() < 0.05:
                row(sid, v, "text_only", pid, err=rng.random() < 0.2)  # sample-specific override
            if rng.random() < 0.95:
                row(sid, v, "blank", pid, err=rng.random() < 0.03)
    row("orphan", 0, "image", "effusion-v0")
    rows += [dict(r) for r in rng.choice(np.array(rows, dtype=object), size=len(rows) // 20)]  # exact repeats
    for r in list(rng.choice(np.array(rows, dtype=object), size=len(rows) // 20)):  # reruns with other values
        row(r["sample_id"], r["variant"], r["condition"], r["prompt_id"], err=rng.random() < 0.5)
    frames = [preds_frame(rows, model=m).sample(frac=1.0, random_state=int(rng.integers(1000))) for m in ("a", "b", "c")]
    return samples, pd.concat(frames, ignore_index=True)


# ---- reference: the definitions of README "The method, exactly", one sample at a time --

def ref_dedup(preds):
    order = preds.assign(_bad=~(preds["error"].isna() & preds["logprob_yes"].notna() & preds["logprob_no"].notna()))
    key = ["model", "sample_id", "variant", "condition", "prompt_id"]
    by = key + ["_bad", "logprob_yes", "logprob_no", "other_mass", "image_sha256", "error"]
    order = order.sort_values(by, na_position="last", kind="mergesort")
    return order.drop_duplicates(key).drop(columns="_bad").reset_index(drop=True)


def _ok(r):
    return r is not None and r["error"] is None and not pd.isna(r["logprob_yes"]) and not pd.isna(r["logprob_no"])


def _why(r, ablation=None):
    where = f" ({ablation})" if ablation else ""
    if r["error"] is not None:
        return f"engine error{where}: {r['error']}"
    return f"unusable prediction{where}: missing or NaN log-probability"


def _m(r):
    return r["logprob_yes"] - r["logprob_no"] if _ok(r) else float("nan")


def _pred(r):
    return ("yes" if _m(r) > 0 else "no") if _ok(r) else None


def _entropy(m):
    if math.isnan(m):
        return float("nan")
    p = 1.0 / (1.0 + math.exp(-m)) if m > -700 else 0.0
    return -sum(x * math.log2(x) for x in (p, 1.0 - p) if x > 0)


def _reliant(rule, img, abl):
    n = len(img)
    if rule == "original":
        return _pred(img[0]) != _pred(abl[0])
    if rule == "majority":
        return (sum(_pred(r) == "yes" for r in img) * 2 > n) != (sum(_pred(r) == "yes" for r in abl) * 2 > n)
    return any(_pred(a) != _pred(b) for a, b in zip(img, abl))


def ref_quadrants(samples, preds, ablation, rule, extras):
    recs = preds.astype(object).where(preds.notna(), None).to_dict("records")
    img = {(r["sample_id"], r["variant"]): r for r in recs if r["condition"] == "image" and r["sample_id"] is not None}

    def side(cond):
        own = {(r["sample_id"], r["variant"]): r for r in recs
               if r["condition"] == cond and r["sample_id"] is not None and r["variant"] is not None}
        shared = {}
        for r in recs:
            if r["condition"] == cond and r["sample_id"] is None and r["prompt_id"] is not None:
                if r["prompt_id"] not in shared or (_ok(r) and not _ok(shared[r["prompt_id"]])):
                    shared[r["prompt_id"]] = r

        def get(sid, v):
            i = img.get((sid, v))
            return own.get((sid, v)) or (shared.get(i["prompt_id"]) if i is not None else None)
        return get

    get_abl, get_extra = side(ablation), {a: side(a) for a in extras}
    out = []
    for s in samples.to_dict("records"):
        sid, n = s["sample_id"], s["n_variants"]
        im = [img.get((sid, v)) for v in range(n)]
        ab = [get_abl(sid, v) for v in range(n)]
        i0, a0 = (im[0], ab[0]) if n else (None, None)
        complete = n > 0 and all(map(_ok, im)) and all(map(_ok, ab))
        preds_img = [_pred(r) for r in im]
        measured = complete and n > 1  # consistency needs two variants
        flips = sum(p != preds_img[0] for p in preds_img[1:]) if measured else None
        rel = _reliant(rule, im, ab) if complete else None
        m_img, m_abl = _m(i0) if n else float("nan"), _m(a0) if n else float("nan")
        reason = None
        if not complete:
            parts = []
            if n == 0:
                parts = ["no prompt variants in samples/"]
            miss = [str(v) for v in range(n) if im[v] is None]
            errs = [r for r in im if r is not None and not _ok(r)]
            miss_a = [str(v) for v in range(n) if im[v] is not None and ab[v] is None]
            errs_a = [r for r in ab if r is not None and not _ok(r)]
            if miss:
                parts.append(f"missing image predictions for variants [{', '.join(miss)}]")
            if errs:
                parts.append(_why(errs[0]))
            if miss_a:
                parts.append(f"missing {ablation} prediction for variants [{', '.join(miss_a)}]")
            if errs_a:
                parts.append(_why(errs_a[0], ablation))
            reason = "; ".join(parts)
        quad = None
        if measured:
            quad = {(True, True): "Ideal", (False, True): "Fragile", (True, False): "Dangerous", (False, False): "Worst"}[(flips == 0, rel)]
        rec = {
            **{k: s[k] for k in ("dataset", "sample_id", "patient_id", "finding", "label", "n_variants")},
            "prediction": _pred(i0), "margin": m_img, "entropy": _entropy(m_img),
            "correct": (_pred(i0) == s["label"]) if _ok(i0) and not pd.isna(s["label"]) else None,
            "consistent": (flips == 0) if measured else None, "flips": flips,
            "flip_rate": flips / (n - 1) if complete and n > 1 else float("nan"),
            "ablation": ablation, "ablated_prediction": _pred(a0), "ablated_margin": m_abl,
            "image_reliant": rel, "margin_shift": m_img - m_abl,
            "ablation_agreement": sum(_pred(a) == _pred(b) for a, b in zip(im, ab)) / n if complete else float("nan"),
            "quadrant": quad, "complete": complete, "incomplete_reason": reason,
        }
        for a, get in get_extra.items():
            ex = [get(sid, v) for v in range(n)]
            e0 = ex[0] if n else None
            defined = (_ok(i0) and _ok(e0)) if rule == "original" else (n > 0 and all(map(_ok, im)) and all(map(_ok, ex)))
            rec.update({f"{a}_prediction": _pred(e0), f"{a}_margin": _m(e0) if n else float("nan"),
                        f"{a}_reliant": _reliant(rule, im, ex) if defined else None,
                        f"{a}_margin_shift": m_img - (_m(e0) if n else float("nan"))})
        out.append(rec)
    return pd.DataFrame(out)


def assert_same(got: pd.DataFrame, ref: pd.DataFrame):
    assert list(got.columns) == list(ref.columns)
    assert len(got) == len(ref)
    for col in ref.columns:
        g, r = got[col].to_numpy(), ref[col].to_numpy()
        if col in ("margin", "entropy", "flip_rate", "ablated_margin", "margin_shift", "ablation_agreement") or col.endswith("_margin") or col.endswith("_margin_shift"):
            assert got[col].dtype == np.float64, col
            np.testing.assert_allclose(g.astype(float), r.astype(float), rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=col)
        else:
            assert [None if pd.isna(x) else x for x in g] == [None if pd.isna(x) else x for x in r], col


@pytest.mark.parametrize("rule", ["original", "majority", "any"])
def test_quadrant_table_equals_reference(rule):
    samples, raw = random_run(seed={"original": 1, "majority": 2, "any": 3}[rule])
    kept, dropped = deduped_predictions(raw)
    ref_kept = ref_dedup(raw)
    pd.testing.assert_frame_equal(kept, ref_kept)
    assert sum(dropped.values()) == len(raw) - len(ref_kept)
    tax = TaxonomyConfig(ablation="text_only", reliance=rule)
    arrow_str = pd.StringDtype("pyarrow", na_value=np.nan)
    as_read = kept.assign(**{c: kept[c].astype(arrow_str) for c in ("model", "sample_id", "condition", "prompt_id", "error")})
    for model in ("a", "b", "c"):
        mine = kept[kept["model"] == model]
        ref = ref_quadrants(samples, mine, "text_only", rule, ["blank"])
        got = quadrant_table(samples, mine, tax, ["text_only", "blank"])
        assert_same(got, ref)
        pd.testing.assert_frame_equal(got, frame_quadrant_table(samples, mine, tax, ["blank"]))
        pd.testing.assert_frame_equal(got, quadrant_table(samples, as_read[as_read["model"] == model], tax, ["text_only", "blank"]))
