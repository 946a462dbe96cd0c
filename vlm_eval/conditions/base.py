"""What a condition is: how one sample's request looks under it.

A condition names a view of the sample's evidence: ``image`` (the sample's image),
``text_only`` (no image at all), or an image ablation that replaces the image by
another picture of the same size. Each condition says

- ``image_free``: its requests do not depend on the sample's image, so the pipeline
  scores them once per ``prompt_id`` and the reducer joins them back;
- ``sample_input``: the per-sample column it needs besides the image (``swap`` needs
  ``swap_image_uri``), fetched and decoded by the image loader like the image;
- ``image_uuid(ctx)``: the id the engine's encoder/prefix cache and the prediction
  cache key on. It needs only hashes and sizes, never pixels, so a nightly run can
  tell that a request is cached without fetching the image. None = this sample has no
  view under the condition (e.g. swap without a partner);
- ``render(ctx)``: the picture itself (only called once the image was fetched).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class InputImage:
    """A per-sample input image (e.g. the swap partner): its content hash and, once
    fetched, its pixels."""

    sha256: str
    image: Any = None


@dataclass(frozen=True)
class ViewContext:
    """One sample's image as the conditions see it."""

    sample_id: str
    sha256: str
    """sha256 of the image file's bytes."""
    size: tuple[int, int]
    """(width, height) of the decoded image as the engine receives it."""
    image: Any = None
    """The decoded RGB ``PIL.Image`` (None while only keys are computed)."""
    inputs: dict[str, InputImage | None] = field(default_factory=dict)
    """Per-sample inputs by column name (``swap_image_uri`` -> its image); None = failed/absent."""

    @property
    def seed(self) -> int:
        """A per-sample seed, stable across runs and machines."""
        return zlib.crc32(self.sample_id.encode())


@dataclass(frozen=True)
class View:
    image: Any
    image_uuid: str


class Condition:
    """Base class: subclass, set ``name`` and override ``image_uuid``/``render``."""

    name: ClassVar[str]
    image_free: ClassVar[bool] = False
    sample_input: ClassVar[str | None] = None
    size_only: ClassVar[bool] = False
    """The view depends only on the image's size (``blank``): one score per (prompt, size)."""

    def image_uuid(self, ctx: ViewContext) -> str | None:
        raise NotImplementedError

    def render(self, ctx: ViewContext) -> Any:
        raise NotImplementedError

    def view(self, ctx: ViewContext) -> View | None:
        """The request's image and its cache id, or None when the sample has no view."""
        if self.image_free:
            return None
        uuid = self.image_uuid(ctx)
        if uuid is None:
            return None
        return View(self.render(ctx), uuid)

    def __repr__(self) -> str:
        return f"<condition {self.name}>"
