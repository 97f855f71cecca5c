"""The app under streamlit.testing.v1.AppTest: upload a page, read it, edit the caption, see
the fused prediction and both explanations."""
from __future__ import annotations

import os
import re
import signal
import time
import zipfile
from pathlib import Path

from streamlit.testing.v1 import AppTest

from fusion.jobs.queue import Jobs

from helpers import APP, TIMEOUT, page_bytes, started

def demo_project_settings():
    from fusion.core.settings import load_settings

    return load_settings()


def test_review_page_upload_ocr_caption_prediction_and_heatmaps(demo_project):
    app = started(demo_project)
    assert app.title[0].value == "Review"
    assert "v1" in " ".join(m.value for m in app.sidebar.markdown)

    app.file_uploader[0].set_value(("labs.png", page_bytes(), "image/png")).run()
    assert not app.exception, app.exception
    page_text = app.text_area(key="ocr_text").value
    assert "hemoglobin" in page_text.lower() and "glucose" in page_text.lower()
    result = [m.value for m in app.markdown if m.value.startswith("### ")]
    # Two lines on a strip are unlike the demo's full pages: honestly "none of these", with the closest class.
    headline = result[0]
    shown = headline.split("closest: **")[1].split("**")[0] if headline.startswith("### None of these") \
        else headline[4:].split()[0]
    assert shown in demo_project.labels
    assert any("text says" in m.value and "image says" in m.value for m in app.markdown)   # the reason in words
    assert any(c.value.startswith("Out-of-distribution score") for c in app.caption)
    assert len(app.get("plotly_chart")) == 1
    assert len(app.image) == 1  # the page with Grad-CAM and OCR boxes drawn over it
    words = [m.value for m in app.markdown if "<span" in m.value]
    assert words and "Hemoglobin" in words[0]

    # A caption edit re-predicts from the stored OCR (the page is not read again).
    app.text_area(key="caption").set_value("ECG rhythm strip, troponin, chest pain, cardiology").run()
    assert not app.exception, app.exception
    assert app.text_area(key="ocr_text").value == page_text
    def captions_but_the_legend() -> list[str]:      # the word colours' legend follows the colouring
        return [c.value for c in app.caption if "-background[green]" not in c.value]

    captions = captions_but_the_legend()
    timing = next(c for c in captions if "total" in c)
    assert re.search(r"· OCR \d+\.\d s ·", timing) and "ocr 0 ms" not in timing, timing   # the reading's own time
    words = [m.value for m in app.markdown if "<span" in m.value]
    assert "troponin," in words[0]

    # Switching the word colouring and the heatmap opacity reuses the prediction (same timings).
    app.radio(key="word_colouring").set_value("attention").run()
    app.slider(key="heatmap_opacity").set_value(0.0).run()
    assert not app.exception, app.exception
    assert captions_but_the_legend() == captions

    # Correct the label: saved at once in the store, with the suggestion shown in the history.
    from fusion.imaging.images import image_sha256
    from fusion.store.labeling import open_store

    store = open_store(demo_project_settings())
    item = store.item(demo_project.name, image_sha256(page_bytes())[:12])
    assert item.status == "predicted" and item.ocr_engine.startswith("easyocr") and item.added_by == "reviewer"
    shown = app.session_state["prediction"].label  # on screen now: after the caption edit
    other = next(label for label in demo_project.labels if label != shown)
    app.button(key=f"label_{list(demo_project.labels).index(other)}").click().run()
    assert not app.exception, app.exception
    item = store.item(demo_project.name, item.id)
    assert (item.label, item.status, item.updated_by, item.caption) == (
        other, "corrected", "reviewer", "ECG rhythm strip, troponin, chest pain, cardiology")
    last = store.history(demo_project.name, item.id)[-1]
    assert (last.action, last.user, last.old_label, last.new_label, last.shown_label) == (
        "correct", "reviewer", None, other, shown)
    assert last.model_version == "v1" and 0 < last.shown_confidence <= 1


def test_bad_upload_shows_a_clear_error_and_keeps_the_app_alive(demo_project):
    app = started(demo_project)
    app.button(key="demo_page").click().run()                 # a page under review...
    reviewing = app.session_state["page"]["item_id"]
    app.file_uploader[0].set_value(("scan.png", b"\x89PNG\r\n\x1a\n not really a png", "image/png")).run()
    assert not app.exception, app.exception
    errors = [e.value for e in app.error]
    assert errors and errors[0].startswith("scan.png:")
    assert "PNG, JPEG, TIFF, BMP or WebP" in errors[0] or "corrupt" in errors[0].lower() or "truncated" in errors[0].lower()
    assert app.session_state["page"]["item_id"] == reviewing   # ...stays on screen after a bad upload


def test_demo_page_button(demo_project):
    app = started(demo_project)
    app.button(key="demo_page").click().run()
    assert not app.exception, app.exception
    assert app.text_area(key="ocr_text").value.strip()
    assert any(m.value.startswith("### ") for m in app.markdown)


def test_first_run_builds_the_demo_as_a_job_of_the_worker(tmp_path, monkeypatch):
    """A fresh workspace: the app queues the demo build for the worker, which runs it in its own
    process, and shows the job's progress."""
    monkeypatch.setenv("FUSION_HOME", str(tmp_path))
    from fusion.jobs.queue import Jobs
    from fusion.store.labeling import open_store
    from fusion.ui import resources as streamlit_cache

    streamlit_cache.settings.clear()
    streamlit_cache.store.clear()
    worker_pid = None
    try:
        app = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
        app.run()
        assert not app.exception, app.exception
        assert app.title[0].value == "FusionLab" and "First run" in app.info[0].value
        jobs = Jobs(open_store(streamlit_cache.settings()))
        job = jobs.get(app.session_state["demo_build"])
        assert job.kind == "demo" and job.project == "demo"
        deadline = time.monotonic() + 120
        while (job := jobs.get(job.id)).progress is None or job.progress.steps is None:
            assert time.monotonic() < deadline and not job.finished, (job.status, job.error, jobs.log_tail(job.id))
            time.sleep(0.2)
        worker_pid = job.worker_pid
        assert worker_pid != os.getpid() and job.status == "running"     # the worker's process, not this one
        app.run()
        assert not app.exception, app.exception
        assert app.get("progress") and "Generating documents" in app.get("progress")[0].proto.text
        assert app.session_state["demo_build"] == job.id               # the next run reads the same job
    finally:
        if worker_pid is not None:
            os.kill(worker_pid, signal.SIGKILL)
        streamlit_cache.settings.clear()
        streamlit_cache.store.clear()


def test_dataset_page_filters_pages_history_and_export(demo_project):
    app = started(demo_project)
    app.switch_page("pages/dataset.py").run()
    assert not app.exception, app.exception
    assert app.title[0].value == "Dataset"
    assert int(app.metric[0].value.replace(",", "")) >= 480
    table = app.dataframe[0].value
    assert len(table) == 50 and {"thumbnail", "label", "status", "by"} <= set(table.columns)
    assert table["thumbnail"].str.startswith("data:image/jpeg;base64,").all()

    app.selectbox(key="ds_label").set_value("lab_trend_chart").run()
    table = app.dataframe[0].value
    assert len(table) == 50 and set(table["label"]) == {"lab_trend_chart"}
    app.text_input(key="ds_search").set_value("potassium").run()
    assert not app.exception, app.exception
    searched = app.dataframe[0].value
    assert 0 < len(searched) <= 50 and set(searched["label"]) == {"lab_trend_chart"}
    app.switch_page("pages/review.py").run()                   # a look at another page...
    app.switch_page("pages/dataset.py").run()
    assert (app.text_input(key="ds_search").value, app.selectbox(key="ds_label").value) == ("potassium", "lab_trend_chart")
    assert app.dataframe[0].value["id"].tolist() == searched["id"].tolist()   # ...keeps the filters

    # An inline label edit goes through the store: history, who, and the version check.
    editor = app.data_editor[0]
    first_id = int(searched["id"].iloc[0])
    app.session_state[editor.key] = {"edited_rows": {0: {"label": "cardiology_chart"}},
                                     "added_rows": [], "deleted_rows": []}
    app.run()
    assert not app.exception, app.exception
    from fusion.store.labeling import open_store

    store = open_store(demo_project_settings())
    edited = store.item(demo_project.name, first_id)
    assert (edited.label, edited.updated_by) == ("cardiology_chart", "reviewer")
    last = store.history(demo_project.name, first_id)[-1]
    assert (last.user, last.old_label, last.new_label) == ("reviewer", "lab_trend_chart", "cardiology_chart")
    store.set_label(demo_project.name, first_id, "lab_trend_chart", "test", expected_version=edited.version)
    app.run()

    history = app.dataframe[1].value   # the first item's history, in the expander
    assert list(history["what"])[0] == "add" and list(history["who"])[0] == "demo generator"

    # "None of these": the items whose latest prediction scored above 1, most unusual first.
    app.text_input(key="ds_search").set_value("").run()
    app.selectbox(key="ds_label").set_value("any").run()
    store.record_prediction(demo_project.name, first_id, "lab_trend_chart", 0.4, {"lab_trend_chart": 0.4}, "v1",
                            ood_score=3.5)
    app.selectbox(key="ds_ood").set_value("none of these (flagged)").run()
    app.selectbox(key="ds_sort").set_value("most unlike the trained classes").run()
    assert not app.exception, app.exception
    flagged = app.dataframe[0].value
    assert int(flagged["id"].iloc[0]) == first_id and (flagged["ood"] > 1).all()
    app.selectbox(key="ds_ood").set_value("any").run()

    app.selectbox(key="ds_format").set_value("jsonl").run()
    app.button(key="export").click().run()
    assert not app.exception, app.exception
    jobs = Jobs(store)
    job = jobs.get(app.session_state["export_job"])      # the export is a job of the worker
    assert job.kind == "export" and job.params == {"format": "jsonl", "deidentify": False}
    deadline = time.monotonic() + 120
    while not (job := jobs.get(job.id)).finished:
        assert time.monotonic() < deadline, jobs.log_tail(job.id)
        time.sleep(0.2)
    assert job.status == "succeeded", (job.error, jobs.log_tail(job.id))
    archive = Path(job.result["file"])
    assert archive.name.endswith("-jsonl.zip") and archive.stat().st_size > 100_000
    with zipfile.ZipFile(archive) as opened:
        assert "items.jsonl" in opened.namelist() and job.result["items"] >= 480
    app.run()
    assert not app.exception, app.exception
    assert not app.button(key="export").disabled
