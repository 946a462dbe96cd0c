"""load_image on every bad input of issue 4, generated on the fly."""
from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image, ImageFile

from vlm_eval.datasets.images import ImageLoadError, blank_like, image_bytes_sha256, load_image, noise_like


def _noisy(w: int = 256, h: int = 256, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))


def _save(img: Image.Image, path, **kw) -> str:
    img.save(path, **kw)
    return str(path)


def _error(uri: str, **kw) -> ImageLoadError:
    with pytest.raises(ImageLoadError) as info:
        load_image(uri, **kw)
    return info.value


def test_good_png_and_jpeg_load_as_rgb_with_hash_of_original_bytes(tmp_path):
    for name in ("a.png", "a.jpg"):
        path = _save(_noisy(), tmp_path / name)
        got = load_image(path)
        assert got.image.mode == "RGB" and (got.width, got.height) == (256, 256)
        assert got.sha256 == hashlib.sha256(open(path, "rb").read()).hexdigest()
        assert got.source_format == ("PNG" if name.endswith("png") else "JPEG")
    assert image_bytes_sha256(b"abc") == hashlib.sha256(b"abc").hexdigest()


def test_zero_byte_file_is_empty(tmp_path):
    (tmp_path / "zero.png").write_bytes(b"")
    assert _error(str(tmp_path / "zero.png")).error_type == "empty"


def test_missing_file_is_missing(tmp_path):
    err = _error(str(tmp_path / "nope.png"))
    assert err.error_type == "missing" and "nope.png" in str(err)


def test_corrupt_png_is_corrupt(tmp_path):
    data = bytearray(_png_bytes(_noisy()))
    data[len(data) // 2] ^= 0xFF  # flip a byte inside the compressed pixel data
    (tmp_path / "corrupt.png").write_bytes(bytes(data))
    assert _error(str(tmp_path / "corrupt.png")).error_type == "corrupt"
    (tmp_path / "garbage.png").write_bytes(b"this is not an image" * 20)
    assert _error(str(tmp_path / "garbage.png")).error_type == "corrupt"


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def test_truncated_jpeg_is_an_error_not_grey_fill(tmp_path):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    data = _jpeg_bytes(_noisy())
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    assert _error(str(tmp_path / "t.jpg")).error_type == "truncated"
    # also when the cut keeps an end marker far back (e.g. the EOI check is fooled): PIL must fail
    (tmp_path / "t2.jpg").write_bytes(data[: len(data) - 200])
    assert _error(str(tmp_path / "t2.jpg")).error_type == "truncated"


def test_truncated_png_is_truncated(tmp_path):
    data = _png_bytes(_noisy())
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    assert _error(str(tmp_path / "t.png")).error_type == "truncated"


def test_refuses_to_load_when_someone_enabled_truncated_loading(tmp_path, monkeypatch):
    path = _save(_noisy(), tmp_path / "ok.jpg")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    err = _error(path)
    assert "LOAD_TRUNCATED_IMAGES" in str(err)


def test_16bit_png_is_scaled_by_its_actual_range_not_clipped(tmp_path):
    ramp = np.linspace(1000, 3000, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = _save(Image.fromarray(ramp), tmp_path / "g16.png")
    assert Image.open(path).mode.startswith("I;16")
    arr = np.asarray(load_image(path).image)[..., 0].astype(int)
    assert arr.min() == 0 and arr.max() == 255  # clipping would give all 255
    flat = arr.ravel()
    assert np.all(np.diff(flat) >= 0)  # the ramp stays monotonic (no wrap-around)
    assert abs(flat[len(flat) // 2] - 128) <= 2


def _write_dicom(path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2", slope: float = 1.0,
                 intercept: float = 0.0, window: tuple[float, float] | None = None) -> str:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    try:
        ds.save_as(str(path), enforce_file_format=True)
    except TypeError:  # pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(str(path), write_like_original=False)
    return str(path)


def test_dicom_modality_lut_window_and_monochrome1(tmp_path):
    stored = np.tile(np.linspace(0, 4000, 100).astype(np.uint16), (40, 1))  # ramp, 12 bit
    # slope 2, intercept -1000 -> values -1000 .. 7000; window 3000 +- 2000 -> 1000..5000 maps to 0..255
    path = _write_dicom(tmp_path / "x.dcm", stored, slope=2.0, intercept=-1000.0, window=(3000.0, 4000.0))
    got = load_image(path)
    assert got.source_format == "DICOM" and got.image.size == (100, 40)
    row = np.asarray(got.image)[0, :, 0].astype(int)
    values = stored[0].astype(float) * 2 - 1000
    assert row[values <= 1000].max() == 0 and row[values >= 5000].min() == 255
    inside = (values > 1200) & (values < 4800)
    assert np.all(np.diff(row[inside]) >= 0) and 20 < row[inside].mean() < 235
    # MONOCHROME1: high values are dark
    inv = load_image(_write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1"))
    row1 = np.asarray(inv.image)[0, :, 0].astype(int)
    assert row1[0] == 255 and row1[-1] == 0


def test_dicom_without_pydicom_says_how_to_install(tmp_path, monkeypatch):
    path = _write_dicom(tmp_path / "x.dcm", np.zeros((8, 8), np.uint16) + 7)
    monkeypatch.setitem(sys.modules, "pydicom", None)
    err = _error(path)
    assert err.error_type == "unsupported" and "pip install pydicom" in str(err)


def test_rgba_palette_cmyk_become_rgb(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (10, 200, 30, 255))
    got = load_image(_save(rgba, tmp_path / "rgba.png")).image
    assert got.mode == "RGB" and got.getpixel((0, 0)) == (10, 200, 30) and got.getpixel((1, 1)) == (0, 0, 0)
    pal = Image.new("P", (4, 4))
    pal.putpalette([0, 0, 0, 250, 100, 50] + [0] * 762)
    pal.putpixel((2, 2), 1)
    got = load_image(_save(pal, tmp_path / "p.png")).image
    assert got.mode == "RGB" and got.getpixel((2, 2)) == (250, 100, 50)
    cmyk = Image.new("CMYK", (16, 16), (0, 0, 0, 0))
    assert load_image(_save(cmyk, tmp_path / "c.jpg")).image.mode == "RGB"
    la = Image.new("LA", (4, 4), (200, 255))
    assert load_image(_save(la, tmp_path / "la.png")).image.getpixel((0, 0)) == (200, 200, 200)


def test_downscales_to_max_side_and_keeps_aspect(tmp_path):
    path = _save(_noisy(3000, 1000, mode="L"), tmp_path / "wide.png")
    got = load_image(path, max_side=512)
    assert (got.width, got.height) == (512, 171) and got.original_size == (3000, 1000)


def test_decode_budget_gives_too_large(tmp_path):
    path = _save(_noisy(2000, 2000, mode="L"), tmp_path / "big.png")
    err = _error(path, max_decode_bytes=1_000_000)
    assert err.error_type == "too_large" and "MiB" in str(err)
    assert _error(path, max_bytes=100).error_type == "too_large"


def test_huge_jpeg_is_downscaled_with_bounded_memory(tmp_path):
    """12000x12000 grayscale JPEG: a full decode needs 137 MiB; draft mode decodes at 1/8.

    (Past PIL's own 89 M-pixel bomb warning, too: a JPEG that can be downscaled is not refused.)
    """
    img = Image.new("L", (12000, 12000), 40)
    img.paste(220, (3000, 3000, 9000, 9000))
    path = _save(img, tmp_path / "huge.jpg", quality=75)
    del img
    code = textwrap.dedent(f"""
        import resource, sys
        from vlm_eval.datasets.images import load_image
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        got = load_image({path!r}, max_side=1024)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(got.width, got.height, got.original_size[0], (after - before) // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    w, h, orig, grew_mib = map(int, out.stdout.split())
    assert (w, h, orig) == (1024, 1024, 12000)
    assert grew_mib < 64, f"peak memory grew by {grew_mib} MiB while loading (a full decode: 137)"


def test_blank_and_noise_ablations():
    img = _noisy(40, 30)
    blank = blank_like(img)
    assert blank.size == (40, 30) and blank.mode == "RGB" and blank.getextrema() == ((0, 0),) * 3
    a, b, c = noise_like(img, 7), noise_like(img, 7), noise_like(img, 8)
    assert a.size == (40, 30) and a.mode == "RGB"
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()
    assert np.asarray(a).std() > 50


def test_dcm_name_with_png_bytes_is_read_as_png(tmp_path):
    path = _save(_noisy(16, 16), tmp_path / "mislabelled.dcm", format="PNG")
    assert load_image(path).source_format == "PNG"
