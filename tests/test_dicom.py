"""fusion.imaging.dicom: DICOM files made here with pydicom (and a few of pydicom's bundled test files):
window/level, MONOCHROME1, multi-frame, what is refused and why, and no identifying tag stored."""
from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from fusion.imaging.dicom import is_dicom, read_dicom
from fusion.core.errors import BadImage
from fusion.imaging.images import check_image_file, load_image

from helpers import IDENTIFYING, MARKER, dicom_file







def grey(image) -> np.ndarray:
    return np.asarray(image)[..., 0].astype(int)


def test_rescale_then_the_files_window_to_8_bits():
    # CT: stored = HU + 1024. Window 40/400 (soft tissue): HU -160 and below black, 240 and above white.
    hu = np.array([[-1000, -160, 40, 240, 3000]])
    data = dicom_file((hu + 1024).astype(np.uint16), window=(40, 400), rescale=(1, -1024))
    assert is_dicom(data)
    out = read_dicom(data, 40_000_000, 10**9)
    assert out.image.mode == "L" and out.note == "CT, window 40/400, frame 1 of 1"
    assert list(np.asarray(out.image)[0]) == [0, 0, 128, 255, 255]
    # no window in the file: the image's own range
    plain = read_dicom(dicom_file(np.array([[100, 200, 300]], np.uint16)), 40_000_000, 10**9)
    assert list(np.asarray(plain.image)[0]) == [0, 128, 255] and "full range" in plain.note


def test_monochrome1_is_inverted_and_multiframe_takes_the_first_frame():
    frames = np.stack([np.full((4, 6), v, np.uint16) for v in (0, 500, 1000)])
    frames[0, 0, 0] = 1000   # frame 0: one bright pixel on black
    data = dicom_file(frames, photometric="MONOCHROME1")
    out = read_dicom(data, 40_000_000, 10**9)
    assert out.image.size == (6, 4) and out.note.endswith("frame 1 of 3")
    pixels = np.asarray(out.image)
    assert pixels[0, 0] == 0 and pixels[1, 1] == 255   # MONOCHROME1: high values are dark
    rgb = load_image(data)   # what the model and the page get
    assert rgb.mode == "RGB" and grey(rgb)[0, 0] == 0 and grey(rgb)[1, 1] == 255


def test_bundled_files_uncompressed_rle_and_jpeg2000_decode_alike():
    plain = load_image(get_testdata_file("MR_small.dcm"))
    rle = load_image(get_testdata_file("MR_small_RLE.dcm"))
    assert plain.size == (64, 64) and np.array_equal(np.asarray(plain), np.asarray(rle))
    j2k = load_image(get_testdata_file("MR_small_jp2klossless.dcm"))
    assert np.array_equal(np.asarray(plain), np.asarray(j2k))


def test_what_is_not_a_decodable_image_is_refused_with_the_reason():
    with pytest.raises(BadImage, match=r"holds no image \(no Pixel Data; it is a RT Plan Storage\)"):
        load_image(get_testdata_file("rtplan.dcm"))
    with pytest.raises(BadImage, match=r"JPEG-LS Lossless Image Compression \(1\.2\.840\.10008\.1\.2\.4\.80\) "
                                       r"is not supported here.*uncompressed, RLE Lossless"):
        load_image(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    with pytest.raises(BadImage, match="JPEG Extended .* with 12-bit samples is not supported here"):
        load_image(get_testdata_file("JPGExtended.dcm"))
    with pytest.raises(BadImage, match="truncated or corrupt"):
        load_image(get_testdata_file("MR_truncated.dcm"))
    data = bytearray(dicom_file(np.zeros((8, 8), np.uint16)))
    header = bytes(data).index(b"\x28\x00\x10\x00")   # (0028,0010) Rows, explicit VR: tag, "US", length 2
    data[header + 8:header + 10] = (60000).to_bytes(2, "little")
    columns = bytes(data).index(b"\x28\x00\x11\x00")
    data[columns + 8:columns + 10] = (60000).to_bytes(2, "little")
    with pytest.raises(BadImage, match=r"60000 x 60000 = 3600 megapixels; the limit is 40 megapixels"):
        load_image(bytes(data))


def test_a_deflated_dicom_that_inflates_past_the_limit_is_refused(tmp_path):
    """A Deflated dataset of 100 MB of zeros is 100 KB on disk; pydicom would inflate it whole."""
    from fusion.core.settings import load_settings

    ds = pydicom.dcmread(io.BytesIO(dicom_file(np.zeros((2, 2), np.uint16))))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    ds.add_new(0x00091010, "OB", b"\x00" * (100 * 2**20))   # a private element: 100 MB of zeros
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    data = out.getvalue()
    assert len(data) < 200_000   # pydicom deflated it
    settings = load_settings(home=tmp_path, max_pixels=1_000_000)   # inflate limit: 6 MB + 16 MB
    with pytest.raises(BadImage, match="inflates to more than 22 MB"):
        check_image_file(data, settings)
    ds.PixelData = b"\x00" * 8
    del ds[0x00091010]
    small = io.BytesIO()
    ds.save_as(small, enforce_file_format=True)
    assert check_image_file(small.getvalue(), settings).extension == ".png"


def test_identifying_tags_never_reach_the_workspace(tmp_path):
    """An upload is stored as a PNG of its windowed pixels: the marker in the patient's name, ID,
    birth date, institution... is in no file under the workspace (database, WAL, images)."""
    from fusion.imaging.images import load_upload
    from fusion.services.review import add_upload
    from fusion.core.settings import load_settings
    from fusion.store.labeling import Store

    settings = load_settings(home=tmp_path / "home")
    store = Store(settings)
    store.create_project("scans", {"normal": "", "abnormal": ""}, user="rita")
    data = dicom_file((np.arange(64 * 48).reshape(48, 64) % 4096).astype(np.uint16), window=(2048, 4096))
    assert data.count(MARKER.encode()) == len(IDENTIFYING)
    item = add_upload(store, "scans", "scan-0001.dcm", data, user="rita")
    again = add_upload(store, "scans", "scan-0001.dcm", data, user="rita")
    assert again.id == item.id   # the same file twice is one item
    stored = store.image_path(item)
    assert item.extension == ".png" and stored.read_bytes().startswith(b"\x89PNG")
    assert (item.width, item.height) == (64, 48)
    assert np.array_equal(np.asarray(load_image(stored)), np.asarray(load_upload(data, settings)))
    leaks = [p for p in (tmp_path / "home").rglob("*") if p.is_file() and MARKER.encode() in p.read_bytes()]
    assert leaks == []
    assert b"DICM" not in stored.read_bytes() and b"19700101" not in stored.read_bytes()


def test_dicom_files_in_a_zip_and_a_folder_import_as_their_windowed_pixels(tmp_path):
    """A .dcm in an uploaded zip (ImageFolder layout) and in a flat folder: stored as PNGs, under
    their own file names, with no identifying tag anywhere in the workspace."""
    import zipfile

    from fusion.services.importing import import_path, unpack_upload
    from fusion.core.settings import load_settings
    from fusion.store.labeling import Store

    home = tmp_path / "home"
    store = Store(load_settings(home=home))
    store.create_project("scans", {"normal": "", "abnormal": ""}, user="rita")
    first = dicom_file(np.arange(12, dtype=np.uint16).reshape(3, 4) * 100, window=(500, 1000))
    second = dicom_file(np.arange(12, dtype=np.uint16).reshape(3, 4)[::-1] * 100)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("study/normal/one.dcm", first)
        z.writestr("study/abnormal/two.DCM", second)
    report = import_path(store, "scans", unpack_upload("study.zip", archive.getvalue(), tmp_path / "u"), "rita")
    assert (report.added, report.problems) == (2, [])
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "three.dicom").write_bytes(dicom_file(np.full((2, 2), 7, np.uint16)))
    (flat / "not-an-image.dcm").write_bytes(first[:200])   # cut inside the header
    report = import_path(store, "scans", flat, "rita")
    assert report.added == 1 and [w for w, _ in report.problems] == ["not-an-image.dcm"]
    assert "DICOM" in report.problems[0][1]
    items = {i.filename: i for i in store.iter_items("scans")}
    assert set(items) == {"one.dcm", "two.DCM", "three.dicom"} and items["one.dcm"].label == "normal"
    assert all(i.extension == ".png" for i in items.values())
    assert np.array_equal(grey(load_image(store.image_path(items["one.dcm"]))),
                          grey(load_image(first)))
    for path in home.rglob("*"):
        assert not path.is_file() or MARKER.encode() not in path.read_bytes(), path
