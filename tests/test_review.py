"""fusion.review: uploads become items once, the queue serves the least confident first, decisions
land against the version the reviewer opened (no models needed: predictions are built here)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fusion import review
from fusion.errors import BadImage
from fusion.pipeline import Prediction
from fusion.settings import load_settings
from fusion.store import StaleEdit, Store


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
