"""The Review page under AppTest: an edit of the page text is saved with the decision (the item's
text, a history row, the search), and the page opens with it next time; de-identified, the text
box stays read-only and nothing is saved from it."""
from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from streamlit.testing.v1 import AppTest

TIMEOUT = 300  # the first run loads the encoders and EasyOCR
APP = Path(__file__).resolve().parent.parent / "app.py"
NEW_WORD = "quokkanote"   # in no demo page: the search finds only the edited item


def page_bytes() -> bytes:
    """A lab page, a new item on every run (a random dot in the corner)."""
    image = Image.new("RGB", (900, 220), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 2, 2), fill=tuple(os.urandom(3)))
    font = ImageFont.load_default(size=40)
    draw.text((30, 40), "Ferritin 85 ng/mL", fill="black", font=font)
    draw.text((30, 130), "Sodium 139 mmol/L", fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def opened(data: bytes, project: str | None = None) -> AppTest:
    app = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    app.session_state["user"] = "reviewer"
    if project:
        app.session_state["project"] = project
    app.run()
    app.file_uploader[0].set_value(("labs.png", data, "image/png")).run()
    assert not app.exception, app.exception
    return app


def test_an_edited_page_text_is_saved_on_accept_and_shown_next_time(demo_project):
    from fusion.imaging.images import image_sha256
    from fusion.core.settings import load_settings
    from fusion.store.labeling import ItemFilter, open_store

    data = page_bytes()
    app = opened(data)
    read = app.text_area(key="ocr_text").value
    assert "ferritin" in read.lower()
    typed = f"{read}\n{NEW_WORD} follow-up"
    app.text_area(key="ocr_text").set_value(typed).run()
    assert not app.exception, app.exception
    assert NEW_WORD in app.session_state["prediction"].ocr_text    # predicted from the edit
    app.button(key="accept").click().run()
    assert not app.exception, app.exception

    store = open_store(load_settings())
    item = store.item(demo_project.name, image_sha256(data)[:12])
    assert (item.ocr_text, item.status, item.updated_by) == (typed, "accepted", "reviewer")
    text_row, decision = store.history(demo_project.name, item.id)[-2:]
    assert (text_row.action, text_row.user, text_row.old_text, text_row.new_text) == ("text", "reviewer", read, typed)
    assert text_row.at is not None and decision.action == "accept"
    found = store.list_items(demo_project.name, ItemFilter(search=NEW_WORD)).items
    assert [i.id for i in found] == [item.id]

    # Opened again, the page shows and predicts from the stored edit (OCR would read the page),
    # and writes nothing but the machine's new prediction.
    before = len(store.history(demo_project.name, item.id))
    again = opened(data)
    assert again.text_area(key="ocr_text").value == typed
    assert NEW_WORD in again.session_state["prediction"].ocr_text
    assert {h.action for h in store.history(demo_project.name, item.id)[before:]} <= {"predict"}
    assert store.item(demo_project.name, item.id).ocr_text == typed


def test_de_identified_the_page_text_is_read_only_and_not_saved(demo_project, deidentifying):
    from fusion.services import review
    from fusion.imaging.ocr import ENGINE
    from fusion.core.settings import load_settings
    from fusion.store.labeling import open_store

    store = open_store(load_settings())
    data = page_bytes()
    item = review.add_upload(store, demo_project.name, "labs.png", data, "reviewer")
    words = [{"text": "Ferritin", "conf": 0.99, "box": [30, 40, 200, 80]}]
    store.set_ocr(demo_project.name, item.id, "Ferritin 85 ng/mL\nPatient: Jane Doe", words, ENGINE, "model")

    app = opened(data)
    box = app.text_area(key="ocr_text")
    assert box.disabled and "[NAME]" in box.value and "Doe" not in box.value
    # A disabled box can't be typed in (AppTest refuses too); even a value set behind it is not saved.
    app.session_state["ocr_text"] = f"{box.value} {NEW_WORD}"
    app.button(key="accept").click().run()
    assert not app.exception, app.exception
    saved = store.item(demo_project.name, item.id)
    assert (saved.status, saved.ocr_text) == ("accepted", "Ferritin 85 ng/mL\nPatient: Jane Doe")
    assert "text" not in [h.action for h in store.history(demo_project.name, item.id)]
