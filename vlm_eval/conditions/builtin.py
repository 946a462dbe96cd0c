"""The built-in conditions (one small class each; register new ones in ``__init__``)."""
from __future__ import annotations

from typing import Any

from vlm_eval.conditions.base import Condition, ViewContext


class ImageCondition(Condition):
    """The sample's own image."""

    name = "image"

    def image_uuid(self, ctx: ViewContext) -> str | None:
        return ctx.sha256

    def render(self, ctx: ViewContext) -> Any:
        return ctx.image


class TextOnly(Condition):
    """The same prompt with no image at all (scored once per prompt_id)."""

    name = "text_only"
    image_free = True

    def image_uuid(self, ctx: ViewContext) -> str | None:
        return None


class Blank(Condition):
    """A black image of the same size."""

    name = "blank"
    size_only = True

    def image_uuid(self, ctx: ViewContext) -> str | None:
        return f"blank-{ctx.size[0]}x{ctx.size[1]}"

    def render(self, ctx: ViewContext) -> Any:
        from vlm_eval.datasets.images import blank_like

        return blank_like(ctx.image)


class Noise(Condition):
    """Seeded uniform grey noise of the same size (seed = crc32 of the sample id)."""

    name = "noise"

    def image_uuid(self, ctx: ViewContext) -> str | None:
        return f"noise-{ctx.seed}-{ctx.size[0]}x{ctx.size[1]}"

    def render(self, ctx: ViewContext) -> Any:
        from vlm_eval.datasets.images import noise_like

        return noise_like(ctx.image, ctx.seed)


class Swap(Condition):
    """Another patient's image (``swap_image_uri``, assigned when samples are loaded)."""

    name = "swap"
    sample_input = "swap_image_uri"

    def image_uuid(self, ctx: ViewContext) -> str | None:
        partner = ctx.inputs.get(self.sample_input)
        return partner.sha256 if partner is not None else None

    def render(self, ctx: ViewContext) -> Any:
        return ctx.inputs[self.sample_input].image


class ShufflePatches(Condition):
    """The image cut into a GRID x GRID grid of equal patches, permuted (seeded per
    sample): same size and exactly the same intensity histogram, anatomy destroyed.
    A remainder strip (size not divisible by GRID) stays in place."""

    name = "shuffle_patches"
    GRID = 4

    def image_uuid(self, ctx: ViewContext) -> str | None:
        return f"shuffle_patches-{self.GRID}-{ctx.seed}-{ctx.sha256}"

    def permutation(self, seed: int):
        import numpy as np

        n = self.GRID * self.GRID
        perm = np.random.default_rng(seed).permutation(n)
        if (perm == np.arange(n)).all():  # never the identity: that would be the image itself
            perm = np.roll(perm, 1)
        return perm

    def render(self, ctx: ViewContext) -> Any:
        import numpy as np
        from PIL import Image

        px = np.asarray(ctx.image)
        g = self.GRID
        ph, pw = px.shape[0] // g, px.shape[1] // g
        if ph == 0 or pw == 0:  # smaller than the grid: nothing to cut, reverse the rows instead
            return Image.fromarray(np.ascontiguousarray(px[::-1]))
        out = px.copy()
        tiles = [px[r * ph:(r + 1) * ph, c * pw:(c + 1) * pw] for r in range(g) for c in range(g)]
        for dst, src in enumerate(self.permutation(ctx.seed)):
            r, c = divmod(dst, g)
            out[r * ph:(r + 1) * ph, c * pw:(c + 1) * pw] = tiles[src]
        return Image.fromarray(out)
