"""Synthetic CXR-like images with planted findings (``dataset.adapter: synthetic``).

For the demo and the tests: no download, deterministic, fast (200 images of
128x128 in well under a second). Each image is a grayscale PNG drawn from a seeded
generator: dark background, body, two lung fields with faint markings, spine,
ribs and a heart silhouette. Each sample asks about one finding; when its label is
``yes`` the finding is planted:

- cardiomegaly      the heart silhouette is much wider (cardiothoracic ratio > 0.6)
- pleural effusion  a white opacity with a meniscus fills one lung base
- pneumothorax      a dark rim along one lung's apex and lateral edge, without lung
                    markings, bounded by a thin bright pleural line
- nodule            one small bright round spot in a lung
- mass              one larger bright round opacity in a lung
- consolidation     a patchy white opacity in one lower lung zone

Labels are balanced yes/no per finding (exactly, in pairs); each patient has 1-3
studies (one image each). Image ``i`` depends only on (seed, i, size, findings),
so more samples keep the earlier images identical. Files are only (re)written
when their bytes differ: the same seed gives the same bytes, and a rerun writes
nothing. ``generate_synthetic`` also writes ``manifest.csv`` (the generic manifest
format) beside the images; the adapter reads it back through the manifest reader.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import io
import os
from typing import Any

import numpy as np
from PIL import Image

from vlm_eval import storage
from vlm_eval.config import DatasetConfig
from vlm_eval.datasets.base import SampleSet
from vlm_eval.errors import InputError

SUPPORTED = ("cardiomegaly", "pleural effusion", "pneumothorax", "nodule", "mass", "consolidation")
DEFAULT_FINDINGS = ["cardiomegaly", "pleural effusion", "pneumothorax", "nodule"]
_ALIASES = {"effusion": "pleural effusion", "ptx": "pneumothorax", "lung nodule": "nodule",
            "lung mass": "mass", "enlarged heart": "cardiomegaly"}
MANIFEST_NAME = "manifest.csv"


def _canonical_findings(findings: list[str] | None) -> list[str]:
    from vlm_eval.prompts.sets import normalise_finding

    out = []
    for f in findings or DEFAULT_FINDINGS:
        key = normalise_finding(f)
        key = _ALIASES.get(key, key)
        if key not in SUPPORTED:
            raise InputError(f"synthetic adapter cannot draw finding {f!r}; it draws: {', '.join(SUPPORTED)}")
        if key not in out:
            out.append(key)
    return out


# ---------------------------------------------------------------- drawing


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1] (bilinear upsampling of a coarse random grid)."""
    coarse = (rng.random((cells, cells)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR), np.float32) / 255


def _ellipse(xx, yy, cx, cy, rx, ry) -> np.ndarray:
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1] (y, x); read-only, shared between images."""
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def draw_cxr(seed: int, index: int, size: int, finding: str, present: bool) -> np.ndarray:
    """One CXR-like uint8 image (size x size); ``finding`` planted iff ``present``."""
    rng = np.random.default_rng([seed, index])
    yy, xx = _grid(size)
    img = np.full((size, size), 0.06, np.float32)
    img[_ellipse(xx, yy, 0.5, 0.58, 0.47, 0.55) <= 1] = 0.34  # body / soft tissue
    side = int(rng.integers(0, 2))  # which lung gets a lateralised finding
    lungs = []
    for k, cx in enumerate((0.31, 0.69)):
        rx, ry = 0.15 + rng.uniform(-0.01, 0.01), 0.29 + rng.uniform(-0.015, 0.015)
        cy = 0.46 + rng.uniform(-0.01, 0.01)
        r = _ellipse(xx, yy, cx + (k * 2 - 1) * rng.uniform(0, 0.01), cy, rx, ry)
        lungs.append((r, cx, cy, rx, ry))
    lung_any = (lungs[0][0] <= 1) | (lungs[1][0] <= 1)
    markings = 0.07 * _smooth_noise(rng, size, max(8, size // 8))
    img[lung_any] = 0.13 + markings[lung_any]
    # ribs: curved bands across each lung field
    for k, (r, cx, cy, rx, ry) in enumerate(lungs):
        curve = 0.035 * ((xx - cx) / rx + (0.6 if k == 0 else -0.6)) ** 2
        d = (yy - (cy - ry + 0.03) - curve) / 0.082  # rib j sits at d == j
        frac = np.abs(d - np.round(d))
        band = (frac < 0.011 / 0.082) & (d > -0.5) & (d < 6.5) & (r <= 1.15)
        img[band] += 0.11
    spine = (np.abs(xx - 0.5) < 0.035) & (yy > 0.05)
    img[spine] = 0.55 + 0.06 * np.cos(yy[spine] * size / 3.0)
    # heart: wider when cardiomegaly is planted
    heart_rx = rng.uniform(0.21, 0.24) if finding == "cardiomegaly" and present else rng.uniform(0.12, 0.14)
    heart = _ellipse(xx, yy, 0.53, 0.67, heart_rx, 0.14 + rng.uniform(-0.01, 0.01)) <= 1
    img[heart] = np.maximum(img[heart], 0.52)
    if present and finding != "cardiomegaly":
        r, cx, cy, rx, ry = lungs[side]
        inside = r <= 1
        if finding == "pleural effusion":
            level = cy + ry * rng.uniform(0.35, 0.55)
            lateral = (xx - cx) / rx * (-1 if side == 0 else 1)  # +1 at the lateral edge
            meniscus = yy > level - 0.06 * np.clip(lateral, 0, 1)
            img[inside & meniscus] = 0.62
        elif finding == "pneumothorax":
            ang_ok = (yy < cy + ry * 0.3) & (((xx - cx) * (-1 if side == 0 else 1)) > -rx * 0.3)
            rim = inside & (r > 0.62) & ang_ok
            img[rim] = 0.03  # dark, no markings
            line = (r > 0.56) & (r <= 0.62) & ang_ok
            img[line] = 0.40
        elif finding in ("nodule", "mass"):
            rad = rng.uniform(0.022, 0.032) if finding == "nodule" else rng.uniform(0.06, 0.075)
            px = cx + rng.uniform(-0.4, 0.4) * rx
            py = cy + rng.uniform(-0.45, 0.2) * ry
            spot = _ellipse(xx, yy, px, py, rad, rad) <= 1
            img[spot] = np.maximum(img[spot], 0.72)
        elif finding == "consolidation":
            px, py = cx + rng.uniform(-0.3, 0.3) * rx, cy + rng.uniform(0.1, 0.45) * ry
            blob = _ellipse(xx, yy, px, py, 0.09, 0.08) <= 0.7 + 0.6 * _smooth_noise(rng, size, 10)
            zone = inside & blob
            img[zone] = np.maximum(img[zone], 0.6 + 0.08 * _smooth_noise(rng, size, 12)[zone])
    img += rng.normal(0, 0.015, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="PNG", optimize=False, compress_level=1)
    return buf.getvalue()


def _write_if_changed(url: str, data: bytes) -> bool:
    """Write unless identical bytes are already there; True if written.

    Local files: temp file + rename without fsync (the data can be regenerated);
    other stores go through ``storage.write_bytes_atomic``.
    """
    if not storage.is_url(url):
        try:
            if os.path.getsize(url) == len(data):
                with open(url, "rb") as f:
                    if f.read() == data:
                        return False
        except OSError:
            pass
        os.makedirs(os.path.dirname(url) or ".", exist_ok=True)
        tmp = f"{url}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, url)
        return True
    try:
        if storage.read_bytes(url) == data:
            return False
    except (FileNotFoundError, OSError):
        pass
    storage.write_bytes_atomic(url, data)
    return True


# ---------------------------------------------------------------- plan + generate


def _label_present(seed: int, finding_index: int, j: int) -> bool:
    """Balanced yes/no per finding: each consecutive pair has one yes and one no."""
    bit = hashlib.sha256(f"{seed}:{finding_index}:{j // 2}".encode()).digest()[0] & 1
    return (j % 2) == bit


def _patients(seed: int, n: int) -> list[tuple[str, str]]:
    """(patient_id, study_id) per sample: consecutive samples share a patient, 1-3 studies each."""
    rng = np.random.default_rng([seed, 7])
    out: list[tuple[str, str]] = []
    p = 0
    while len(out) < n:
        for s in range(int(rng.integers(1, 4))):
            out.append((f"synth-p{p:05d}", f"synth-p{p:05d}-s{s}"))
        p += 1
    return out[:n]


def generate_synthetic(out_dir: str, n_samples: int = 200, findings: list[str] | None = None,
                       seed: int = 0, size: int = 128, split: str = "test") -> str:
    """Write ``n_samples`` PNGs and ``manifest.csv`` under ``out_dir``; return the manifest path."""
    return _generate(out_dir, n_samples, findings, seed, size, split)[0]


def _generate(out_dir: str, n_samples: int, findings: list[str] | None, seed: int, size: int,
              split: str) -> tuple[str, int]:
    """(manifest path, number of image files actually written)."""
    from vlm_eval.prompts import load_prompt_set

    if n_samples < 1 or not 32 <= size <= 4096:
        raise InputError("synthetic: n_samples must be >= 1 and size between 32 and 4096 pixels")
    names = _canonical_findings(findings)
    pset = load_prompt_set("cxr-binary-v1")
    people = _patients(seed, n_samples)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["sample_id", "image", "question", "label", "patient_id", "study_id", "split", "finding"])
    written = 0
    for i in range(n_samples):
        fi = i % len(names)
        finding = names[fi]
        present = _label_present(seed, fi, i // len(names))
        fname = f"synth-{i:05d}.png"
        written += _write_if_changed(storage.join(out_dir, fname), _png_bytes(draw_cxr(seed, i, size, finding, present)))
        patient, study = people[i]
        writer.writerow([f"synth-{i:05d}", fname, pset.question_for(finding), "yes" if present else "no",
                         patient, study, split, finding])
    manifest = storage.join(out_dir, MANIFEST_NAME)
    _write_if_changed(manifest, buf.getvalue().encode("utf-8"))
    return manifest, written


def default_images_dir(seed: int, size: int, findings: list[str]) -> str:
    root = storage.cache_dir()
    tag = hashlib.sha256("|".join(findings).encode()).hexdigest()[:8]
    return os.path.join(root, "synthetic", f"seed{seed}-{size}px-{tag}")


class SyntheticAdapter:
    """Generated CXR-like images with planted findings; labels and patients included."""

    name = "synthetic"
    options_doc = {
        "n_samples": "number of samples/images (default 200)",
        "seed": "generator seed (default 0); same seed -> same bytes",
        "size": "image side in pixels (default 128)",
        "split": "value of the split column (default 'test')",
    }

    def load(self, cfg: DatasetConfig) -> SampleSet:
        from vlm_eval.datasets.manifest import read_manifest

        opts: dict[str, Any] = dict(cfg.options)
        unknown = sorted(set(opts) - set(self.options_doc))
        if unknown:
            raise InputError(f"dataset.options: unknown key(s) {unknown} for adapter 'synthetic'; "
                             f"known: {sorted(self.options_doc)}")
        try:
            n, seed, size = int(opts.get("n_samples", 200)), int(opts.get("seed", 0)), int(opts.get("size", 128))
        except (TypeError, ValueError):
            raise InputError("dataset.options: n_samples, seed and size must be integers") from None
        findings = _canonical_findings(cfg.findings)
        out_dir = cfg.images or default_images_dir(seed, size, findings)
        manifest, written = _generate(out_dir, n, findings, seed, size, str(opts.get("split", "test")))
        sset = read_manifest(manifest, out_dir, dataset="synthetic")
        sset.stats["synthetic"] = {"images_dir": out_dir, "n_samples": n, "seed": seed, "size": size,
                                   "findings": findings,
                                   "images_written": written}
        return sset
