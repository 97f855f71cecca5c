"""Explanations that could be wrong: Grad-CAM must find the cat, attribution the deciding word."""
from __future__ import annotations

import os
import sys
import threading
import uuid

import pytest
import torch
from PIL import Image
from skimage import data
from torch import nn

from fusion.ml.encoders import ImageEncoder
from fusion.ml.explain import gradcam, peak_of
from fusion.imaging.ocr import OcrResult
from fusion.store.labeling import open_store

CAT_CLASSES = [281, 282, 283, 284, 285]  # tabby, tiger cat, Persian, Siamese, Egyptian cat


class ImageNetLogits(nn.Module):
    """The backbone's own ImageNet classifier, with the image as its single input."""

    def __init__(self, encoder: ImageEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, pixels):
        return self.encoder.imagenet_fc(self.encoder.forward_for_cam(pixels).mean((2, 3)))


@pytest.mark.parametrize("box", [(40, 40), (380, 240)])
def test_gradcam_of_the_cat_class_peaks_inside_the_pasted_cat(engine, box):
    canvas = Image.new("RGB", (640, 480), (255, 255, 255))
    cat = Image.fromarray(data.chelsea()).resize((220, 180))
    canvas.paste(cat, box)
    pixels = ImageEncoder.preprocess([canvas])
    classifier = ImageNetLogits(engine.image_encoder).eval()
    with torch.no_grad():
        logits = classifier(pixels)[0]
    cat_class = max(CAT_CLASSES, key=lambda c: float(logits[c]))
    assert int(logits.argmax()) in CAT_CLASSES, "the backbone should see a cat at all"

    with torch.enable_grad():
        heat = gradcam(classifier, engine.image_encoder.feature_map, pixels, cat_class, canvas.size)
    assert heat.shape == (480, 640)  # the image's own resolution, not 224x224
    x, y = peak_of(heat)
    assert box[0] <= x < box[0] + 220 and box[1] <= y < box[1] + 180, f"peak {(x, y)} outside the cat at {box}"
    inside = heat[box[1]:box[1] + 180, box[0]:box[0] + 220].mean()
    assert inside > 2 * heat.mean() * 0.9 or inside > 0.5


@pytest.fixture(scope="module")
def specialties(settings):
    return open_store(settings).create_project(f"specialties-{uuid.uuid4().hex[:8]}", {
        "cardiology": "heart and ECG findings",
        "dermatology": "skin rash and lesions",
        "orthopedics": "bone fractures and joints",
    }, user="test")


@pytest.mark.parametrize("text, keyword, label", [
    ("The patient came in today for a routine visit and the ECG was reviewed with the family", "ECG", "cardiology"),
    ("Seen in clinic this morning, a new rash on the left arm, will follow up next week", "rash", "dermatology"),
    ("Follow-up appointment: fracture of the wrist is healing, review in two weeks", "fracture", "orthopedics"),
])
def test_the_deciding_keyword_gets_the_top_attribution(engine, specialties, text, keyword, label):
    blank = Image.new("RGB", (320, 240), "white")
    page = OcrResult(text=text, words=[], ms=0.0, angle=0)
    prediction = engine.predict(blank, specialties, ocr_result=page, with_explanation=True)
    assert prediction.label == label
    explanation = prediction.explanation
    assert explanation.top_words(1)[0][0] == keyword
    assert [w for w, _ in explanation.word_attribution] == text.split()
    assert all(0.0 <= s <= 1.0 for _, s in explanation.word_attention)
    assert max(s for _, s in explanation.word_attention) == 1.0


def test_explanations_come_at_the_image_resolution_with_a_peak_inside(engine, specialties):
    image = Image.new("RGB", (900, 350), "white")
    image.paste(Image.fromarray(data.chelsea()).resize((200, 160)), (600, 100))
    page = OcrResult(text="skin lesion on the arm", words=[], ms=0.0, angle=0)
    explanation = engine.predict(image, specialties, ocr_result=page, with_explanation=True).explanation
    assert explanation.heatmap.shape == (350, 900)
    assert 0.0 <= explanation.heatmap.min() and explanation.heatmap.max() <= 1.0
    x, y = explanation.heatmap_peak
    assert 0 <= x < 900 and 0 <= y < 350
    assert explanation.text_to_image is None  # only cross-attention models have one


def test_cross_attention_models_explain_where_the_text_looks(engine, settings):
    from fusion.ml.model import ModelConfig
    from fusion.ml.zeroshot import build_zero_shot_model

    labels = {"cat photo": "a photo of a cat", "invoice": "a billing invoice"}
    project = open_store(settings).create_project(f"xattn-{uuid.uuid4().hex[:8]}", labels, user="test")
    config = ModelConfig(list(labels), labels, "cross_attention", version="v1")
    build_zero_shot_model(config, engine.image_encoder, engine.text_encoder).save(project.model_dir("v1"))
    project = open_store(settings).set_active_model(project.name, "v1")

    image = Image.fromarray(data.chelsea())
    page = OcrResult(text="my cat at home", words=[], ms=0.0, angle=0)
    prediction = engine.predict(image, project, ocr_result=page, with_explanation=True)
    assert prediction.model_version == "v1"
    grid = prediction.explanation.text_to_image
    assert grid is not None and grid.shape == (image.height, image.width)
    assert grid.max() == pytest.approx(1.0, abs=0.02) and grid.min() == pytest.approx(0.0, abs=0.02)


def test_explanations_run_on_a_background_thread_that_flushes_denormals(engine, specialties):
    """A confident prediction's gradients underflow into denormals, ~20x slower on x86: the
    explanation flushes them on its thread, which yields the CPU to predictions."""
    def denormals_survive() -> bool:
        return torch.tensor([1e-39]).mul(1.0).item() != 0.0       # 1e-39: a denormal float32

    engine.explainer.submit(torch.set_flush_denormal, False).result()   # as a fresh thread
    assert engine.explainer.submit(denormals_survive).result()
    page = OcrResult(text="ECG reviewed", words=[], ms=0.0, angle=0)
    engine.predict(Image.new("RGB", (64, 64), "white"), specialties, ocr_result=page, with_explanation=True)
    assert not engine.explainer.submit(denormals_survive).result()
    if sys.platform == "linux":
        niceness = engine.explainer.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result()
        assert niceness > os.getpriority(os.PRIO_PROCESS, 0)
    # Its smaller thread team stays its own: a thread started afterwards computes on every core.
    fresh = {}
    thread = threading.Thread(target=lambda: fresh.update(threads=torch.get_num_threads()))
    thread.start()
    thread.join()
    assert fresh["threads"] == torch.get_num_threads()
    assert engine.explainer.submit(torch.get_num_threads).result() == max(1, torch.get_num_threads() - 1)
