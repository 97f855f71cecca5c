"""The review queue: each strategy serves the undecided item it should first, and pre-labeling
fills every undecided item's prediction (with the uncertainties the queue sorts by)."""
from __future__ import annotations

import math

import pytest

from fusion.services import review
from fusion.demo.build import DEMO_USER
from fusion.core.errors import FusionError
from fusion.core.progress import Progress
from fusion.imaging.images import check_image_file
from fusion.services.prelabel import prelabel_project
from fusion.core.settings import load_settings
from fusion.store.labeling import NewItem, Store, open_store, uncertainty

from conftest import ANNOTATOR


def project_of_demo_pages(settings, demo_project, name: str, count: int, into=None):
    """A project of `count` demo pages with their text, nobody's decision yet, in the demo's
    workspace or `into` another store."""
    demo = open_store(settings)
    store = into or demo
    if name not in store.project_names():
        store.create_project(name, demo_project.labels, user=ANNOTATOR)
        pages = [i for i in demo.iter_items(demo_project.name) if i.added_by == DEMO_USER][:count]
        store.add_items(name, [NewItem(check_image_file(demo.image_path(i), settings), i.filename,
                                       ocr_text=i.ocr_text, ocr_engine=i.ocr_engine, caption=i.caption)
                               for i in pages], user=ANNOTATOR)
    return store.project(name)


@pytest.fixture
def queue_store(settings, database_url, tmp_path):
    """The demo workspace's store (SQLite), or a fresh one on PostgreSQL."""
    return Store(load_settings(home=tmp_path, database_url=database_url)) if database_url else open_store(settings)


def test_uncertainty_measures():
    uniform = uncertainty({"a": 0.25, "b": 0.25, "c": 0.25, "d": 0.25})
    assert uniform["pred_entropy"] == pytest.approx(math.log(4), abs=1e-5) and uniform["pred_margin"] == 0
    sure = uncertainty({"a": 0.97, "b": 0.01, "c": 0.01, "d": 0.01},
                       {"image": {"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0}, "text": {"a": 0.0, "b": 1.0, "c": 0, "d": 0}})
    assert sure["pred_entropy"] < 0.2 and sure["pred_margin"] == pytest.approx(0.96)
    assert sure["pred_disagreement"] == pytest.approx(1.0) and uniform["pred_disagreement"] is None


def test_each_strategy_serves_its_most_uncertain_item_first(settings, demo_project, queue_store):
    store = queue_store
    project = project_of_demo_pages(settings, demo_project, "queue-order", 4, into=store)
    a, b, c, d = list(store.iter_items(project.name))[:4]
    labels = project.label_names
    spread = lambda *top: dict(zip(labels, [*top] + [(1 - sum(top)) / (len(labels) - len(top))] * (len(labels) - len(top))))  # noqa: E731
    agree = {"image": spread(0.9), "text": spread(0.9)}
    store.record_prediction(project.name, a.id, labels[0], 0.90, spread(0.90), "v1", heads=agree)
    store.record_prediction(project.name, b.id, labels[0], 0.50, spread(0.50, 0.48), "v1", heads=agree)  # thin margin
    store.record_prediction(project.name, c.id, labels[0], 0.40, spread(0.40, 0.15, 0.15), "v1", heads=agree)  # flat
    store.record_prediction(project.name, d.id, labels[0], 0.80, spread(0.80), "v1",
                            heads={"image": spread(0.95), "text": dict(zip(labels, [0.02, 0.9] + [0.08 / 4] * 4))})
    first = {s: review.next_in_queue(store, project.name, strategy=s).id for s in review.STRATEGIES
             if s not in ("random", "likely mislabeled")}   # the last: tests/test_dataset_tools.py
    assert first == {"least confident": c.id, "most uncertain (entropy)": c.id, "smallest margin": b.id,
                     "image and text disagree": d.id}
    assert review.next_in_queue(store, project.name, skip_ids={c.id}).id == b.id
    assert {review.next_in_queue(store, project.name, strategy="random").id for _ in range(20)} <= {a.id, b.id, c.id, d.id}
    store.set_label(project.name, c.id, labels[1], ANNOTATOR, store.item(project.name, c.id).version)
    assert review.next_in_queue(store, project.name).id == b.id      # decided items leave the queue
    with pytest.raises(FusionError, match="unknown queue strategy"):
        review.next_in_queue(store, project.name, strategy="alphabetical")


def test_prelabeling_fills_every_undecided_items_prediction(settings, demo_project, engine, queue_store):
    store = queue_store
    project = project_of_demo_pages(settings, demo_project, "prelabel", 30, into=store)
    seen = []
    result = prelabel_project(store.settings, store, project.name, report=seen.append)
    assert result["predicted"] == 30 and result["version"] == "zero-shot" and seen[-1].step == 30
    assert seen[0] == Progress("predicting", step=0, steps=30)   # the total is known from the start
    items = list(store.iter_items(project.name))
    assert all(i.status == "predicted" and i.pred_label in project.labels and i.pred_model == "zero-shot"
               for i in items)
    assert all(i.pred_entropy is not None and i.pred_margin is not None and i.pred_disagreement is not None
               and abs(sum(i.pred_heads["image"].values()) - 1) < 1e-4 for i in items)
    assert all(store.history(project.name, i.id)[-1].action == "predict" for i in items)
    most = review.next_in_queue(store, project.name, strategy="most uncertain (entropy)")
    assert most.pred_entropy == max(i.pred_entropy for i in items)


def test_review_page_queue_order_and_prelabel_job(settings, demo_project):
    """The Review page: pick a queue order, pre-label through the worker, and Next opens the
    item that order puts first."""
    import time

    from fusion.jobs.queue import Jobs

    from helpers import started

    project = project_of_demo_pages(settings, demo_project, "review-queue", 12)
    app = started(demo_project)
    app.selectbox(key="project").set_value(project.name).run()
    app.selectbox(key="queue_strategy").set_value("smallest margin").run()
    app.button(key="prelabel").click().run()
    assert not app.exception, app.exception
    jobs = Jobs(open_store(settings))
    job = jobs.list(project.name, limit=1, kind="prelabel")[0]
    end = time.monotonic() + 180
    while not jobs.get(job.id).finished and time.monotonic() < end:
        time.sleep(1)
    assert jobs.get(job.id).status == "succeeded", jobs.log_tail(job.id)
    expected = review.next_in_queue(open_store(settings), project.name, strategy="smallest margin")
    app.button(key="next_item").click().run()
    assert not app.exception, app.exception
    assert app.session_state["page"]["item_id"] == expected.id
    app.button(key="next_item").click().run()          # undecided, it stays first: Next must move on
    assert not app.exception, app.exception
    assert app.session_state["page"]["item_id"] not in (expected.id, None)
