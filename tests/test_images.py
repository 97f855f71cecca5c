"""fusion.imaging.images: real files made here with PIL, every accepted format and the ways uploads go wrong."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from fusion.core.errors import BadImage
from fusion.imaging.images import ACCEPTED_FORMATS, image_sha256, load_image


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def sample_rgb(w: int = 64, h: int = 48) -> Image.Image:
    """Smooth colour gradient: survives lossy codecs well enough to compare."""
    x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], -1).astype(np.uint8), "RGB")


def png_with_declared_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR is patched to declare width x height (CRC recomputed)."""
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize("fmt", ACCEPTED_FORMATS)
def test_each_accepted_format_round_trips(fmt):
    original = sample_rgb()
    params = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    img = load_image(encode(original, fmt, **params))
    assert img.mode == "RGB" and img.size == original.size
    diff = np.abs(np.asarray(img, np.int16) - np.asarray(original, np.int16))
    assert diff.mean() < 4


def test_path_and_bytes_give_the_same_image(tmp_path):
    path = tmp_path / "scan.png"
    sample_rgb().save(path)
    from_path, from_str = load_image(path), load_image(str(path))
    from_bytes = load_image(path.read_bytes())
    assert np.array_equal(np.asarray(from_path), np.asarray(from_bytes))
    assert np.array_equal(np.asarray(from_str), np.asarray(from_bytes))


def test_grey_and_bilevel_become_rgb():
    grey = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (10, 1)), "L")
    img = load_image(encode(grey, "PNG"))
    assert img.mode == "RGB"
    assert np.array_equal(np.asarray(img)[..., 0], np.asarray(grey))
    bilevel = load_image(encode(grey.convert("1"), "BMP"))
    assert bilevel.mode == "RGB" and set(np.unique(np.asarray(bilevel))) <= {0, 255}


def test_transparency_is_composited_over_white():
    rgba = Image.new("RGBA", (20, 10), (255, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 10, 10))  # left half fully transparent black
    img = np.asarray(load_image(encode(rgba, "PNG")))
    assert tuple(img[5, 2]) == (255, 255, 255)
    assert tuple(img[5, 15]) == (255, 0, 0)

    la = Image.new("LA", (4, 4), (0, 0))
    assert tuple(np.asarray(load_image(encode(la, "PNG")))[0, 0]) == (255, 255, 255)


def test_palette_images_with_and_without_transparency():
    pal = sample_rgb().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    img = load_image(encode(pal, "PNG"))
    assert img.mode == "RGB" and img.size == pal.size

    pal_t = Image.new("P", (8, 8), 1)
    pal_t.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    pal_t.paste(0, (0, 0, 4, 8))
    data = encode(pal_t, "PNG", transparency=0)  # index 0 (black) is transparent
    out = np.asarray(load_image(data))
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[0, 7]) == (0, 0, 255)


def test_dim_16bit_scan_is_stretched_to_full_contrast():
    values = np.linspace(0, 4000, 100 * 60).reshape(60, 100).astype(np.uint16)
    img16 = Image.fromarray(values)
    assert img16.mode.startswith("I;16")
    for fmt in ("PNG", "TIFF"):
        out = np.asarray(load_image(encode(img16, fmt)))
        assert out.min() <= 2 and out.max() >= 253, fmt  # a plain >> 8 would top out at 15
        assert out[:, :, 0].mean() == pytest.approx(127.5, abs=3)


def test_float_and_32bit_tiffs_are_scaled():
    ramp = np.linspace(-1.0, 1.0, 50 * 20, dtype=np.float32).reshape(20, 50)
    out = np.asarray(load_image(encode(Image.fromarray(ramp, "F"), "TIFF")))
    assert out.min() <= 2 and out.max() >= 253
    ints = Image.fromarray((ramp * 100_000).astype(np.int32), "I")
    out = np.asarray(load_image(encode(ints, "TIFF")))
    assert out.min() <= 2 and out.max() >= 253


def test_flat_16bit_image_does_not_divide_by_zero():
    flat = Image.fromarray(np.full((5, 5), 3000, np.uint16))
    assert load_image(encode(flat, "PNG")).size == (5, 5)


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_becomes_rgb(fmt):
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    out = np.asarray(load_image(encode(cmyk, fmt)))
    r, g, b = out[8, 8].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_ycbcr_becomes_rgb():
    ycc = sample_rgb().convert("YCbCr")
    out = load_image(encode(ycc, "JPEG", quality=95))
    assert out.mode == "RGB" and out.size == ycc.size


def test_exif_orientation_6_is_applied():
    img = Image.new("RGB", (200, 100), "white")
    img.paste((255, 0, 0), (0, 0, 20, 20))  # red mark at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = load_image(encode(img, "JPEG", exif=exif, quality=95))
    assert out.size == (100, 200)
    # After rotating 90 degrees clockwise the stored top-left lands at the top-right.
    r, g, b = np.asarray(out)[10, 90].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_multiframe_tiff_takes_the_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ((0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert tuple(np.asarray(load_image(data))[0, 0]) == (0, 255, 0)


def test_gif_is_refused_with_what_is_accepted():
    with pytest.raises(BadImage, match=r"GIF is not accepted; use PNG, JPEG, TIFF, BMP or WebP"):
        load_image(encode(sample_rgb(), "GIF"))


def test_empty_upload():
    with pytest.raises(BadImage, match="empty"):
        load_image(b"")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(BadImage, match="empty"):
        load_image(path)


def test_garbage_bytes_are_not_an_image():
    with pytest.raises(BadImage, match=r"not an image.*PNG, JPEG, TIFF, BMP or WebP"):
        load_image(b"%PDF-1.4 this is certainly not a picture" * 10)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_refused(fmt):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8))
    data = encode(noise, fmt)
    with pytest.raises(BadImage, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])


def test_too_many_bytes_is_refused_before_decoding(tmp_path):
    data = encode(sample_rgb(400, 400), "BMP")  # 480 KB uncompressed
    with pytest.raises(BadImage, match=r"0\.5 MB; the limit is 0\.1 MB"):
        load_image(data, max_bytes=100_000)
    path = tmp_path / "big.bmp"
    path.write_bytes(data)
    with pytest.raises(BadImage, match="limit"):
        load_image(path, max_bytes=100_000)
    assert load_image(data, max_bytes=len(data)).size == (400, 400)


def test_decompression_bomb_header_is_refused_without_decoding():
    bomb = png_with_declared_size(50_000, 50_000)
    assert len(bomb) < 200
    with pytest.raises(BadImage, match="megapixels"):
        load_image(bomb)


def test_pixel_limit_is_our_own_not_only_pils():
    # 10000 x 5000 = 50 MP: under PIL's own bomb threshold, over our 40 MP default.
    with pytest.raises(BadImage, match=r"10000 x 5000 = 50 megapixels; the limit is 40 megapixels"):
        load_image(png_with_declared_size(10_000, 5_000))
    with pytest.raises(BadImage, match="megapixels"):
        load_image(encode(sample_rgb(64, 48), "PNG"), max_pixels=1000)


def test_zero_size_image_is_refused():
    with pytest.raises(BadImage):
        load_image(png_with_declared_size(0, 10))


def test_missing_path():
    with pytest.raises(BadImage, match="no such image file"):
        load_image("/nonexistent/scan.png")


def test_directory_is_not_an_image_file(tmp_path):
    with pytest.raises(BadImage, match="no such image file"):
        load_image(tmp_path)


def test_bad_image_is_a_fusion_error():
    from fusion.core.errors import FusionError

    with pytest.raises(FusionError):
        load_image(b"\x00")


def test_image_sha256():
    assert image_sha256(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert len(image_sha256(encode(sample_rgb(), "PNG"))) == 64


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF"])
def test_import_check_catches_the_same_damage_as_a_full_decode(fmt, tmp_path):
    """check_image_file skips pixel work (PNG: CRCs only, JPEG: 1/8 scale) but not the verdict."""
    from fusion.imaging.images import check_image_file
    from fusion.core.settings import load_settings

    settings = load_settings(home=tmp_path)
    data = encode(sample_rgb(640, 480), fmt)
    file = check_image_file(data, settings)
    assert (file.width, file.height) == (640, 480) and file.sha256 == image_sha256(data)
    assert file.extension == {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif"}[fmt]
    with pytest.raises(BadImage):
        load_image(data[: len(data) // 2])
    for bad in (data[: len(data) // 2], data[:-20]):
        with pytest.raises(BadImage, match="truncated or corrupt|could not read"):
            check_image_file(bad, settings)
    if fmt == "PNG":  # one flipped byte in the compressed pixels: a full decode misses it, the CRC doesn't
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0xFF
        with pytest.raises(BadImage, match="checksum"):
            check_image_file(bytes(flipped), settings)
