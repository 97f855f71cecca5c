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

from fusion.deidentify import (find_phi, phi_boxes, phi_words, redact, redact_scored, redact_words,
                               restore_placeholders)

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
    from fusion.demo_data import compose_document

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
