"""Stage 1 of a model's pipeline: a unit's requests, cache hits, and the images to fetch.

For an image unit the loader reads its rows from ``samples/`` and, per image:

1. asks the store for the image's pre-key (one metadata request: ``prekey``);
2. if the pre-key is known, computes every request key of the image (each condition's
   ``image_uuid`` needs only hashes and sizes) and looks them up in the image's cache
   partition; when all are cached the image is **not fetched**;
3. otherwise fetches and decodes it once (and a swap partner once), then looks up the
   keys by content (an unchanged image under a new URI still hits).

The output row carries the unit's request *specs* (one per prediction row; a hit
carries its scores), the transport bytes of the fetched images, error rows and the new
pre-keys. The scoring actor scores only the misses.
"""
from __future__ import annotations

import io
import json
from typing import Any

from vlm_eval.conditions import InputImage, ViewContext, image_conditions
from vlm_eval.engines.base import ScoreRequest
from vlm_eval.pipeline import cache, prekey
from vlm_eval.pipeline.cache_store import SIZE_PART, TEXT_PART, partition_of


def encode_for_transport(loaded) -> bytes:
    """Bytes the actor decodes to exactly ``loaded.image``.

    An 8-bit grey/RGB PNG or JPEG that was not downscaled decodes to the same RGB
    pixels again, so its original bytes travel as they are (no re-encode, smaller);
    anything that was converted (16-bit, DICOM, RGBA, downscaled) travels as a
    lossless PNG of the converted image.
    """
    from PIL import Image

    if loaded.data and loaded.source_format in ("PNG", "JPEG") and loaded.original_size == loaded.image.size:
        with Image.open(io.BytesIO(loaded.data)) as im:  # header only
            if im.mode in ("L", "RGB"):
                return loaded.data
    buf = io.BytesIO()
    loaded.image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode(data: bytes):
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def spec_request(spec: dict, system: str | None, image=None) -> ScoreRequest:
    return ScoreRequest(prompt=spec["prompt"], system=system, image=image, image_uuid=spec["image_uuid"],
                        metadata={"sample_id": spec["sample_id"], "variant": spec["variant"]})


def _sample_specs(item: dict, conds, info: dict, swap_ok: bool, system: str | None, prompt_ids) -> list[dict]:
    sha, w, h = info[item["image_uri"]]
    partner_uri = item.get("swap_image_uri") if swap_ok else None
    partner = InputImage(info[partner_uri][0]) if partner_uri and partner_uri in info else None
    ctx = ViewContext(item["sample_id"], sha, (w, h), None, {"swap_image_uri": partner})
    out = []
    for cond in conds:
        uuid = cond.image_uuid(ctx)
        if uuid is None:
            continue
        for variant, (prompt, pid) in enumerate(zip(item["prompts"], prompt_ids)):
            out.append({"sample_id": item["sample_id"], "variant": variant, "condition": cond.name,
                        "prompt_id": pid, "image_sha256": sha, "prompt": prompt, "image_uuid": uuid,
                        "uri": item["image_uri"], "swap_uri": partner_uri,
                        "part": SIZE_PART if cond.size_only else partition_of(item["image_uri"]),
                        "hit": None})
    return out


def _lookup(specs: list[dict], cache_url: str | None, mkey: str, system: str | None, image_side: int,
            token: str = "") -> bool:
    """Fill ``hit`` and ``cache_key`` of each spec; True when every spec hit."""
    if not cache_url:
        return False
    all_hit = True
    for s in specs:
        key = cache.request_key(mkey, spec_request(s, system), s["condition"], image_side)
        s["cache_key"] = key.hex()
        got = cache.load_part(cache_url, mkey, s["part"], token).get(key)
        s["hit"] = list(got) if got is not None else None
        all_hit = all_hit and got is not None
    return all_hit


def load_unit(row: dict[str, Any], *, samples_file: str, model: dict, system: str | None,
              ablations: list[str], max_image_side: int, cache_url: str | None,
              cache_token: str = "") -> dict[str, Any]:
    from vlm_eval.datasets.images import ImageLoadError, load_image
    from vlm_eval.pipeline.units import read_rows
    from vlm_eval.prompts import prompt_id

    mkey = cache.model_key(model)
    out = {"unit_id": row["unit_id"], "kind": row["kind"], "image_uris": [], "images": [], "errors": "[]",
           "new_prekeys": "[]", "n_images": 0, "n_fetched": 0, "n_skipped": 0}
    if row["kind"] == "text":
        specs = [{"sample_id": None, "variant": None, "condition": "text_only", "prompt_id": it["prompt_id"],
                  "image_sha256": None, "prompt": it["prompt"], "image_uuid": None, "part": TEXT_PART, "hit": None}
                 for it in json.loads(row["items"])]
        _lookup(specs, cache_url, mkey, system, max_image_side, cache_token)
        return {**out, "specs": json.dumps(specs)}
    items = read_rows(samples_file, int(row["start"]), int(row["end"])).to_pylist()
    conds = image_conditions(ablations)
    wants_swap = any(c.sample_input == "swap_image_uri" for c in conds)
    by_image: dict[str, list[dict]] = {}
    for it in items:
        it["prompt_ids"] = [prompt_id(system, p) for p in it["prompts"]]
        by_image.setdefault(it["image_uri"], []).append(it)
    uris = list(by_image) + sorted({it["swap_image_uri"] for it in items if wants_swap and it["swap_image_uri"]}
                                   - set(by_image))
    info: dict[str, tuple] = {}
    keys: dict[str, bytes | None] = {}
    if cache_url:
        keys = prekey.prekeys_of(uris, max_image_side)
        for uri in uris:
            known = prekey.lookup(cache_url, uri, keys[uri], cache_token) if keys[uri] else None
            if known:
                info[uri] = known
    specs: list[dict] = []
    fetch_images: list[str] = []
    for uri, its in by_image.items():
        if uri in info and all((not wants_swap or not it["swap_image_uri"] or it["swap_image_uri"] in info)
                               for it in its):
            got = [s for it in its for s in _sample_specs(it, conds, info, wants_swap, system, it["prompt_ids"])]
            if _lookup(got, cache_url, mkey, system, max_image_side, cache_token):
                specs += got
                out["n_skipped"] += 1
                continue
        fetch_images.append(uri)
    loaded: dict[str, Any] = {}

    def fetch(uri: str):
        if uri not in loaded:
            try:
                loaded[uri] = load_image(uri, max_side=max_image_side)
            except ImageLoadError as exc:
                loaded[uri] = exc
        return loaded[uri]

    errors, new_keys = [], []
    for uri in fetch_images:
        for it in by_image[uri]:
            got = fetch(uri)
            if isinstance(got, Exception):
                errors.append({"sample_id": it["sample_id"], "stage": "image", "error_type": got.error_type,
                               "message": str(got)})
                continue
            swap_ok = wants_swap
            if wants_swap and it["swap_image_uri"]:
                partner = fetch(it["swap_image_uri"])
                if isinstance(partner, Exception):
                    errors.append({"sample_id": it["sample_id"], "stage": "image",
                                   "error_type": f"swap_{partner.error_type}", "message": str(partner)})
                    swap_ok = False
            for u, im in loaded.items():
                if not isinstance(im, Exception):
                    info[u] = (im.sha256, im.image.width, im.image.height)
            got_specs = _sample_specs(it, conds, info, swap_ok, system, it["prompt_ids"])
            _lookup(got_specs, cache_url, mkey, system, max_image_side, cache_token)
            specs += got_specs
    for uri, im in loaded.items():
        if isinstance(im, Exception):
            continue
        out["image_uris"].append(uri)
        out["images"].append(encode_for_transport(im))
        if keys.get(uri):
            new_keys.append([uri, keys[uri].hex(), im.sha256, im.image.width, im.image.height])
    out.update(specs=json.dumps(specs), errors=json.dumps(errors), new_prekeys=json.dumps(new_keys),
               n_images=len(by_image), n_fetched=len(loaded))
    return out


def view_images(specs: list[dict], images: dict[str, Any], conds_by_name) -> dict[tuple, Any]:
    """(sample_id, condition) -> the picture its requests show, for specs without a hit."""
    views: dict[tuple, Any] = {}
    for s in specs:
        k = (s["sample_id"], s["condition"])
        if s["hit"] is not None or k in views or s["condition"] == "text_only":
            continue
        partner = s.get("swap_uri")
        ctx = ViewContext(s["sample_id"], s["image_sha256"], images[s["uri"]].size, images[s["uri"]],
                          {"swap_image_uri": InputImage("", images[partner]) if partner in images else None})
        views[k] = conds_by_name[s["condition"]].render(ctx)
    return views
