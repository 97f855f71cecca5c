"""The prediction service: three probability sets, OCR reused on edits, image features cached."""
from __future__ import annotations

import pytest
from PIL import Image

from fusion.imaging.ocr import OcrResult
from fusion.ml.encoders import CAPTION_MARK
from fusion.ml.pipeline import compose_text


def test_compose_text_marks_where_the_caption_begins():
    assert compose_text("  Lipid Panel\nHDL 45 ", " fasting ") == f"Lipid Panel\nHDL 45\n{CAPTION_MARK} fasting"
    assert compose_text("", "note only") == f"\n{CAPTION_MARK} note only"
    assert compose_text("page", "   ") == "page"
    assert compose_text(f"a{CAPTION_MARK}b", "") == "a b"     # typed marks never move the caption


def test_edit_reuses_ocr_and_cached_image_features(engine, demo_project):
    image = Image.new("RGB", (500, 400), (250, 250, 245))
    page = OcrResult(text="Troponin I 12 ng/L heart rate 88 bpm", words=[], ms=5.0, angle=0)
    first = engine.predict(image, demo_project, ocr_result=page)
    cached = len(engine._features)
    second = engine.predict(image, demo_project, caption="lipid panel, fasting cholesterol", ocr_result=page)
    assert len(engine._features) == cached  # same pixels: no new EfficientNet pass
    assert second.ocr is page and second.timings_ms["ocr"] < 5
    assert second.probs_image == first.probs_image  # the image did not change
    assert second.probs_text != first.probs_text    # the text did
    for probs in (second.probs, second.probs_image, second.probs_text):
        assert set(probs) == set(demo_project.labels) and sum(probs.values()) == pytest.approx(1, abs=1e-4)
    assert second.model_version == demo_project.active_model


def test_empty_text_still_predicts(engine, demo_project):
    image = Image.new("RGB", (300, 300), "white")
    prediction = engine.predict(image, demo_project, ocr_result=OcrResult(text="", words=[], ms=0.0, angle=0),
                                with_explanation=True)
    assert prediction.label in demo_project.labels
    assert prediction.explanation.word_attribution == [] and prediction.explanation.top_words() == []


def long_page(words: int) -> str:
    """A page of `words` words of a lab report, lines of eight words, ending in a marker word."""
    vocabulary = "potassium sodium creatinine reference range mmol/L result flagged glucose fasting".split()
    body = [vocabulary[i % len(vocabulary)] for i in range(words - 1)] + ["zanzibar"]
    return "\n".join(" ".join(body[i:i + 8]) for i in range(0, words, 8))


def test_a_caption_on_a_long_page_counts_and_the_whole_page_is_read(engine, demo_project):
    """The text encoder reads 128 word pieces at a time: a 450-word page is several chunks, the
    caption has its own, so it moves the text head, and the page's last word is attributed."""
    image = Image.new("RGB", (400, 500), "white")
    page = OcrResult(text=long_page(450), words=[], ms=0.0, angle=0)
    first = engine.predict(image, demo_project, caption="chest x-ray, no acute findings", ocr_result=page,
                           with_explanation=True)
    second = engine.predict(image, demo_project, caption="ECG: sinus rhythm, QT normal", ocr_result=page)
    assert first.probs_text != second.probs_text
    words = [w for w, _ in first.explanation.word_attribution]
    assert "zanzibar" in words and words[-1] == "findings"
    assert first.explanation.words_read == first.explanation.words_total == 450 + 5


def test_a_page_past_the_chunk_limit_says_how_much_was_read(engine):
    from fusion.ml.encoders import CAPTION_MARK, MAX_CHUNKS

    text = long_page(4000) + f"\n{CAPTION_MARK} my note"
    batch = engine.text_encoder.tokenize([text])
    assert batch.input_ids.shape[1] == MAX_CHUNKS
    assert 2000 <= batch.words_read() < len(batch.words[0]) == 4002
    read = {batch.words[0][w] for w in batch.word_ids[0] if w is not None}
    assert {"my", "note"} <= read and "zanzibar" not in read      # the caption is always read
