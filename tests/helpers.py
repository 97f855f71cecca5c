"""What several test modules share (no test module imports another)."""
from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from streamlit.testing.v1 import AppTest


def png_bytes(seed: int, size: int = 48) -> bytes:
    """A small PNG that no other seed produces: random noise on a seed-dependent tint."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    pixels[0, 0] = [seed % 256, (seed // 256) % 256, (seed // 65536) % 256]
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def wait_for(check, timeout: float, what: str, every: float = 0.1):
    """check()'s first truthy value, polled every `every` s; AssertionError after `timeout` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# ---- the app under AppTest ---------------------------------------------------------------------

TIMEOUT = 300  # the first run loads the encoders and EasyOCR
APP = Path(__file__).resolve().parent.parent / "app.py"
UNIQUE = os.urandom(3)  # a dot in the corner: this run's page is a new item even in a reused workspace


def page_bytes(fmt: str = "PNG") -> bytes:
    image = Image.new("RGB", (900, 300), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 2, 2), fill=tuple(UNIQUE))
    font = ImageFont.load_default(size=40)
    draw.text((30, 40), "Hemoglobin 13.2 g/dL", fill="black", font=font)
    draw.text((30, 160), "Glucose fasting 5.1 mmol/L", fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def started(demo_project) -> AppTest:
    app = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    app.session_state["user"] = "reviewer"
    app.run()
    assert not app.exception, app.exception
    return app


# ---- DICOM files ------------------------------------------------------------------------------

MARKER = "ZQXJ7PATIENT"   # appears in every identifying tag of the test files, and nowhere else
IDENTIFYING = ("PatientName", "PatientID", "OtherPatientIDs", "InstitutionName",
               "ReferringPhysicianName", "AccessionNumber", "StudyID", "PatientAddress")


def dicom_file(pixels: np.ndarray, *, photometric: str = "MONOCHROME2", window: tuple | None = None,
               rescale: tuple | None = None, modality: str = "CT", marker: str = MARKER) -> bytes:
    """A Part 10 DICOM file (explicit VR little endian) of `pixels`: (rows, cols) or (frames, rows, cols)
    uint16, with the marker in every identifying tag."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"   # Secondary Capture
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    for tag in IDENTIFYING:
        short = tag in ("PatientID", "AccessionNumber", "StudyID")   # VRs of at most 16 characters
        setattr(ds, tag, marker if short else f"{marker}^{tag}")
    ds.PatientBirthDate = "19700101"
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
