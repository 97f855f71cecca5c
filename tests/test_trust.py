"""Trust: heads abstain with nothing to read, the OOD score flags pages of no class, and every
prediction says why in words."""
from __future__ import annotations

import torch
from PIL import Image, ImageDraw, ImageFont

from fusion.ml import ood
from fusion.ml.abstain import image_present
from fusion.imaging.ocr import OcrResult


def test_the_ood_score_is_one_at_the_threshold_and_far_pages_score_above():
    g = torch.Generator().manual_seed(0)
    centres_image, centres_text = torch.randn(3, 64, generator=g) * 3, torch.randn(3, 32, generator=g) * 3

    def pages(n, shift=0.0):
        which = torch.arange(n) % 3
        return (centres_image[which] + torch.randn(n, 64, generator=g) + shift,
                centres_text[which] + torch.randn(n, 32, generator=g))

    class Holder:       # what ood.fit fills: a model's buffers
        config = type("Config", (), {"ood_bank": 0})()
        ood_scales = torch.ones(3)

    holder = Holder()
    fitted = ood.fit(holder, *pages(300), *pages(60))
    assert fitted["bank"] == 300 and holder.ood_image_bank.shape == (300, 64)
    inside = ood.score(*pages(400), holder.ood_image_bank, holder.ood_text_bank, holder.ood_scales)
    assert inside.shape == (400, 3) and torch.equal(inside[:, 0], inside[:, 1:].amax(1))
    assert (inside[:, 0] > 1).float().mean() <= 0.06                 # ~2% of usual pages flagged
    unusual_image, usual_text = pages(100, shift=6.0)
    random_text = torch.randn(100, 32, generator=g) * 3              # a text unlike every class
    assert (ood.score(unusual_image, usual_text, holder.ood_image_bank, holder.ood_text_bank,
                      holder.ood_scales)[:, 1] > 1).float().mean() > 0.95
    assert (ood.score(pages(100)[0], random_text, holder.ood_image_bank, holder.ood_text_bank,
                      holder.ood_scales)[:, 2] > 1).float().mean() > 0.95


def test_a_blank_image_carries_nothing_and_a_page_of_text_does():
    blank = torch.full((2, 3, 224, 224), 255, dtype=torch.uint8)
    blank[:, 2] = 240                                                # an off-white tint is still blank
    page = blank.clone()
    page[1, :, 100:110, 20:200] = 0                                  # one line of "text"
    assert image_present(blank).tolist() == [False, False] and image_present(page).tolist() == [False, True]


def page_of_words(lines: list[str], size=(900, 600)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for n, line in enumerate(lines):
        draw.text((40, 40 + 60 * n), line, fill="black", font=ImageFont.load_default(size=36))
    return image


def test_a_blank_strip_with_no_text_is_none_of_these_with_both_heads_abstaining(engine, demo_project):
    strip = Image.new("RGB", (12000, 300), "white")
    prediction = engine.predict(strip, demo_project, ocr_result=OcrResult(text="", words=[], ms=0.0, angle=0),
                                with_explanation=True)
    assert set(prediction.abstained) == {"text", "image"}
    uniform = 1 / len(demo_project.labels)
    assert all(abs(p - uniform) < 1e-5 for probs in (prediction.probs, prediction.probs_text, prediction.probs_image)
               for p in probs.values())
    assert prediction.in_distribution is False and prediction.to_dict()["needs_review"]
    assert "Nothing to read" in prediction.to_dict()["explanation_text"]


def test_no_text_makes_the_fused_head_the_image_head(engine, demo_project):
    page = page_of_words(["", ""])
    ImageDraw.Draw(page).rectangle((100, 100, 700, 400), outline="black", width=8)   # a drawing, no words
    prediction = engine.predict(page, demo_project, ocr_result=OcrResult(text="", words=[], ms=0.0, angle=0))
    assert set(prediction.abstained) == {"text"}
    assert prediction.probs == prediction.probs_image
    assert "The text head abstained" in prediction.to_dict()["explanation_text"]


def test_a_demo_page_is_in_distribution_and_its_reason_names_its_words_and_heads(engine, demo_project, settings):
    from fusion.store.labeling import open_store
    from fusion.services.review import stored_ocr  # noqa: F401  (the Review page's source of page text)
    from fusion.imaging.images import load_image

    store = open_store(settings)
    item = next(i for i in store.iter_items(demo_project.name) if i.split == "test")
    page = OcrResult(text=item.ocr_text, words=[], ms=0.0, angle=0)
    prediction = engine.predict(load_image(store.image_path(item)), demo_project, caption=item.caption,
                                ocr_result=page, with_explanation=True)
    d = prediction.to_dict()
    assert prediction.abstained == {} and prediction.in_distribution is True
    text = d["explanation_text"]
    assert text.startswith(f"Fused: {d['label']} (")
    assert max(d["probs_text"], key=d["probs_text"].get) in text
    assert max(d["probs_image"], key=d["probs_image"].get) in text
    assert all(w in text for w, s in d["top_words"][:3] if s > 0)
    assert "of the page" in text                                     # where the image weighed most
