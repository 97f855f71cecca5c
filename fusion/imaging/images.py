"""Decoding uploads safely: bytes or a path -> an upright RGB PIL image, or BadImage."""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fusion.imaging.dicom import is_dicom, read_dicom
from fusion.core.errors import BadImage

ACCEPTED_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP")   # decoded by Pillow; DICOM by fusion.imaging.dicom
ACCEPTED_TEXT = "PNG, JPEG, TIFF, BMP or WebP (or DICOM)"

_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def image_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _mb(n: float) -> str:
    return f"{n / 1_000_000:.1f} MB"


def _too_many_pixels(max_pixels: int) -> BadImage:
    limit = f"{max_pixels / 1e6:.0f} megapixels"
    return BadImage(f"image has too many pixels to decode safely; the limit is {limit}")


def _read_source(source: bytes | str | Path, max_bytes: int | None) -> bytes:
    path = None if isinstance(source, (bytes, bytearray, memoryview)) else Path(source)
    if path is not None and not path.is_file():
        raise BadImage(f"no such image file: {path}")
    # A path's size is checked before reading, so a huge file is never loaded.
    size = path.stat().st_size if path is not None else len(source)
    if size == 0:
        raise BadImage(f"the upload is empty (0 bytes); expected a {ACCEPTED_TEXT} image")
    if max_bytes is not None and size > max_bytes:
        raise BadImage(f"the file is {_mb(size)}; the limit is {_mb(max_bytes)}")
    return path.read_bytes() if path is not None else bytes(source)


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit / float -> L, stretched over the image's own range.

    A plain >>8 would turn a dim scan (values 0..4000 of 65535) nearly black.
    """
    a = np.asarray(img, dtype=np.float64)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if hi <= lo:  # flat image: keep it flat instead of dividing by zero
        return Image.new("L", img.size, 0 if hi <= 0 else 255)
    a = np.nan_to_num((a - lo) * (255.0 / (hi - lo)))
    return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8), mode="L")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in _HIGH_DEPTH_MODES:
        return _to_8bit(img).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "BMP": ".bmp", "WEBP": ".webp"}


def _decode(data: bytes, max_pixels: int, check_only: bool = False) -> Image.Image:
    """Header checks, then a full decode, so truncated/corrupt data fails here, not later.
    check_only (imports: no pixels needed, only the verdict, ~5x faster on document pages):
    a PNG's chunks are all read and their CRCs checked (truncation, damaged bytes) without
    inflating the pixels; a JPEG is decoded at 1/8 scale, which still entropy-decodes every byte."""
    try:
        img = Image.open(io.BytesIO(data))  # lazy: reads the header only
    except UnidentifiedImageError:
        raise BadImage(f"not an image or an unknown format; use {ACCEPTED_TEXT}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # The warning only arrives here when warnings are configured as errors.
        raise _too_many_pixels(max_pixels) from None
    except Exception as e:  # PIL raises many kinds on a malformed header
        raise BadImage(f"could not read the image header ({e}); use {ACCEPTED_TEXT}") from None

    if img.format not in ACCEPTED_FORMATS:
        raise BadImage(f"{img.format or 'this format'} is not accepted; use {ACCEPTED_TEXT}")
    width, height = img.size
    if width <= 0 or height <= 0:
        raise BadImage(f"image has zero size ({width} x {height})")
    if width * height > max_pixels:  # before decoding: a bomb is never allocated
        raise BadImage(
            f"image is {width} x {height} = {width * height / 1e6:.0f} megapixels; "
            f"the limit is {max_pixels / 1e6:.0f} megapixels"
        )
    try:
        if check_only and img.format == "PNG":
            img.verify()
            return img
        if check_only and img.format == "JPEG":
            img.draft(img.mode, (width // 8, height // 8))
        img.load()
        return img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_many_pixels(max_pixels) from None
    except Exception as e:
        raise BadImage(f"{img.format} data is truncated or corrupt ({e})") from None


def load_image(
    source: bytes | str | Path,
    *,
    max_bytes: int | None = None,
    max_pixels: int = 40_000_000,
) -> Image.Image:
    """Decode an upload into an upright RGB image, or raise BadImage saying why."""
    data = _read_source(source, max_bytes)
    if is_dicom(data):
        return read_dicom(data, max_pixels, _inflate_limit(max_pixels)).image.convert("RGB")
    img = _decode(data, max_pixels)
    try:
        return _to_rgb(ImageOps.exif_transpose(img))
    except Exception as e:
        raise BadImage(f"{img.format} data is truncated or corrupt ({e})") from None


@dataclass(frozen=True)
class ImageFile:
    """An accepted image file's bytes and what the store records of it."""
    data: bytes
    sha256: str
    extension: str    # by the decoded format, not the file name: ".png", ".jpg", ...
    width: int
    height: int


def check_image_file(source: bytes | str | Path, settings, full_decode: bool = False) -> ImageFile:
    """Read and check a file within the workspace's limits, or raise BadImage.
    Imports use the quick check of _decode (check_only); full_decode=True also does all that
    load_image does, which refuses a PNG whose checksums are valid but whose pixel stream is not.
    A DICOM file becomes a PNG of its windowed pixels: its header (names, IDs, dates) is never stored."""
    data = _read_source(source, int(settings.max_upload_mb * 2**20))
    if is_dicom(data):
        dicom = read_dicom(data, settings.max_pixels, _inflate_limit(settings.max_pixels))
        png = dicom.png()
        return ImageFile(png, image_sha256(png), ".png", dicom.image.width, dicom.image.height)
    if full_decode:
        load_image(data, max_pixels=settings.max_pixels)
    img = _decode(data, settings.max_pixels, check_only=True)
    width, height = Image.open(io.BytesIO(data)).size  # the full size, not the 1/8 draft's
    return ImageFile(data, image_sha256(data), EXTENSIONS[img.format], width, height)


def _inflate_limit(max_pixels: int) -> int:
    """The most a Deflated DICOM may inflate to: the largest allowed frame at 16 bits x 3 samples,
    plus room for its header."""
    return max_pixels * 6 + 16_000_000


def load_upload(source: bytes | str | Path, settings) -> Image.Image:
    """load_image within the workspace's limits (settings.max_upload_mb, settings.max_pixels)."""
    return load_image(source, max_bytes=int(settings.max_upload_mb * 2**20), max_pixels=settings.max_pixels)
