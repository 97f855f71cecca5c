"""Settings and what they decide, as fast unit tests (no demo build, no models): where each value
comes from, the errors a wrong one gets, and what de-identification shows."""
from __future__ import annotations

import pytest

from fusion.core.errors import FusionError
from fusion.core.settings import load_settings
from fusion.privacy.shown import Shown


@pytest.fixture
def home(tmp_path, monkeypatch):
    for var in ("FUSION_HOME", "FUSION_REVIEW_THRESHOLD", "FUSION_DEIDENTIFY", "FUSION_DEMO_MODE", "FUSION_MAX_PIXELS"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_an_override_beats_the_environment_which_beats_the_file(home, monkeypatch):
    (home / "fusion.toml").write_text("review_threshold = 0.7\nmax_pixels = 1000\n")
    assert load_settings(home=home).review_threshold == 0.7
    monkeypatch.setenv("FUSION_REVIEW_THRESHOLD", "0.8")
    settings = load_settings(home=home)
    assert (settings.review_threshold, settings.max_pixels, settings.home) == (0.8, 1000, home.resolve())
    assert load_settings(home=home, review_threshold=0.9).review_threshold == 0.9


@pytest.mark.parametrize("var, value, says", [
    ("FUSION_MAX_PIXELS", "lots", "FUSION_MAX_PIXELS must be a whole number, got 'lots'"),
    ("FUSION_REVIEW_THRESHOLD", "60%", "FUSION_REVIEW_THRESHOLD must be a number, got '60%'"),
    ("FUSION_DEIDENTIFY", "maybe", "expected a yes/no setting"),
])
def test_a_wrong_value_names_the_variable_and_what_it_takes(home, monkeypatch, var, value, says):
    monkeypatch.setenv(var, value)
    with pytest.raises(FusionError, match=says.replace("(", r"\(").replace(")", r"\)")):
        load_settings(home=home)


def test_an_unknown_setting_in_the_file_is_refused(home):
    (home / "fusion.toml").write_text("review_treshold = 0.7\n")
    with pytest.raises(FusionError, match="review_treshold"):
        load_settings(home=home)


@pytest.mark.parametrize("flags, redacting", [({}, False), ({"FUSION_DEIDENTIFY": "yes"}, True),
                                              ({"FUSION_DEMO_MODE": "on"}, True), ({"FUSION_DEIDENTIFY": "0"}, False)])
def test_deidentify_or_demo_mode_decide_what_is_shown(home, monkeypatch, flags, redacting):
    for var, value in flags.items():
        monkeypatch.setenv(var, value)
    shown = Shown.under(load_settings(home=home))
    assert shown.redacting is redacting
    name = "Jane_Doe_2024-01-05.png"
    assert shown.filename(name) == ("[NAME]_[DATE].png" if redacting else name)
    assert shown.text("Patient: Jane Doe") == ("Patient: [NAME]" if redacting else "Patient: Jane Doe")


def test_shown_keeps_clinical_names_and_gives_hidden_words_back_after_an_edit():
    on, off = Shown(True), Shown(False)
    for name in ("cardiology_chart_0012.png", "ecg_lab_results.png", "0005.png", ""):
        assert on.filename(name) == name
    assert on.text(None) == off.text(None) == "" and on.filename(None) == ""
    words = ["Patient:", "Jane", "Doe", "Potassium", "4.1"]
    assert on.words(words, "Patient: Jane Doe\nPotassium 4.1") == ["Patient:", "[NAME]", "", "Potassium", "4.1"]
    assert off.words(["Jane", "Doe"]) == ["Jane", "Doe"]
    assert on.boxes_to_hide("Jane Doe", []) == [] and off.boxes_to_hide("Patient: Jane Doe", [
        {"text": "Jane", "box": [0, 0, 1, 1]}]) == []
    assert on.boxes_to_hide("Patient: Jane Doe", [{"text": "Patient:", "box": [0, 0, 9, 9]},
                                                  {"text": "Jane", "box": [10, 0, 19, 9]}]) == [(10, 0, 19, 9)]
    assert on.edit("seen by Dr. [NAME], chest pain", "seen by Dr. Hale") == "seen by Dr. Hale, chest pain"
    assert off.edit("seen by Dr. [NAME]", "seen by Dr. Hale") == "seen by Dr. [NAME]"
