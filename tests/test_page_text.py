"""A reviewer's page-text edit: saved with the decision as the item's text, in its own history row
(old and new text, who, when), searched, re-read from the store next time; refused when stale
(no models needed: the readings and predictions are built here)."""
from __future__ import annotations

import io
import json
from datetime import timedelta

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import create_engine, inspect, select, text

from fusion.services import review
from fusion.imaging.images import check_image_file
from fusion.imaging.ocr import ENGINE, OcrResult, Word
from fusion.ml.pipeline import Prediction
from fusion.store.schema import ItemRow
from fusion.core.settings import load_settings
from fusion.store.labeling import ItemFilter, NewItem, StaleEdit, Store, utcnow

WORDS = [Word("Hemoglobin", 0.98, (10, 10, 120, 30)), Word("13.2", 0.95, (130, 10, 170, 30))]


def png(seed: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def shown(label: str = "cat", confidence: float = 0.8) -> Prediction:
    probs = {"cat": confidence, "dog": 1 - confidence} if label == "cat" else {"cat": 1 - confidence, "dog": confidence}
    return Prediction(label, confidence, probs, probs, probs, "", "", "v2", None, {})


@pytest.fixture
def store(tmp_path, database_url):
    store = Store(load_settings(home=tmp_path, database_url=database_url))
    store.create_project("pets", {"cat": "", "dog": ""}, user="ann")
    return store


def read_item(store: Store, seed: int = 1):
    """An uploaded item whose text EasyOCR read (as the Review page stores it on first opening)."""
    item = review.add_upload(store, "pets", f"{seed}.png", png(seed), "ann")
    return store.set_ocr("pets", item.id, "Hemoglobin 13.2", [w.to_dict() for w in WORDS], ENGINE, "model")


def edited(text: str, words=WORDS) -> OcrResult:
    return OcrResult(text, list(words))


def test_an_edited_page_text_is_saved_with_the_decision_in_its_own_history_row(store):
    item = read_item(store)
    before = utcnow() - timedelta(seconds=1)
    saved = review.decide(store, "pets", item, item.version, "cat", "bob", shown(),
                          page_text=edited("Hemoglobin 13.2 g/dL anaemia"))
    assert (saved.ocr_text, saved.ocr_engine, saved.label, saved.status, saved.version) == (
        "Hemoglobin 13.2 g/dL anaemia", ENGINE, "cat", "accepted", 3)
    history = store.history("pets", item.id)
    assert [h.action for h in history] == ["add", "ocr", "text", "accept"]
    row = history[2]
    assert (row.user, row.old_text, row.new_text, row.item_version) == (
        "bob", "Hemoglobin 13.2", "Hemoglobin 13.2 g/dL anaemia", 2)
    assert before <= row.at <= utcnow() + timedelta(seconds=1)
    assert (row.old_caption, row.new_caption, row.old_label, row.new_label) == (None, None, None, None)
    assert history[3].old_text is None and history[3].new_text is None   # other rows carry no text

    # Next time the item opens, its stored text is the edit, with the words EasyOCR read.
    again = review.stored_ocr(store, store.item("pets", item.id))
    assert again.text == "Hemoglobin 13.2 g/dL anaemia"
    assert [(w.text, w.box) for w in again.words] == [(w.text, w.box) for w in WORDS]


def test_a_skip_saves_the_edit_too_after_the_caption(store):
    item = read_item(store)
    saved = review.decide(store, "pets", item, item.version, None, "bob", shown(), caption="a note",
                          page_text=edited("Hemoglobin 12.9"))
    assert (saved.status, saved.caption, saved.ocr_text, saved.version) == ("skipped", "a note", "Hemoglobin 12.9", 4)
    assert [h.action for h in store.history("pets", item.id)][-3:] == ["caption", "text", "skip"]


def test_the_search_finds_a_word_only_in_the_edited_text(store):
    item = read_item(store)
    other = read_item(store, seed=2)
    assert store.list_items("pets", ItemFilter(search="ferritin")).total == 0
    review.decide(store, "pets", item, item.version, "dog", "bob", shown(),
                  page_text=edited("Hemoglobin 13.2 ferritin low"))
    for query in ("ferritin", "ferri", "hemoglobin ferritin"):   # whole words, a prefix, several words
        assert [i.id for i in store.list_items("pets", ItemFilter(search=query)).items] == [item.id], query
    assert {i.id for i in store.list_items("pets", ItemFilter(search="13.2")).items} == {item.id, other.id}
    # The old text is out of the index: a word only it had is found no more.
    review.decide(store, "pets", store.item("pets", item.id), store.item("pets", item.id).version, "dog", "bob",
                  shown(), page_text=edited("Hemoglobin 13.2"))
    assert store.list_items("pets", ItemFilter(search="ferritin")).total == 0
    # Other databases search with LIKE over the same column.
    like = store._search_like("ferritin")
    review.decide(store, "pets", store.item("pets", item.id), store.item("pets", item.id).version, "dog", "bob",
                  shown(), page_text=edited("Hemoglobin 13.2 ferritin"))
    with store.db.read() as session:
        assert list(session.scalars(select(ItemRow.id).where(like))) == [item.id]


def test_an_unchanged_text_writes_no_history_row(store):
    item = read_item(store)
    saved = review.decide(store, "pets", item, item.version, "cat", "bob", shown(),
                          page_text=edited("Hemoglobin 13.2"))
    assert saved.version == 2 and saved.ocr_text == "Hemoglobin 13.2"
    assert [h.action for h in store.history("pets", item.id)] == ["add", "ocr", "accept"]
    # NUL bytes are not stored: a text that differs only by them is unchanged too.
    saved = review.decide(store, "pets", saved, saved.version, "cat", "bob", shown(),
                          page_text=edited("Hemoglobin\x00 13.2"))
    assert [h.action for h in store.history("pets", item.id)] == ["add", "ocr", "accept", "accept"]


def test_a_stale_edit_is_refused_and_nothing_is_saved(store):
    item = read_item(store)
    review.decide(store, "pets", item, item.version, "dog", "cy", shown())   # cy decides first
    with pytest.raises(StaleEdit, match="changed by cy"):
        review.decide(store, "pets", item, item.version, "cat", "bob", shown(), page_text=edited("bob's text"))
    now = store.item("pets", item.id)
    assert (now.ocr_text, now.label, now.updated_by) == ("Hemoglobin 13.2", "dog", "cy")
    assert "text" not in [h.action for h in store.history("pets", item.id)]
    with pytest.raises(StaleEdit):
        store.set_page_text("pets", item.id, "x", "bob", expected_version=1)


def test_an_edit_of_demo_text_keeps_the_reading_it_started_from(store, tmp_path):
    """Demo and imported text has no EasyOCR words: the page read the page itself. An edit of that
    reading is stored with its words, so the page opens with the edit next time (no OCR again)."""
    file = check_image_file(png(3), load_settings(home=tmp_path))
    (item, _), = store.add_items("pets", [NewItem(file, "demo.png", ocr_text="generated text",
                                                  ocr_engine="demo generator text")], "demo")
    assert review.stored_ocr(store, item) is None and store.ocr_words(item) == []
    saved = review.decide(store, "pets", item, item.version, "cat", "bob", shown(),
                          page_text=edited("Hemoglobin 13.2 edited"))
    assert (saved.ocr_text, saved.ocr_engine) == ("Hemoglobin 13.2 edited", ENGINE)
    again = review.stored_ocr(store, saved)
    assert again.text == "Hemoglobin 13.2 edited" and [w.text for w in again.words] == ["Hemoglobin", "13.2"]
    row = [h for h in store.history("pets", item.id) if h.action == "text"][0]
    assert (row.old_text, row.new_text) == ("generated text", "Hemoglobin 13.2 edited")


def test_the_history_columns_come_with_a_migration(tmp_path):
    """A workspace at the previous schema gains the text columns; history stays append-only."""
    from fusion.store.database import _migrations_head, create_database_engine, schema_revision, upgrade_schema

    url = f"sqlite:///{tmp_path / 'fusion.db'}"
    engine = create_database_engine(url)
    upgrade_schema(engine, "0006")
    assert "new_text" not in {c["name"] for c in inspect(engine).get_columns("history")}
    engine.dispose()
    store = Store(load_settings(home=tmp_path))
    assert schema_revision(store.db.engine) == _migrations_head()   # 0007 or a later one
    assert {"old_text", "new_text"} <= {c["name"] for c in inspect(store.db.engine).get_columns("history")}
    store.create_project("pets", {"cat": "", "dog": ""}, user="ann")
    item = read_item(store)
    store.set_page_text("pets", item.id, "new", "bob", expected_version=item.version)
    with pytest.raises(Exception, match="append-only"), create_engine(url).begin() as c:
        c.execute(text("UPDATE history SET new_text = 'rewritten'"))


def test_the_cli_history_shows_a_page_text_edit(store, capsys):
    from fusion.cli.main import main

    item = read_item(store, seed=9)
    review.decide(store, "pets", item, item.version, "dog", "bob", shown(), page_text=edited("Hemoglobin 9.1 low"))
    assert main(["--home", str(store.settings.home), "history", "pets", str(item.id), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["history"]
    assert [(r["action"], r["old_text"], r["new_text"]) for r in rows if r["action"] == "text"] == [
        ("text", "Hemoglobin 13.2", "Hemoglobin 9.1 low")]
    assert main(["--home", str(store.settings.home), "history", "pets", str(item.id)]) == 0
    assert "page text 'Hemoglobin 9.1 low'" in capsys.readouterr().out
