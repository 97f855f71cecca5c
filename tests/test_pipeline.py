"""The prediction service: three probability sets, OCR reused on edits, image features cached."""
from __future__ import annotations

import pytest
from PIL import Image

from fusion.ocr import OcrResult
from fusion.pipeline import compose_text


def test_compose_text_joins_page_text_and_caption():
    assert compose_text("  Lipid Panel\nHDL 45 ", " fasting ") == "Lipid Panel\nHDL 45\nfasting"
    assert compose_text("", "note only") == "note only"
    assert compose_text("", "   ") == ""


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
