"""Load one image from any fsspec path into an RGB PIL image, or fail with a typed reason.

``load_image(uri)`` returns a `LoadedImage` (RGB image, sha256 of the original
bytes, size, source format) or raises `ImageLoadError` whose ``error_type`` is one of

- ``missing``      the object does not exist
- ``unreachable``  the storage could not be reached (connection refused, timeout):
                   retryable (``RETRYABLE_ERROR_TYPES``): a resume tries it again
- ``no_credentials`` an object store needs credentials the environment does not give
- ``not_a_file``   a local path that is a FIFO, device, socket or directory (refused
                   before any read, so it can never block)
- ``bad_path``     the path itself is unusable (a NUL byte)
- ``unreadable``   the storage refused the read (permissions, other I/O errors)
- ``empty``        zero bytes
- ``corrupt``      not decodable as any image (bad header, CRC error, garbage)
- ``truncated``    the data ends early (never loaded with grey fill:
                   PIL's ``LOAD_TRUNCATED_IMAGES`` is refused when set)
- ``unsupported``  a format we cannot decode here (e.g. DICOM without pydicom,
                   compressed DICOM without its codec)
- ``too_large``    the file or its decoded pixels exceed the memory budget even
                   after draft-mode reduction

Conversions: 16-bit / 32-bit / float grayscale is scaled from its *actual* range to
8 bit (not clipped); palette, RGBA/LA (composited on black), CMYK, YCbCr -> RGB; EXIF
orientation applied. DICOM: modality LUT (rescale slope/intercept), VOI LUT or the
first window (center/width), MONOCHROME1 inverted; multi-frame -> first frame, and only
that frame is decoded (the decode budget is one frame's raster).
Images whose longest side exceeds ``max_side`` are downscaled (JPEG via
``Image.draft`` so the full-size raster is never decoded). No pixel data is logged;
messages name the URI with any credentials stripped (``provenance.redact_text``).
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from vlm_eval.errors import VlmEvalError
from vlm_eval.provenance import redact_text

MAX_FILE_BYTES = 1 << 30  # 1 GiB read limit per image file
MAX_DECODE_BYTES = 1 << 30  # budget for the decoded raster (after JPEG draft reduction)
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3,
                    "RGBA": 4, "RGBa": 4, "CMYK": 4, "I": 8, "F": 8, "I;16": 6, "I;16B": 6, "I;16L": 6,
                    "I;16N": 6}  # high-bit modes: raw + a float32 copy while rescaling
# Failures of the environment, not of the image: the pipeline does not count the image as
# done, so a resume retries it (a corrupt file would fail the same way again; these may not).
RETRYABLE_ERROR_TYPES = frozenset({"unreachable", "no_credentials"})
_CREDENTIAL_ERRORS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                      "NoAuthTokenError", "UnauthorizedSSOTokenError"}
_UNREACHABLE_ERRORS = {"ConnectionError", "TimeoutError", "FSTimeoutError", "EndpointConnectionError",
                       "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError", "ClientConnectionError",
                       "ClientConnectorError", "ServerDisconnectedError", "ServerTimeoutError", "ClientOSError",
                       "ClientPayloadError"}


class ImageLoadError(VlmEvalError):
    """An image could not be loaded; ``error_type`` is the machine-readable reason."""

    def __init__(self, error_type: str, message: str):
        self.error_type = error_type
        super().__init__(redact_text(message))


@dataclass
class LoadedImage:
    image: Image.Image
    """RGB, longest side <= max_side."""
    sha256: str
    """sha256 of the original file bytes (the content key of the prediction cache)."""
    width: int
    """Width of ``image`` (after any downscaling)."""
    height: int
    source_format: str
    """'PNG', 'JPEG', 'DICOM', ... as detected from the content."""
    original_size: tuple[int, int] = (0, 0)
    """(width, height) of the stored image before downscaling."""
    data: bytes = field(default=b"", repr=False)
    """The original file bytes (lets the pipeline ship them instead of re-encoding)."""


def image_bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blank_like(img: Image.Image) -> Image.Image:
    """A black RGB image of the same size (the ``blank`` ablation)."""
    return Image.new("RGB", img.size, (0, 0, 0))


def noise_like(img: Image.Image, seed: int) -> Image.Image:
    """Seeded uniform grayscale noise, same size, as RGB (the ``noise`` ablation)."""
    rng = np.random.default_rng(int(seed) & 0xFFFFFFFFFFFFFFFF)
    gray = rng.integers(0, 256, size=(img.height, img.width), dtype=np.uint8)
    return Image.fromarray(gray, mode="L").convert("RGB")


# ---------------------------------------------------------------- reading


def _chain(exc: BaseException) -> list[BaseException]:
    """exc and its causes/contexts (fsspec's http turns a refused connection into FileNotFoundError)."""
    out: list[BaseException] = []
    while exc is not None and exc not in out and len(out) < 16:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _kind_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for e in _chain(exc) for cls in type(e).__mro__}


def _fileno(f) -> int | None:
    try:
        return f.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return None


def _read(uri: str, max_bytes: int) -> bytes:
    from vlm_eval import storage

    if "\x00" in uri:
        raise ImageLoadError("bad_path", f"{uri!r}: the image path contains a NUL byte; fix the manifest row")
    try:
        with storage.open_input(uri, "image") as f:
            fd = _fileno(f)
            if fd is not None:  # local: the size is known, and read(n) would allocate n bytes up front
                if os.fstat(fd).st_size > max_bytes:
                    raise ImageLoadError("too_large", f"{uri}: file is over the {max_bytes}-byte limit")
                data = f.read()
            else:
                data = f.read(max_bytes + 1)  # no separate stat: one request per object store read
        if len(data) > max_bytes:
            raise ImageLoadError("too_large", f"{uri}: file is over the {max_bytes}-byte limit")
        return data
    except ImageLoadError:
        raise
    except storage.NotRegularFileError as exc:
        raise ImageLoadError("not_a_file", f"{uri}: {exc}") from None
    except IsADirectoryError:
        raise ImageLoadError("not_a_file", f"{uri}: is a directory, not an image file") from None
    except Exception as exc:  # noqa: BLE001 - any failure of one read is this image's error row
        raise _read_error(uri, exc) from None


def _read_error(uri: str, exc: Exception) -> ImageLoadError:
    names = _kind_names(exc)
    what = f"{exc.__class__.__name__}: {exc}"
    if names & _CREDENTIAL_ERRORS:
        return ImageLoadError("no_credentials", f"{uri}: no credentials for this object store ({what}); set "
                              "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role "
                              "(and AWS_ENDPOINT_URL) on every node, then resume the run")
    if names & _UNREACHABLE_ERRORS:
        return ImageLoadError("unreachable", f"{uri}: storage unreachable ({what}); check the host, network "
                              "and VLM_EVAL_IO_TIMEOUT_S, then resume the run (these images are retried)")
    if isinstance(exc, FileNotFoundError):
        return ImageLoadError("missing", f"{uri}: image not found (check dataset.images and the manifest path)")
    if isinstance(exc, ValueError) and "null" in str(exc).lower():
        return ImageLoadError("bad_path", f"{uri!r}: the image path is unusable ({what}); fix the manifest row")
    if isinstance(exc, PermissionError):
        return ImageLoadError("unreadable", f"{uri}: permission denied ({exc.__class__.__name__})")
    return ImageLoadError("unreadable", f"{uri}: cannot read ({what})")


_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"II*\x00", b"MM\x00*", b"BM", b"RIFF")


def _is_dicom(data: bytes, uri: str) -> bool:
    """DICOM by its 'DICM' magic, or by a .dcm name when the bytes are no common image format."""
    if data[128:132] == b"DICM":
        return True
    return uri.lower().endswith((".dcm", ".dicom")) and not data.startswith(_IMAGE_MAGIC)


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Map the array's actual [min, max] linearly to [0, 255] (constant -> 0)."""
    arr = arr.astype(np.float32, copy=False)
    finite = np.isfinite(arr)
    if not finite.all():
        arr = np.where(finite, arr, np.nan)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if not np.isfinite(lo) or hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    out = (arr - lo) * (255.0 / (hi - lo))
    return np.nan_to_num(out, nan=0.0).round().clip(0, 255).astype(np.uint8)


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(img)), mode="L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return img
    return img.convert("RGB")  # 1, L, CMYK, YCbCr, LAB, HSV


def _downscale(img: Image.Image, max_side: int) -> Image.Image:
    if max(img.size) > max_side:
        img = img.copy() if img.readonly else img
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=2.0)
    return img


def _check_budget(uri: str, w: int, h: int, bpp: int, max_decode_bytes: int) -> None:
    need = w * h * bpp
    if need > max_decode_bytes:
        raise ImageLoadError(
            "too_large",
            f"{uri}: {w}x{h} pixels need {need >> 20} MiB to decode, over the {max_decode_bytes >> 20} MiB "
            "budget; downscale the file or raise vlm_eval.datasets.images.MAX_DECODE_BYTES",
        )


def _decode_pil(data: bytes, uri: str, max_side: int, max_decode_bytes: int) -> tuple[Image.Image, str, tuple[int, int]]:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise ImageLoadError(
            "unsupported",
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True in this process: truncated images would load "
            "silently with grey fill. Something set it; unset it (vlm_eval refuses to load images so)",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if data[:3] == b"\xff\xd8\xff":
                # JPEG: open the plugin directly, skipping PIL's pixel-count bomb check, because
                # draft() below decodes at 1/2..1/8 scale; the budget check applies after it.
                from PIL import JpegImagePlugin

                img = JpegImagePlugin.JpegImageFile(io.BytesIO(data))
            else:
                img = Image.open(io.BytesIO(data))
            fmt = img.format or "unknown"
            original = img.size
            if fmt == "JPEG":
                if b"\xff\xd9" not in data[-4096:]:
                    raise ImageLoadError("truncated", f"{uri}: JPEG data ends before its end-of-image marker")
                img.draft(img.mode if img.mode in ("L", "RGB") else "RGB", (max_side, max_side))
            _check_budget(uri, img.size[0], img.size[1], _BYTES_PER_PIXEL.get(img.mode, 4), max_decode_bytes)
            img.load()
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageLoadError("too_large", f"{uri}: refused as a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise ImageLoadError("corrupt", f"{uri}: not a recognisable image file (corrupt or not an image)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        kind = "truncated" if "truncated" in str(exc).lower() or isinstance(exc, EOFError) else "corrupt"
        raise ImageLoadError(kind, f"{uri}: cannot decode image data ({exc.__class__.__name__}: {exc})") from None
    if fmt in ("JPEG", "MPO", "TIFF", "WEBP") and img.getexif().get(0x0112, 1) != 1:
        img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # high bit depth: scale the full range first, then shrink the 8-bit image
        img = _to_rgb(img)
    img = _downscale(img, max_side)
    return _to_rgb(img), fmt, original


def _decode_dicom(data: bytes, uri: str, max_side: int, max_decode_bytes: int) -> tuple[Image.Image, str, tuple[int, int]]:
    try:
        import pydicom
    except ImportError:
        raise ImageLoadError(
            "unsupported", f"{uri}: DICOM needs pydicom: pip install pydicom (or, in a checkout of this project: pip install '.[dicom]')"
        ) from None
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds
        raise ImageLoadError("corrupt", f"{uri}: not a readable DICOM file ({exc.__class__.__name__})") from None
    if "PixelData" not in ds:
        raise ImageLoadError("corrupt", f"{uri}: DICOM file has no pixel data")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    spp = int(ds.get("SamplesPerPixel", 1))
    try:
        frames = max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        frames = 1
    _check_budget(uri, cols, rows, 4 * spp, max_decode_bytes)  # one frame: only the first is decoded
    try:
        arr = _first_frame(ds, frames, uri, cols, rows, spp, max_decode_bytes)
    except ImageLoadError:
        raise
    except Exception as exc:  # noqa: BLE001
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        msg = str(exc)
        if isinstance(exc, (NotImplementedError, RuntimeError)) or "handler" in msg.lower() or "plugin" in msg.lower():
            raise ImageLoadError(
                "unsupported",
                f"{uri}: DICOM transfer syntax {ts} needs a codec: pip install pylibjpeg pylibjpeg-libjpeg "
                "pylibjpeg-openjpeg (or python-gdcm)",
            ) from None
        kind = "truncated" if "length" in msg.lower() or "size" in msg.lower() else "corrupt"
        raise ImageLoadError(kind, f"{uri}: cannot decode DICOM pixels ({exc.__class__.__name__})") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # colour (pydicom converts YBR to RGB)
        rgb = arr[..., :3]
        rgb = rgb if rgb.dtype == np.uint8 else _scale_to_uint8(rgb)
        img = Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
    else:
        img = Image.fromarray(_dicom_gray(ds, arr, photometric), mode="L")
    original = img.size
    return _to_rgb(_downscale(img, max_side)), "DICOM", original


def _first_frame(ds, frames: int, uri: str, cols: int, rows: int, spp: int, max_decode_bytes: int) -> np.ndarray:
    """Decode frame 0 only (pydicom >= 3 decodes one frame by index: a 25 MB multi-frame
    file must not become gigabytes of frames we never look at)."""
    try:
        from pydicom.pixels import pixel_array
    except ImportError:  # pragma: no cover - pydicom 2.x decodes every frame: budget them all
        _check_budget(uri, cols, rows * frames, 4 * spp, max_decode_bytes)
        arr = ds.pixel_array
        return arr[0] if frames > 1 else arr
    return pixel_array(ds, index=0) if frames > 1 else pixel_array(ds)


def _first_number(value) -> float:
    """WindowCenter/WindowWidth may be one value or several (use the first)."""
    if isinstance(value, (str, bytes, int, float)):
        return float(value)
    return float(list(value)[0])


def _dicom_gray(ds, arr: np.ndarray, photometric: str) -> np.ndarray:
    """Modality LUT, then VOI LUT / window, then 8 bit; MONOCHROME1 inverted."""
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut  # pydicom >= 3
    except ImportError:  # pragma: no cover - pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut
    values = apply_modality_lut(arr, ds).astype(np.float32)
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if "VOILUTSequence" in ds:
        out = _scale_to_uint8(apply_voi_lut(values, ds))
    elif center is not None and width is not None:
        c, w = _first_number(center), _first_number(width)
        w = max(w, 1.0)
        # DICOM PS3.3 C.11.2.1.2 linear window
        scaled = ((values - (c - 0.5)) / (w - 1.0 if w > 1 else 1.0) + 0.5).clip(0.0, 1.0)
        out = (scaled * 255.0).round().astype(np.uint8)
    else:
        out = _scale_to_uint8(values)
    if photometric == "MONOCHROME1":
        out = 255 - out
    return out


def load_image(uri: str, max_side: int = 2048, *, max_bytes: int | None = None,
               max_decode_bytes: int | None = None) -> LoadedImage:
    """Read ``uri`` (local path or fsspec URL) and return an RGB image, longest side <= max_side."""
    max_bytes = MAX_FILE_BYTES if max_bytes is None else max_bytes
    max_decode_bytes = MAX_DECODE_BYTES if max_decode_bytes is None else max_decode_bytes
    data = _read(uri, max_bytes)
    if len(data) == 0:
        raise ImageLoadError("empty", f"{uri}: the file is empty (0 bytes)")
    try:
        if _is_dicom(data, uri):
            img, fmt, original = _decode_dicom(data, uri, max_side, max_decode_bytes)
        else:
            img, fmt, original = _decode_pil(data, uri, max_side, max_decode_bytes)
    except ImageLoadError:
        raise
    except MemoryError:
        raise ImageLoadError("too_large", f"{uri}: out of memory while decoding; downscale the file") from None
    except Exception as exc:  # noqa: BLE001 - one odd file is this sample's error row, never the job's end
        raise ImageLoadError("corrupt", f"{uri}: cannot decode ({exc.__class__.__name__}: {exc})") from None
    return LoadedImage(image=img, sha256=image_bytes_sha256(data), width=img.width, height=img.height,
                       source_format=fmt, original_size=original, data=data)
