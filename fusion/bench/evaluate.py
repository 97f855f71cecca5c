"""`python -m fusion bench evaluate --json`: the Evaluate page on a 5,000-item test split.

A throwaway workspace whose one project holds 5,000 real (small) document images, labeled,
and one registered model version whose stored test predictions cover all of them (the
probabilities are drawn to be ~85% right, so the page has thousands of correct items and
hundreds of errors to list). The page is then run headless with Streamlit's AppTest: the
script time of its first render (reading the predictions) and of a warm rerun.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from fusion.core.settings import REPO_ROOT, Settings, load_settings

PROJECT = "bench-evaluate"


def _pages(labels: list[str]) -> list[bytes]:
    from fusion.demo.documents import render_item

    pages = []
    for k in range(len(labels)):
        image = render_item(k, seed=5)[0]
        image.thumbnail((360, 360))
        out = io.BytesIO()
        image.save(out, format="PNG")
        pages.append(out.getvalue())
    return pages


def _fill(store, settings: Settings, n: int) -> list[int]:
    """n labeled items with distinct image files (the same pages, made unique by a PNG comment)."""
    from fusion.bench.store import _unique_copy
    from fusion.imaging.images import check_image_file
    from fusion.store.labeling import NewItem

    labels = store.project(PROJECT).label_names
    pages = _pages(labels)
    ids = []
    for start in range(0, n, 1000):
        batch = [NewItem(check_image_file(_unique_copy(pages[i % len(labels)], "PNG", i), settings),
                         f"page-{i:05d}.png", label=labels[i % len(labels)]) for i in range(start, min(n, start + 1000))]
        ids += [item.id for item, _ in store.add_items(PROJECT, batch, user="bench")]
    return ids


def _register_version(store, settings: Settings, ids: list[int]) -> str:
    """The zero-shot model saved as v1, with drawn test probabilities and the scores they give."""
    from fusion.ml import registry
    from fusion.ml.evaluation import scores
    from fusion.ml.metrics import VersionMetrics
    from fusion.ml.model import ModelConfig
    from fusion.ml.pipeline import get_engine
    from fusion.ml.zeroshot import build_zero_shot_model

    project = store.project(PROJECT)
    labels = project.label_names
    truth = store.labels_of(PROJECT, ids)
    targets = np.array([labels.index(truth[i]) for i in ids])
    rng = np.random.default_rng(0)
    probs = {}
    for head, right in (("fused", 0.85), ("image", 0.6), ("text", 0.7)):
        logits = rng.normal(0, 1, (len(ids), len(labels)))
        hit = rng.random(len(ids)) < right
        logits[np.arange(len(ids)), np.where(hit, targets, rng.integers(0, len(labels), len(ids)))] += 3
        p = np.exp(logits)
        probs[head] = p / p.sum(1, keepdims=True)
    metrics = VersionMetrics(test={h: scores(p, targets, labels) for h, p in probs.items()},
                             zero_shot_test={h: scores(np.full_like(p, 1 / len(labels)), targets, labels)
                                             for h, p in probs.items()},
                             counts={"train": 0, "val": 0, "test": len(ids)})
    engine = get_engine(settings)
    fusion = build_zero_shot_model(ModelConfig(labels, project.labels), engine.image_encoder, engine.text_encoder)

    def test_predictions(directory: Path) -> None:
        (directory / "test_predictions.json").write_text(json.dumps({
            "item_ids": ids, "labels": labels,
            "probs": {h: np.round(p, 5).tolist() for h, p in probs.items()}}))

    version = registry.save_version(store, project, fusion, test_predictions, parent=None, user="bench", job_id=None,
                                    params={"mode": "head"}, data={}, metrics=metrics)
    registry.promote(store, PROJECT, version, "bench")
    return version


def _page_seconds(workspace: Path) -> dict:
    """Script time of the Evaluate page: first render (reads 5,000 predictions) and a warm rerun."""
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import AppTest

    os.environ["FUSION_HOME"] = str(workspace)
    PagesManager.uses_pages_directory = False
    app = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=600)
    app.run()                                         # loads the encoders and OCR once, as a served app does
    assert not app.exception, app.exception
    t = time.perf_counter()
    app.switch_page("pages/evaluate.py").run()
    first = time.perf_counter() - t
    assert not app.exception and app.title[0].value == "Evaluate", app.exception
    t = time.perf_counter()
    app.run()
    warm = time.perf_counter() - t
    errors_listed = max(len(d.value) for d in app.dataframe)
    return {"first_render_s": round(first, 2), "warm_rerun_s": round(warm, 2), "largest_table_rows": errors_listed}


def bench_evaluate(settings: Settings, items: int = 5000) -> dict:
    settings.home.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get("FUSION_HOME")
    with tempfile.TemporaryDirectory(dir=settings.home) as tmp:
        workspace = Path(tmp)
        (workspace / "fusion.toml").write_text(f'demo_project = "{PROJECT}"\n')
        bench_settings = load_settings(home=workspace)
        from fusion.demo.documents import LABELS
        from fusion.store.labeling import Store

        store = Store(bench_settings)
        store.create_project(PROJECT, LABELS, user="bench")
        t = time.perf_counter()
        ids = _fill(store, bench_settings, items)
        _register_version(store, bench_settings, ids)
        setup = time.perf_counter() - t
        try:
            page = _page_seconds(workspace)
        finally:
            os.environ.pop("FUSION_HOME") if previous is None else os.environ.update(FUSION_HOME=previous)
            store.db.engine.dispose()
    return {"test_items": items, "setup_s": round(setup, 1), "evaluate_page": page,
            "targets": {"first_render_s": 2.0}}
