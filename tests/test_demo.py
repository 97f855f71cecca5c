"""The demo project: built on first run, fusion beats each modality alone by >= 10 points."""
from __future__ import annotations

from fusion.demo.build import DEMO_USER, TEXT_SOURCE, ensure_demo_project
from fusion.ml.features import cache_features, load_feature_set
from fusion.imaging.images import load_image
from fusion.ml.model import FusionModel
from fusion.ml.pipeline import compose_text
from fusion.store.labeling import ItemFilter, open_store
from fusion.ml.finetune import HeadsOnFeatures
from fusion.ml.registry import get_version
from fusion.ml.inference import predict_logits
from fusion.ml.train import quick_scores


def _test_items(settings):
    store = open_store(settings)
    items = store.list_items(settings.demo_project, ItemFilter(split="test", sort="id"), limit=1000).items
    return store, [i for i in items if i.added_by == DEMO_USER]


def demo_items(settings, demo_project):
    """The generator's items (the app and browser tests upload more into the same project)."""
    return [i for i in open_store(settings).iter_items(demo_project.name) if i.added_by == DEMO_USER]


def test_demo_items_live_in_the_store(demo_project, settings):
    items = demo_items(settings, demo_project)
    assert len(items) == 480 and all(i.status == "accepted" and i.label for i in items)
    store, items = _test_items(settings)
    assert {i.label for i in items} == set(demo_project.labels)
    assert all(i.ocr_engine == TEXT_SOURCE and i.ocr_text and store.image_path(i).is_file() for i in items)


def test_demo_baseline_fused_beats_best_single_modality_by_ten_points(demo_project, engine, settings):
    assert demo_project.active_model == "v1"
    model_dir = demo_project.model_dir("v1")
    metrics = get_version(open_store(settings), demo_project.name, "v1").metrics

    # Re-evaluate the saved model on the held-out split from the stored files, not from the registry.
    store, items = _test_items(settings)
    assert len(items) >= 50
    files = cache_features(engine, demo_project.directory / "features", [store.image_path(i) for i in items],
                           [compose_text(i.ocr_text, i.caption) for i in items])
    index = {name: k for k, name in enumerate(demo_project.label_names)}
    test = load_feature_set(files, [index[i.label] for i in items])
    scores = quick_scores(predict_logits(HeadsOnFeatures(FusionModel.load(model_dir)), test, "cpu"), test.targets)
    assert {h: (s.accuracy, s.macro_f1) for h, s in scores.items()} == \
        {h: (metrics.test[h].accuracy, metrics.test[h].macro_f1) for h in scores}

    fused, image, text = (scores[h].accuracy for h in ("fused", "image", "text"))
    print(f"demo test accuracy: fused {fused:.3f}, image-only {image:.3f}, text-only {text:.3f}")
    assert fused >= max(image, text) + 0.10
    assert fused >= metrics.zero_shot_test["fused"].accuracy  # training never ends below zero-shot
    assert len(demo_project.labels) >= 6 and sum(metrics.counts.values()) >= 400


def test_demo_is_built_once(demo_project, settings):
    model_file = demo_project.model_dir("v1") / "model.safetensors"
    stamp = model_file.stat().st_mtime_ns
    again = ensure_demo_project(settings)
    assert again.active_model == "v1" and model_file.stat().st_mtime_ns == stamp
    assert not demo_project.model_dir("v2").exists()
    assert len(demo_items(settings, demo_project)) == 480


def test_demo_pages_through_real_ocr_are_classified(demo_project, engine, settings):
    """The baseline was trained on the generator's text; real OCR of the pages must agree."""
    store, items = _test_items(settings)
    picked = [next(i for i in items if i.label == label) for label in list(demo_project.labels)[:4]]
    right = 0
    for item in picked:
        image = load_image(store.image_path(item))
        prediction = engine.predict(image, demo_project, caption=item.caption)
        assert prediction.ocr is not None and len(prediction.ocr.words) > 10
        right += prediction.label == item.label
        distinctive = {w for w in item.ocr_text.lower().split() if len(w) >= 5 and w.isalpha()}
        read = set(prediction.ocr_text.lower().split())
        assert len(distinctive & read) >= 0.6 * len(distinctive), sorted(distinctive - read)
    assert right >= 3, f"only {right}/4 demo pages classified right through OCR"
