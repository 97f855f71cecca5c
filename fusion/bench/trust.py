"""`python -m fusion bench trust --data DIR --json`: does the OOD score tell pages of no class apart?

The demo project's active model (built if missing). In distribution: its test split, with its
stored text and caption and again as read by the project's OCR (as an upload of it is). Out of
distribution: every page of DIR (an index.jsonl of real documents, as shared/eval/ocr, read by
the project's own OCR, cached under <home>/bench-learning/ocr), and generated pages of no class:
blank (white, grey, a 12000x300 strip), noise and photo-like ones (smooth colour fields with shapes),
also read by OCR. Reported: AUROC of the OOD score, the share of each group flagged by it (score
above 1) and the share flagged "needs review" for any reason (fusion.ml.reasons), with the heads
that abstained.
"""
from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from fusion.core.settings import Settings

GENERATED = 5   # pages of each generated kind


def generated_pages(folder: Path, seed: int = 0) -> dict[str, list[Path]]:
    """Blank, noise and photo-like pages of no class, written as PNGs into `folder`."""
    rng = np.random.default_rng(seed)
    kinds: dict[str, list[Image.Image]] = {
        "blank": [Image.new("RGB", (1240, 1754), "white"), Image.new("RGB", (12000, 300), "white"),
                  Image.new("RGB", (800, 800), (128, 128, 128)), Image.new("RGB", (1000, 700), (250, 248, 240)),
                  Image.new("RGB", (640, 480), "black")],
        "noise": [Image.fromarray(rng.integers(0, 256, (900, 700, 3), dtype=np.uint8)) for _ in range(GENERATED)],
        "photo-like": [_photo_like(rng) for _ in range(GENERATED)],
    }
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, list[Path]] = {}
    for kind, images in kinds.items():
        paths[kind] = []
        for n, image in enumerate(images):
            path = folder / f"{kind}-{n}.png"
            image.save(path)
            paths[kind].append(path)
    return paths


def _photo_like(rng: np.random.Generator) -> Image.Image:
    """A smooth colour field (sky, ground) with blurred ellipses and rectangles: no text, no page."""
    h, w = 600, 800
    y = np.linspace(0, 1, h)[:, None, None]
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    field = (top * (1 - y) + bottom * y) * np.ones((1, w, 1))
    image = Image.fromarray(field.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(4, 9))):
        x0, y0 = int(rng.integers(0, w - 100)), int(rng.integers(0, h - 100))
        box = (x0, y0, x0 + int(rng.integers(60, 300)), y0 + int(rng.integers(60, 300)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return image.filter(ImageFilter.GaussianBlur(3))


def _flags(predictions: list[dict], threshold: float) -> dict:
    from fusion.ml.reasons import review_reasons

    scores = [p["ood_score"] for p in predictions]
    reviewed = []
    for p in predictions:
        label = max(p["fused"], key=p["fused"].get)
        reviewed.append(bool(review_reasons({"label": label, "confidence": p["fused"][label], "probs_image": p["image"],
                                             "probs_text": p["text"], "abstained": p["abstained"],
                                             "ood_score": p["ood_score"], "in_distribution": p["ood_score"] <= 1.0,
                                             "ood_parts": p["ood_parts"], "review_threshold": threshold})))
    return {"pages": len(scores), "flagged_ood": round(float(np.mean([s > 1.0 for s in scores])), 4),
            "needs_review": round(float(np.mean(reviewed)), 4), "median_ood_score": round(statistics.median(scores), 3),
            "text_abstained": sum("text" in p["abstained"] for p in predictions),
            "image_abstained": sum("image" in p["abstained"] for p in predictions)}


def bench_trust(settings: Settings, data: Path) -> dict:
    from sklearn.metrics import roc_auc_score

    from fusion.bench.learning import _ocr_texts
    from fusion.demo.build import ensure_demo_project
    from fusion.core.errors import FusionError
    from fusion.ml.model import FusionModel
    from fusion.ml.pipeline import compose_text, get_engine
    from fusion.ml.inference import item_predictions
    from fusion.store.labeling import open_store
    from fusion.ml.training_data import labeled_examples

    project = ensure_demo_project(settings)
    if FusionModel.load(project.model_dir(project.active_model)).config.ood_bank == 0:
        raise FusionError(f"the demo project's active model {project.active_model} predates OOD scores; "
                          "train and promote a new version first")
    engine = get_engine(settings)
    examples = labeled_examples(open_store(settings), project.name)
    test = examples.split_index("test").tolist()
    test_paths = [examples.paths[i] for i in test]
    # In distribution twice: with the items' stored text and caption (what training read), and as
    # an upload of the same page is read (its OCR, no caption).
    groups = {"in_distribution": (test_paths, [examples.texts[i] for i in test]),
              "in_distribution_ocr": (test_paths, [compose_text(t, "") for t in _ocr_texts(engine, settings.home,
                                                                                            test_paths)])}
    index = Path(data) / "index.jsonl"
    if not index.is_file():
        raise FusionError(f"{index} not found: bench trust needs --data FOLDER with an index.jsonl of pages")
    pages = [json.loads(line) for line in index.read_text().splitlines() if line.strip()]
    by_kind: dict[str, list[Path]] = {}
    for page in pages:
        by_kind.setdefault(f"real:{page.get('doc_type') or 'other'}", []).append(Path(data) / page["image"])
    with tempfile.TemporaryDirectory() as folder:
        by_kind |= {f"generated:{k}": v for k, v in generated_pages(Path(folder)).items()}
        for kind, paths in by_kind.items():
            groups[kind] = (paths, [compose_text(t, "") for t in _ocr_texts(engine, settings.home, paths)])
        cache = settings.home / "bench-trust" / "features"
        found = {kind: item_predictions(engine, project, paths, texts, cache) for kind, (paths, texts) in groups.items()}
    outside = [p for kind, ps in found.items() if not kind.startswith("in_distribution") for p in ps]

    def auroc(inside: str) -> float:
        scores = [p["ood_score"] for p in found[inside]] + [p["ood_score"] for p in outside]
        return round(float(roc_auc_score([0] * len(found[inside]) + [1] * len(outside), scores)), 4)

    return {"device": engine.device_name, "model_version": project.active_model,
            "auroc": auroc("in_distribution"), "auroc_in_distribution_read_by_ocr": auroc("in_distribution_ocr"),
            "in_distribution": _flags(found["in_distribution"], settings.review_threshold),
            "in_distribution_read_by_ocr": _flags(found["in_distribution_ocr"], settings.review_threshold),
            "out_of_distribution": _flags(outside, settings.review_threshold),
            "by_group": {kind: _flags(ps, settings.review_threshold) for kind, ps in found.items()},
            "goal": {"auroc": 0.95, "ood_flagged_at_least": 0.95, "in_distribution_flagged_at_most": 0.05}}
