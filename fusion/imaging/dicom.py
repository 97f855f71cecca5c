"""DICOM (.dcm) uploads: the first frame's pixels, windowed as the file says, as an 8-bit image.

Nothing of the DICOM header is kept: what the store receives is a PNG of the windowed pixels
(see images.check_image_file), so patient name, IDs, dates and every other tag never reach the
blob store or the database. The PNG carries one non-identifying note of how it was made
(modality, window, frame), which helps a reviewer tell a soft-tissue window from a bone window.

Reads only what pydicom can decode with what is installed here: uncompressed, RLE Lossless,
Deflated, and (through Pillow) JPEG Baseline/Extended and JPEG 2000. JPEG Lossless, JPEG-LS and
HTJ2K need pylibjpeg or GDCM, which are not installed: those files get a clear refusal.
"""
from __future__ import annotations

import io
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, PngImagePlugin

from fusion.core.errors import BadImage

PREAMBLE = 128                   # a DICOM Part 10 file: 128 bytes, then b"DICM"
DEFLATED = "1.2.840.10008.1.2.1.99"
_MAX_FRAMES = 100_000            # more frames than any real series; a mutated header says more
_BITS = (1, 8, 16, 32, 64)


def is_dicom(data: bytes) -> bool:
    return data[PREAMBLE:PREAMBLE + 4] == b"DICM"


@dataclass(frozen=True)
class DicomImage:
    image: Image.Image      # "L" (monochrome) or "RGB", 8 bits per sample
    note: str               # how it was made, no identifying data: "CT, window 40/400, frame 1 of 1"

    def png(self) -> bytes:
        """What is stored for the upload: deterministic bytes, so the same file is the same item."""
        info = PngImagePlugin.PngInfo()
        info.add_text("Source", f"DICOM {self.note}")
        out = io.BytesIO()
        self.image.save(out, format="PNG", pnginfo=info, compress_level=6)
        return out.getvalue()


def read_dicom(data: bytes, max_pixels: int, max_inflated_bytes: int) -> DicomImage:
    """Decode a DICOM file's first frame into an 8-bit image, or raise BadImage saying why."""
    try:
        return _read(data, max_pixels, max_inflated_bytes)
    except BadImage:
        raise
    except Exception as e:   # pydicom raises many kinds (and converts values lazily) on a damaged file
        raise BadImage(f"not a readable DICOM file ({_brief(e)})") from None


def _read(data: bytes, max_pixels: int, max_inflated_bytes: int) -> DicomImage:
    import pydicom
    from pydicom.pixels import pixel_array
    from pydicom.uid import UID

    meta, dataset_start = _file_meta(data)
    syntax = UID(str(meta.get("TransferSyntaxUID", "")) or "1.2.840.10008.1.2.1")
    if syntax == DEFLATED:
        _check_inflated_size(data[dataset_start:], max_inflated_bytes)
    ds = pydicom.dcmread(io.BytesIO(data), force=False)
    if "PixelData" not in ds:
        kind = getattr(ds.get("SOPClassUID"), "name", None) or "DICOM object"
        raise BadImage(f"this DICOM file holds no image (no Pixel Data; it is a {kind}); "
                       "upload a DICOM image, or a PNG, JPEG, TIFF, BMP or WebP")
    _check_decodable(syntax, ds)
    frames = _check_geometry(ds, max_pixels)
    if syntax.is_compressed:
        _check_first_frame_size(ds, frames)
    try:
        pixels = pixel_array(ds, index=0)  # only the first frame is decoded
        image, window = _monochrome(pixels, ds) if pixels.ndim == 2 else (_colour(pixels, ds), "none")
    except BadImage:
        raise
    except Exception as e:
        raise BadImage(f"DICOM pixel data is truncated or corrupt ({_brief(e)})") from None
    modality = str(ds.get("Modality", "") or "unknown modality")[:16]
    return DicomImage(image, f"{modality}, window {window}, frame 1 of {frames}")


# ---- before decoding: is this something we can and should decode? ------------------------------

def _file_meta(data: bytes):
    import pydicom.filereader

    try:
        fp = io.BytesIO(data)
        pydicom.filereader.read_preamble(fp, force=False)
        meta = pydicom.filereader._read_file_meta_info(fp)   # the public one takes only a path
        return meta, fp.tell()
    except Exception as e:
        raise BadImage(f"not a readable DICOM file: its file meta header is damaged ({_brief(e)})") from None


def _check_inflated_size(deflated: bytes, limit: int) -> None:
    """pydicom inflates a Deflated dataset in one go: a few MB can inflate to many GB. Count first,
    in bounded steps, throwing the output away."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total, pending = 0, deflated
    try:
        while pending and total <= limit:
            total += len(inflater.decompress(pending, 1 << 20))
            pending = inflater.unconsumed_tail
    except zlib.error:
        return   # not a valid deflate stream: pydicom reports the real error next
    if total > limit:
        raise BadImage(f"this Deflated DICOM file inflates to more than {limit / 1e6:.0f} MB; refused")


_SUPPORTED = ("uncompressed, RLE Lossless, Deflated, 8-bit JPEG Baseline/Extended and JPEG 2000 DICOM; "
              "export the image uncompressed or as PNG")
_JPEG_8BIT_ONLY = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51")   # Pillow's JPEG decoder: 8-bit samples


def _check_decodable(syntax, ds) -> None:
    from pydicom.pixels import get_decoder

    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:   # a transfer syntax pydicom has no decoder for at all
        available = False
    if not available:
        raise BadImage(f"DICOM compressed as {syntax.name} ({syntax}) is not supported here: this server "
                       f"decodes {_SUPPORTED}")
    try:
        bits = int(ds.get("BitsStored") or 8)
    except (TypeError, ValueError):
        bits = 8   # a damaged value: _check_geometry explains
    if syntax in _JPEG_8BIT_ONLY and bits > 8:
        raise BadImage(f"DICOM compressed as {syntax.name} with {bits}-bit samples is not supported "
                       f"here: this server decodes {_SUPPORTED}")


def _check_geometry(ds, max_pixels: int) -> int:
    """Rows, columns, frames and sample layout sane and within limits, before anything is allocated."""
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
        samples, bits = int(ds.SamplesPerPixel), int(ds.BitsAllocated)
        photometric = str(ds.PhotometricInterpretation)
    except Exception as e:
        raise BadImage(f"DICOM image header is incomplete or damaged ({_brief(e)})") from None
    if rows <= 0 or columns <= 0:
        raise BadImage(f"DICOM image has zero size ({columns} x {rows})")
    if rows * columns > max_pixels:
        raise BadImage(f"DICOM image is {columns} x {rows} = {rows * columns / 1e6:.0f} megapixels; "
                       f"the limit is {max_pixels / 1e6:.0f} megapixels")
    if not 1 <= frames <= _MAX_FRAMES or samples not in (1, 3) or bits not in _BITS:
        raise BadImage(f"DICOM image header is damaged ({frames} frames, {samples} samples per pixel, "
                       f"{bits} bits allocated)")
    if (samples == 1) != photometric.startswith(("MONOCHROME", "PALETTE")):
        raise BadImage(f"DICOM image header is damaged ({photometric} with {samples} samples per pixel)")
    return frames


def _check_first_frame_size(ds, frames: int) -> None:
    """A compressed frame declares its own size; a mismatch would make Pillow allocate what the
    codestream says rather than what Rows x Columns (already checked) says."""
    from pydicom.encaps import get_frame

    if ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5":
        return   # RLE: pydicom's decoder allocates from Rows x Columns
    try:
        frame = get_frame(ds.PixelData, 0, number_of_frames=frames)
        with Image.open(io.BytesIO(frame)) as img:   # header only
            size = img.size
    except Exception as e:
        raise BadImage(f"DICOM pixel data is truncated or corrupt ({_brief(e)})") from None
    if size != (int(ds.Columns), int(ds.Rows)):
        raise BadImage(f"DICOM image is damaged: its header says {ds.Columns} x {ds.Rows} but the "
                       f"compressed frame is {size[0]} x {size[1]}")


# ---- from stored values to what a person sees ---------------------------------------------------

def _monochrome(pixels: np.ndarray, ds) -> tuple[Image.Image, str]:
    """Modality LUT (rescale slope/intercept), then the file's VOI window (else its VOI LUT, else
    the image's own range), to 8 bits; MONOCHROME1 (0 is white) inverted."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi

    if str(ds.PhotometricInterpretation) == "PALETTE COLOR":
        return _colour(apply_color_lut(pixels, ds), ds), "none"
    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    window = _window(ds)
    if window is not None:
        center, width = window
        scaled, used = _linear_window(values, center, width, ds), f"{center:g}/{width:g}"
    else:
        if ds.get("VOILUTSequence"):
            values = np.asarray(apply_voi(values.astype(np.int64), ds), dtype=np.float64)
            used = "VOI LUT"
        else:
            used = "full range"
        scaled = _stretch(values)
    if str(ds.PhotometricInterpretation) == "MONOCHROME1":
        scaled = 1.0 - scaled
    return Image.fromarray(np.clip(scaled * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L"), used


def _window(ds) -> tuple[float, float] | None:
    """The first of the file's window center/width pairs, if it has a usable one."""
    from pydicom.multival import MultiValue

    def first(value):   # a DS element with several windows holds a MultiValue
        return value[0] if isinstance(value, (MultiValue, list, tuple)) else value

    try:
        center, width = float(first(ds.get("WindowCenter"))), float(first(ds.get("WindowWidth")))
    except (TypeError, ValueError, IndexError):   # absent, empty or not a number
        return None
    return (center, width) if np.isfinite(center) and np.isfinite(width) and width >= 1 else None


def _linear_window(values: np.ndarray, center: float, width: float, ds) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 to 0..1 (LINEAR, the default), or its SIGMOID variant."""
    if str(ds.get("VOILUTFunction", "LINEAR")).upper() == "SIGMOID":
        return 1.0 / (1.0 + np.exp(np.clip(-4.0 * (values - center) / width, -500, 500)))
    return np.clip((values - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0) if width > 1 else \
        (values > center - 0.5).astype(np.float64)


def _stretch(values: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape)
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:   # a flat image stays flat
        return np.full(values.shape, 0.0 if hi <= 0 else 1.0)
    return np.nan_to_num((values - lo) / (hi - lo))


def _colour(pixels: np.ndarray, ds) -> Image.Image:
    """RGB (pydicom has already turned YBR into RGB), 8 bits; deeper samples scaled over their range."""
    if pixels.dtype != np.uint8:
        pixels = np.clip(_stretch(pixels.astype(np.float64)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(pixels[..., :3]), mode="RGB")


def _brief(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]
