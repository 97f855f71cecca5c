"""fusion.services.review: uploads become items once, the queue serves the least confident first, decisions
land against the version the reviewer opened (no models needed: predictions are built here)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fusion.services import review
from fusion.core.errors import BadImage
from fusion.ml.pipeline import Prediction
from fusion.core.settings import load_settings
from fusion.store.labeling import StaleEdit, Store


def png(seed: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def shown(label: str, confidence: float) -> Prediction:
    probs = {"cat": confidence, "dog": 1 - confidence} if label == "cat" else {"cat": 1 - confidence, "dog": confidence}
    return Prediction(label, confidence, probs, probs, probs, "", "", "v2", None, {})


@pytest.fixture
def store(tmp_path, database_url):
    store = Store(load_settings(home=tmp_path, database_url=database_url))
    store.create_project("pets", {"cat": "", "dog": ""}, user="ann")
    return store


def test_an_upload_is_one_item_however_often_it_comes(store):
    first = review.add_upload(store, "pets", "a.png", png(1), "ann")
    again = review.add_upload(store, "pets", "copy.png", png(1), "bob")
    assert again.id == first.id and store.project_info("pets")["items"] == 1
    with pytest.raises(BadImage):
        review.add_upload(store, "pets", "x.png", b"not an image", "ann")


def test_the_queue_serves_undecided_items_least_confident_first(store):
    items = [review.add_upload(store, "pets", f"{i}.png", png(10 + i), "ann") for i in range(4)]
    for item, confidence in zip(items[:3], (0.9, 0.55, 0.7)):
        store.record_prediction("pets", item.id, "cat", confidence, {"cat": confidence}, "v2")
    assert review.next_in_queue(store, "pets").id == items[3].id          # never predicted: first
    store.skip("pets", items[3].id, "ann", expected_version=1)
    assert review.next_in_queue(store, "pets").id == items[1].id          # then 0.55 < 0.7 < 0.9
    assert review.next_in_queue(store, "pets", skip_ids={items[1].id}).id == items[2].id


def test_decide_saves_the_caption_then_the_label_and_refuses_a_stale_screen(store):
    item = review.add_upload(store, "pets", "a.png", png(2), "ann")
    saved = review.decide(store, "pets", item, item.version, "dog", "bob", shown("cat", 0.8), caption="a dog")
    assert (saved.label, saved.status, saved.caption, saved.version) == ("dog", "corrected", "a dog", 3)
    actions = [(h.action, h.user, h.shown_label, h.shown_confidence, h.model_version)
               for h in store.history("pets", item.id)]
    assert actions[-2:] == [("caption", "bob", None, None, None), ("correct", "bob", "cat", 0.8, "v2")]
    with pytest.raises(StaleEdit, match="changed by bob"):   # cy opened it at version 1
        review.decide(store, "pets", item, 1, "cat", "cy", shown("cat", 0.8))
    assert store.item("pets", item.id).label == "dog"


def test_a_refused_decision_saves_none_of_its_caption_page_text_or_label(store):
    from fusion.imaging.ocr import OcrResult

    item = review.add_upload(store, "pets", "a.png", png(3), "ann")
    review.decide(store, "pets", item, item.version, "cat", "bob", shown("cat", 0.8))   # bob first
    before = [h.id for h in store.history("pets", item.id)]
    with pytest.raises(StaleEdit, match="your edit was not saved"):     # cy opened it before bob decided
        review.decide(store, "pets", item, item.version, "dog", "cy", shown("cat", 0.8), caption="cy's caption",
                      page_text=OcrResult("cy's page text"))
    now = store.item("pets", item.id)
    assert (now.label, now.caption, now.ocr_text, now.updated_by) == ("cat", item.caption, item.ocr_text, "bob")
    assert [h.id for h in store.history("pets", item.id)] == before


def _decide_then_die_at(url, home, item_id, step, done):
    """In a child: a decision with a caption, page text and label, SIGKILLed as `step` starts."""
    import os
    import signal

    from fusion.imaging.ocr import OcrResult

    store = Store(load_settings(home=home, database_url=url))
    real = getattr(store, step)

    def killed(*args, **kwargs):
        if step == "set_label":           # the earlier steps have run: the transaction holds them
            os.kill(os.getpid(), signal.SIGKILL)
        real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
    setattr(store, step, killed)
    item = store.item("pets", item_id)
    review.decide(store, "pets", item, item.version, "dog", "bob", shown("cat", 0.8), caption="new caption",
                  page_text=OcrResult("new page text"))
    done.set()


@pytest.mark.parametrize("step", ["set_caption", "set_page_text", "set_label"])
def test_a_decision_killed_between_its_steps_is_saved_whole_or_not_at_all(store, step):
    import multiprocessing

    item = review.add_upload(store, "pets", f"{step}.png", png(4), "ann")
    store.db.engine.dispose()                 # no connection of the parent's crosses the fork
    context = multiprocessing.get_context("fork")
    done = context.Event()
    child = context.Process(target=_decide_then_die_at,
                            args=(store.settings.database_url, store.settings.home, item.id, step, done))
    child.start()
    child.join(120)
    assert child.exitcode == -9 and not done.is_set()
    now = store.item("pets", item.id)
    assert (now.label, now.caption, now.ocr_text, now.version) == (None, item.caption, item.ocr_text, 1)
    assert [h.action for h in store.history("pets", item.id)] == ["add"]
    # and a decision that runs to the end saves every step
    saved = review.decide(store, "pets", now, now.version, "dog", "bob", shown("cat", 0.8), caption="new caption")
    assert (saved.label, saved.caption, saved.version) == ("dog", "new caption", 3)
