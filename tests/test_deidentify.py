"""De-identification: the rules (what they catch and what they leave alone), redacted words and
OCR boxes, de-identified exports, the Review page with FUSION_DEIDENTIFY on, and logs that never
hold page text or captions."""
from __future__ import annotations

import csv
import io
import json
import os
import random
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from fusion.privacy.deidentified_view import phi_boxes, phi_words, redact_scored, redact_words, restore_placeholders
from fusion.privacy.deidentify import find_phi, redact

CATCHES = [   # (text, what it must become)
    ("Patient: Jane Q. Doe", "Patient: [NAME]"),
    ("Name: DOE, JANE  Sex: F", "Name: [NAME]  Sex: F"),
    ("Dr. Smith", "Dr. [NAME]"),
    ("Reviewed by Dr Nkemdi Status: final", "Reviewed by Dr [NAME] Status: final"),
    ("Ordered by Dr: Varga", "Ordered by Dr: [NAME]"),                  # OCR read the dot as a colon
    ("Mrs O'Brien-Smith", "Mrs [NAME]"),
    ("Seen by Jane Doe on March 14, 2024", "Seen by [NAME] on [DATE]"),
    ("MRN 00123456", "MRN [ID]"),
    ("MRN: 1234567 DOB 1980-10-07", "MRN: [ID] DOB [DATE]"),
    ("Patient ID: AB12345", "Patient ID: [ID]"),
    ("SSN 123-45-6789", "SSN [ID]"),
    ("account 88812345", "account [ID]"),
    ("DOB: 03/14/1962", "DOB: [DATE]"),
    ("14 Mar 1962", "[DATE]"),
    ("Date of birth: 14th March 1962", "Date of birth: [DATE]"),
    ("2024-01-05", "[DATE]"),
    ("admitted 5.1.2024", "admitted [DATE]"),
    ("D.O.B. 1/2/1950", "D.O.B. [DATE]"),
    ("DOB 1970-~ 1-26 Ward 2A", "DOB [DATE] Ward 2A"),                  # OCR garbled the digits
    ("Date: 2022-08- 19 Ward 2A", "Date: [DATE] Ward 2A"),
    ("(555) 123-4567", "[PHONE]"),
    ("call 555-123-4567 or +44 20 7946 0958", "call [PHONE] or [PHONE]"),
    ("Tel: 212.555.0188", "Tel: [PHONE]"),
    ("123 Main St, Springfield, IL 62704", "[ADDRESS]"),
    ("lives at 9 Oak Dr, Springfield.", "lives at [ADDRESS]."),
    ("Address: 42 Elm Road, Apt 3, Boston MA 02118", "Address: [ADDRESS]"),
    ("PO Box 123, Austin, TX 78701", "[ADDRESS]"),
    ("write to jane.doe@example.com", "write to [EMAIL]"),
    # Names without a label, and addresses of other countries (step 12)
    ("Patient John Smith was seen", "Patient [NAME] was seen"),
    ("Thank you for referring Mary Jones.", "Thank you for referring [NAME]."),
    ("Discussed with Smith, Jessica by phone", "Discussed with [NAME] by phone"),
    ("1200 Pine Street, Seattle, WA 98101", "[ADDRESS]"),
    ("Flat B, 12/F, Kingswood Villas, Tin Shui Wai, Yuen Long, N.T., Hong Kong", "[ADDRESS]"),
    ("Lives at No. 12, Jalan Ampang, 50450 Kuala Lumpur, Malaysia.", "Lives at [ADDRESS]."),
    ("221B Baker Street\nLondon\nNW1 6XE", "[ADDRESS]"),
    ("Sent to 4 Kent Road, Mosman, NSW 2088", "Sent to [ADDRESS]"),
    ("Tel: 0121 496 0978", "Tel: [PHONE]"),
    ("+61 7 8483 0401", "[PHONE]"),
]

LEFT_ALONE = [   # clinical text that has digits, capitals and "by" but no PHI
    "Potassium 4.1 mmol/L 3.5-5.1 H",
    "BP 120/80 mmHg, heart rate 72 bpm",
    "QRS axis -30 to 90 degrees",
    "INR 1.05 0.80-1.10",
    "Platelets 250 K/uL 150-400",
    "Ventricular ectopic beats 345 0-500",
    "Sample slightly hemolyzed, potassium may read high.",
    "Results verified by the laboratory.",
    "Copy sent to the family doctor.",
    "patient reported palpitations",
    "Level 3, Emergency Department",
    "Ward 4B, bed 12",
    "Page 2 of 3",
    "Chest Pain Clinic, Room 3",
    "Grace period of 2 weeks",
    "Review in 2026.",
    "Specimen: serum Collected 07:45",
    "Ward 2A Outpatient Clinic",
    "Follow-up in clinic in 4 weeks.",
    "Exercise Stress Test, Metabolic equivalents 9.5 METs 7.0-13.0",
    "Northfield General Hospital - Cardiology Department",
    "Continue beta blocker, review in 6 weeks.",
    "Status: preliminary",
    "Reviewed in 2023",                                                 # a year alone is kept
]


@pytest.mark.parametrize("text, expected", CATCHES)
def test_rules_catch_phi(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize("text", LEFT_ALONE)
def test_rules_leave_clinical_text_alone(text):
    assert find_phi(text) == [], find_phi(text)
    assert redact(text) == text


def test_demo_documents_lose_every_identifier_and_keep_every_measurement():
    from fusion.demo.documents import compose_document

    for seed in range(200):
        rng = random.Random(seed)
        doc = compose_document(("laboratory", "cardiology")[seed % 2], rng)
        out = redact(doc.text)
        patient, mrn, dob = doc.header[0]
        for secret in (*patient.removeprefix("Patient: ").split(), mrn.split()[1], dob.split()[1],
                       doc.header[1][0].split()[1], doc.header[1][2].split()[-1], doc.footer[0].split()[-1]):
            assert secret not in out, (secret, out)
        assert "Patient: [NAME] MRN [ID] DOB [DATE]" in out
        for row in doc.rows:   # measurements, units and reference ranges stay exactly
            line = " ".join(c for c in row if c)
            assert line in out.splitlines(), (line, out)


def test_redacted_words_keep_one_entry_per_word_and_flag_ocr_words():
    text = "Patient: Jane Q. Doe\nHemoglobin 13.2"
    words = text.split()
    assert redact_words(words, text) == ["Patient:", "[NAME]", "", "", "Hemoglobin", "13.2"]
    scored = redact_scored([(w, s) for w, s in zip(words, [0.1, 0.2, -0.9, 0.3, 0.5, 0.0])], text)
    assert scored == [("Patient:", 0.1), ("[NAME]", -0.9), ("Hemoglobin", 0.5), ("13.2", 0.0)]
    assert phi_words(text, words) == [False, True, True, True, False, False]
    boxes = [{"text": w, "box": [i * 10, 0, i * 10 + 8, 8]} for i, w in enumerate(words)]
    assert phi_boxes(text, boxes) == [(10, 0, 18, 8), (20, 0, 28, 8), (30, 0, 38, 8)]


def test_an_edit_around_placeholders_keeps_the_hidden_words():
    original = "seen by Dr. Hale on 2024-01-05"
    shown = redact(original)
    assert shown == "seen by Dr. [NAME] on [DATE]"
    assert restore_placeholders(shown + ", chest pain", original) == original + ", chest pain"
    assert restore_placeholders("chest pain", original) == "chest pain"          # rewritten: as typed
    assert restore_placeholders("[DATE] only", original) == "[DATE] only"        # placeholders dropped: as typed


# ---- the Review page with FUSION_DEIDENTIFY on ---------------------------------------------------

APP = Path(__file__).resolve().parent.parent / "app.py"


def phi_page() -> bytes:
    """A page whose text holds a patient's name and record number (a new item on every run)."""
    image = Image.new("RGB", (1000, 300), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 2, 2), fill=tuple(os.urandom(3)))
    font = ImageFont.load_default(size=40)
    for y, line in ((30, "Patient: Jane Doe"), (115, "MRN 00123456"), (200, "Hemoglobin 13.2 g/dL")):
        draw.text((30, y), line, fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_review_page_shows_redacted_text_words_and_page(demo_project, deidentifying):
    from streamlit.testing.v1 import AppTest

    from fusion.services import review
    from fusion.core.settings import load_settings
    from fusion.store.labeling import open_store

    store = open_store(load_settings())
    if "phi-review" not in store.project_names():
        store.create_project("phi-review", demo_project.labels, user="reviewer")
    data = phi_page()
    item = review.add_upload(store, "phi-review", "phi.png", data, "reviewer")
    store.set_caption("phi-review", item.id, "seen by Dr. Hale on 2024-01-05", "reviewer", item.version)

    app = AppTest.from_file(str(APP), default_timeout=300)
    app.session_state["user"] = "reviewer"
    app.session_state["project"] = "phi-review"
    app.run()
    app.file_uploader[0].set_value(("phi.png", data, "image/png")).run()
    assert not app.exception, app.exception
    assert any("De-identified" in c.value for c in app.caption)

    page_text = app.text_area(key="ocr_text")
    assert page_text.disabled                                   # placeholders never overwrite the page's text
    assert "[NAME]" in page_text.value and "[ID]" in page_text.value and "Hemoglobin" in page_text.value
    assert "Doe" not in page_text.value and "00123456" not in page_text.value
    assert app.text_area(key="caption").value == "seen by Dr. [NAME] on [DATE]"
    words = next(m.value for m in app.markdown if "<span" in m.value)
    assert "[NAME]" in words and "Hemoglobin" in words
    assert not any(secret in words for secret in ("Doe", "00123456", "Hale", "2024-01-05"))
    screen = everything_shown(app)                              # and nowhere else on the page
    assert "Dr. [NAME] on [DATE]" in screen and not [s for s in ("Doe", "00123456", "Hale", "2024-01-05") if s in screen]

    # The model read the original text; the picture blacks out the words OCR found PHI in.
    page = app.session_state["page"]
    assert "Doe" in app.session_state["prediction"].ocr_text
    hidden = [w for w in page["ocr"].words if tuple(w.box) in phi_boxes(page["ocr"].text, page["ocr"].words)]
    assert any("Doe" in w.text for w in hidden) and any("00123456" in w.text for w in hidden)
    assert not any("Hemoglobin" in w.text for w in hidden)

    # An edit around the placeholders keeps the words they hide, in the store.
    app.text_area(key="caption").set_value("seen by Dr. [NAME] on [DATE], chest pain").run()
    app.button(key="accept").click().run()
    assert not app.exception, app.exception
    saved = store.item("phi-review", item.id)
    assert saved.status == "accepted" and saved.caption == "seen by Dr. Hale on 2024-01-05, chest pain"


# ---- exports, search and the CLI -----------------------------------------------------------------

def page_with_words(lines: list[str], tag: bytes) -> tuple[bytes, str, list[dict]]:
    """A PNG of these lines, its text, and each word's box as OCR records them."""
    image = Image.new("RGB", (700, 60 + 70 * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 2, 2), fill=tuple(tag))
    font = ImageFont.load_default(size=36)
    words = []
    for row, line in enumerate(lines):
        x = 20
        for word in line.split():
            box = draw.textbbox((x, 30 + 70 * row), word, font=font)
            draw.text((x, 30 + 70 * row), word, fill="black", font=font)
            words.append({"text": word, "conf": 0.99, "box": list(box)})
            x = box[2] + 14
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue(), "\n".join(lines), words


SECRETS = ("Doe", "00123456", "Hale", "2024-01-05", "Voss", "555-0142")


@pytest.fixture(scope="module")
def phi_project(settings):
    """Three pages: PHI in the page text with OCR word boxes; PHI only in the caption and the file
    name; PHI in text imported without word boxes."""
    from fusion.imaging.images import check_image_file
    from fusion.imaging.ocr import ENGINE
    from fusion.store.labeling import NewItem, open_store

    store = open_store(settings)
    name = "phi-export"
    if name not in store.project_names():
        store.create_project(name, {"lab": "", "cardio": ""}, user="tester")
        read, text, words = page_with_words(["Patient: Jane Doe", "MRN 00123456", "Hemoglobin 13.2"], b"\x01\x02\x03")
        plain, _, _ = page_with_words(["Hemoglobin 13.2"], b"\x04\x05\x06")
        imported, _, _ = page_with_words(["Patient: Mara Voss"], b"\x07\x08\x09")
        store.add_items(name, [
            NewItem(check_image_file(read, settings), "read.png", "lab", "", text, words, ENGINE),
            NewItem(check_image_file(plain, settings), "doe_2024-01-05.png", "lab",
                    "seen by Dr. Hale on 2024-01-05, call (555) 555-0142", "Hemoglobin 13.2", None, "imported"),
            NewItem(check_image_file(imported, settings), "imported.png", "cardio", "",
                    "Patient: Mara Voss", None, "imported"),
        ], user="tester")
    return store, name


def test_deidentified_csv_export_redacts_text_and_names_and_masks_the_page(phi_project, tmp_path):
    from fusion.services.exporting import export_project

    store, name = phi_project
    summary = export_project(store, name, "csv", tmp_path / "out", deidentify=True)
    # The page read here is masked from its stored boxes; the two without boxes are read by OCR now,
    # and the imported one, whose text names a patient, is masked too.
    assert summary["deidentified"] and (summary["images_masked"], summary["images_read_at_export"]) == (2, 2)
    table = (tmp_path / "out" / "items.csv").read_text(encoding="utf-8")
    assert not [s for s in SECRETS if s in table]
    rows = {r["filename"]: r for r in csv.DictReader(io.StringIO(table))}
    assert set(rows) == {"read.png", "doe_[DATE].png", "imported.png"}
    assert rows["read.png"]["ocr_text"] == "Patient: [NAME]\nMRN [ID]\nHemoglobin 13.2"
    assert rows["imported.png"]["ocr_text"] == "Patient: [NAME]"
    plain = rows["doe_[DATE].png"]
    assert plain["caption"] == "seen by Dr. [NAME] on [DATE], call [PHONE]"

    # The page read by OCR: its name and record number are black, the rest of the page is not.
    read = rows["read.png"]
    exported = (tmp_path / "out" / read["image"]).read_bytes()
    original = store.item(name, "read.png")
    assert exported != store.image_path(original).read_bytes()
    import hashlib
    assert read["sha256"] == hashlib.sha256(exported).hexdigest()
    pixels = Image.open(io.BytesIO(exported)).convert("L")
    boxes = {w["text"]: w["box"] for w in store.ocr_words(original)}
    for word, hidden in (("Doe", True), ("00123456", True), ("Hemoglobin", False)):
        x0, y0, x1, y1 = boxes[word]
        ink = [pixels.getpixel((x, y)) for x in range(x0, x1) for y in range(y0, y1)]
        assert (max(ink) == 0) == hidden, word
    # The page imported without word boxes was read at export: its patient's name is black too.
    from fusion.imaging.ocr import read_text
    imported = Image.open(tmp_path / "out" / rows["imported.png"]["image"])
    reread = read_text(imported, cache_dir=store.settings.ocr_cache_dir).text
    assert "Patient" in reread and "Mara" not in reread and "Voss" not in reread
    # A page without PHI in its text is exported byte for byte.
    assert (tmp_path / "out" / plain["image"]).read_bytes() == store.image_path(store.item(name, plain["sha256"])).read_bytes()


def test_jsonl_export_is_deidentified_on_request_or_by_the_setting_and_not_otherwise(phi_project, tmp_path):
    from dataclasses import replace

    from fusion.services.exporting import export_project
    from fusion.store.labeling import Store

    store, name = phi_project
    export_project(store, name, "jsonl", tmp_path / "plain")
    plain = (tmp_path / "plain" / "items.jsonl").read_text(encoding="utf-8")
    assert all(s in plain for s in SECRETS)                     # off by default: an exact copy

    deidentifying = Store(replace(store.settings, demo_mode=True))   # demo mode turns de-identification on
    summary = export_project(deidentifying, name, "jsonl", tmp_path / "redacted")
    assert summary["deidentified"]
    records = [json.loads(line) for line in (tmp_path / "redacted" / "items.jsonl").read_text().splitlines()]
    assert len(records) == 3 and not [s for s in SECRETS if s in json.dumps(records)]
    assert {r["ocr_text"] for r in records} >= {"Patient: [NAME]", "Hemoglobin 13.2"}


def test_cli_export_deidentify_and_history_show_no_phi(phi_project, tmp_path, capsys, monkeypatch):
    from fusion.cli.main import main

    store, name = phi_project
    home = str(store.settings.home)
    assert main(["--home", home, "export", name, "--format", "jsonl", str(tmp_path / "cli"), "--deidentify",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images_read_at_export"] == 2
    assert not [s for s in SECRETS if s in (tmp_path / "cli" / "items.jsonl").read_text()]

    monkeypatch.setenv("FUSION_DEIDENTIFY", "1")
    assert main(["--home", home, "history", name, "doe_2024-01-05.png", "--json"]) == 0
    out = capsys.readouterr().out
    assert "Dr. [NAME]" in out and "Hale" not in out


def test_search_finds_only_what_the_deidentified_screen_shows(phi_project):
    from fusion.privacy.deidentified_search import list_items
    from fusion.store.labeling import ItemFilter

    store, name = phi_project
    for query, plain, redacted in (("Hale", 1, 0), ("Voss", 1, 0), ("00123456", 1, 0), ("hemoglob", 2, 2)):
        where = ItemFilter(search=query)
        assert list_items(store, name, where).total == plain, query
        page = list_items(store, name, where, deidentified=True)
        assert (page.total, len(page.items)) == (redacted, redacted), query


def everything_shown(app) -> str:
    """Every element's content on the app's screen (its protobuf as text: values, options, labels,
    tables, chart specs), with the thumbnails' data: URLs left out (base64 could spell anything)."""
    import re

    def walk(node):
        yield str(getattr(node, "proto", ""))
        for child in getattr(node, "children", {}).values():
            yield from walk(child)
    return re.sub(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+", "", "\n".join(walk(app._tree)))


def test_no_screen_or_cli_output_shows_phi_while_deidentifying(settings, demo_project, deidentifying, capsys):
    """The Dataset page (table, map, its selection's pages, an item's history, similar pages) and
    the CLI's label, history and similar, for a page whose file name, caption and text hold PHI."""
    from streamlit.testing.v1 import AppTest

    from fusion.cli.main import main
    from fusion.imaging.images import check_image_file
    from fusion.imaging.ocr import ENGINE
    from fusion.ml.embeddings import compute_embeddings
    from fusion.store.labeling import NewItem, open_store

    store, name = open_store(settings), "phi-screens"
    if name not in store.project_names():
        store.create_project(name, {"lab": "", "cardio": ""}, user="tester")
        pages = [page_with_words(lines, bytes([n, 9, 9])) for n, lines in enumerate(
            (["Patient: Jane Doe", "MRN 00123456", "Hemoglobin 13.2"], ["Hemoglobin 12.9"], ["ECG sinus rhythm"],
             ["QT interval 410 ms"]))]
        store.add_items(name, [NewItem(check_image_file(data, settings), filename, label, caption, text, words, ENGINE)
                               for (data, text, words), filename, label, caption in zip(
            pages, ("Jane_Doe_2024-01-05.png", "lab.png", "ecg.png", "qt.png"), ("lab", "lab", "cardio", "cardio"),
            ("seen by Dr. Hale on 2024-01-05", "", "", ""))], user="tester")
        compute_embeddings(settings, store, name)
    secret = next(i for i in store.iter_items(name) if "Doe" in i.filename)

    app = AppTest.from_file(str(APP), default_timeout=300)
    app.session_state["user"] = "reviewer"
    app.session_state["project"] = name
    app.run()
    app.switch_page("pages/dataset.py").run()
    app.session_state["ds_map"] = {"selection": {"points": [{"customdata": [i.id]} for i in store.iter_items(name)],
                                                 "point_indices": [], "box": [], "lasso": []}}
    app.run()
    picker = app.selectbox(key="ds_item")
    picker.select_index(next(n for n, item in enumerate(picker.options) if item.startswith(f"{secret.id} "))).run()
    assert not app.exception, app.exception
    screen = everything_shown(app)
    assert "[NAME]_[DATE].png" in screen and "Dr. [NAME] on [DATE]" in screen     # it was on screen, redacted
    assert "similarity" in screen and len(app.get("image")) == 4
    assert not [s for s in ("Doe", "00123456", "Hale", "2024-01-05") if s in screen]

    home = str(store.settings.home)
    for command in (["label", name, str(secret.id), "lab"], ["history", name, str(secret.id)],
                    ["similar", name, str(secret.id)]):
        for output in ([], ["--json"]):
            assert main(["--home", home, *command, *output]) == 0, command
            printed = capsys.readouterr().out
            named = command[0] == "history" or not output   # label's and similar's JSON name no file
            assert "[NAME]" in printed or not named, (command, printed)
            assert not [s for s in ("Doe", "00123456", "Hale", "2024-01-05") if s in printed], (command, printed)


def test_the_evaluate_page_shows_no_phi_while_deidentifying(settings, demo_project, deidentifying):
    """A version trained on pages whose test split holds a misread page with PHI in its file name,
    caption and text: its scores, the confusion cell, the error table and the Grad-CAM gallery
    (with its words and reason) show it redacted."""
    from streamlit.testing.v1 import AppTest

    from fusion.imaging.images import check_image_file
    from fusion.imaging.ocr import ENGINE
    from fusion.ml.registry import versions
    from fusion.ml.train import TrainConfig, train_version
    from fusion.services.version_report import test_predictions
    from fusion.store.labeling import NewItem, open_store, split_of

    store, name = open_store(settings), "phi-evaluate"
    if name not in store.project_names():
        store.create_project(name, {"lab": "", "cardio": ""}, user="tester")
        lines_of = {"lab": lambda n: [f"Hemoglobin 1{n % 5}.{n} g/dL", "Hematocrit 41 %"],
                    "cardio": lambda n: [f"ECG sinus rhythm {60 + n} bpm", "QT interval 410 ms"]}
        new = []
        for n in range(12):
            for label, lines in lines_of.items():
                data, text, words = page_with_words(lines(n), bytes([n, 7, len(label)]))
                new.append(NewItem(check_image_file(data, settings), f"{label}_{n}.png", label, "", text, words,
                                   ENGINE))
        for tag in range(256):   # the PHI page in the test split, labeled cardio though it reads as a lab page
            data, text, words = page_with_words(["Patient: Jane Doe", "MRN 00123456", "Hemoglobin 13.2 g/dL"],
                                                bytes([tag, 1, 1]))
            secret = check_image_file(data, settings)
            if split_of(secret.sha256) == "test":
                break
        new.append(NewItem(secret, "Jane_Doe_2024-01-05.png", "cardio", "seen by Dr. Hale on 2024-01-05", text, words,
                           ENGINE))
        store.add_items(name, new, user="tester")
        train_version(settings, store, name, TrainConfig(epochs=3), user="tester")
    version = versions(store, name)[0].version
    secret_id = next(i.id for i in store.iter_items(name) if "Doe" in i.filename)
    tested = {p.item_id: p for p in test_predictions(store, store.project(name), version)}
    assert tested[secret_id].predicted == "lab"          # misread: it is in the error table and the gallery

    app = AppTest.from_file(str(APP), default_timeout=300)
    app.session_state["user"] = "reviewer"
    app.session_state["project"] = name
    app.run()
    app.switch_page("pages/evaluate.py").run()
    app.session_state["confusion"] = {"selection": {"points": [{"x": "lab", "y": "cardio"}]}}
    app.toggle(key="eval_gradcam").set_value(True).run()
    assert not app.exception, app.exception
    screen = everything_shown(app)
    assert screen.count("[NAME]_[DATE].png") >= 2 and "predicted lab" in screen   # cell, errors, gallery
    assert not [s for s in ("Doe", "00123456", "Hale", "2024-01-05") if s in screen]


# ---- logs ---------------------------------------------------------------------------------------

def test_logs_never_hold_page_text_or_captions(settings, demo_project, tmp_path, caplog, capsys):
    """An import job (as the Dataset page queues it, with a bad row) and a pre-labeling job run by
    the worker, over items whose text and captions hold a unique marker:
    the marker is in no file under <home>/logs or <home>/jobs, no log record and no output."""
    import logging

    from sqlalchemy import text as sql

    from fusion.jobs.queue import Jobs
    from fusion.store.labeling import open_store
    from fusion.jobs.worker import run_worker

    caplog.set_level(logging.DEBUG)
    marker = "Qzx" + os.urandom(6).hex()
    store = open_store(settings)
    project = f"phi-logs-{marker[-6:]}"
    store.create_project(project, demo_project.labels, user="tester")
    folder = tmp_path / "incoming"
    folder.mkdir()
    lines = ["image,label,caption,ocr_text"]
    for k in range(3):
        data, _, _ = page_with_words([f"Patient: {marker} Doe", f"Hemoglobin 13.{k}"], marker[-6 + k:][:3].encode())
        (folder / f"{k}.png").write_bytes(data)
        lines.append(f'{k}.png,,"note on {marker} {k}","Patient: {marker} Doe\nHemoglobin 13.{k}"')
    lines.append(f'missing.png,,"caption {marker}","text {marker}"')     # a bad row: listed in the log
    (folder / "items.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    import time

    jobs = Jobs(store)
    imported = jobs.submit(project, "import", {"path": str(folder / "items.csv")}, "tester")
    job = jobs.submit(project, "prelabel", {}, "tester")
    run_worker(settings, idle_exit_s=0)   # the worker's own loop, here (unless a worker process holds the lock)
    deadline = time.monotonic() + 120
    while not (finished := jobs.get(job.id)).finished and time.monotonic() < deadline:
        time.sleep(0.5)
    assert jobs.get(imported.id).status == "succeeded" and store.list_items(project, limit=0).total == 3
    assert any("no such image file: missing.png" in line for line in jobs.log_tail(imported.id))   # the bad row
    assert finished.status == "succeeded" and finished.result["predicted"] == 3, finished.error

    # A failed statement's message (which lands in tracebacks and job logs) names no values.
    with pytest.raises(Exception) as failed:
        with store.db.read() as session:
            session.execute(sql("SELECT * FROM no_such_table WHERE caption = :c"), {"c": marker})
    assert marker not in str(failed.value)

    leaked = [str(p) for folder in ("logs", "jobs") for p in (settings.home / folder).rglob("*")
              if p.is_file() and marker.encode() in p.read_bytes()]
    assert leaked == []
    assert not [r for r in caplog.records if marker in r.getMessage() or marker in (r.exc_text or "")]
    out = capsys.readouterr()
    assert marker not in out.out and marker not in out.err


def test_the_rules_find_every_kind_of_generated_phi_and_keep_the_clinical_lines():
    """A small case of `bench deidentify`'s measurement: pages and captions whose PHI comes from
    Faker's locales (names with and without labels; addresses of 8 countries and Hong Kong)."""
    from fusion.bench.phi_cases import KINDS, phi_cases, score

    cases = phi_cases(120, seed=5)
    result = score(cases, find_phi)
    for kind in KINDS:
        assert result[kind]["values"] >= 20, kind
        assert result[kind]["recall"] >= 0.95, (kind, result[kind])
        assert result[kind]["precision"] >= 0.95, (kind, result[kind])
    # Every clinical line among them is left as it was.
    kept = [line for case in cases for line in case.text.splitlines()
            if not any(s < case.text.index(line) + len(line) and case.text.index(line) < e for s, e, _ in case.spans)]
    assert sum(line != redact(line) for line in kept) <= len(kept) // 100
