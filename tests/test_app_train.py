"""The Train page under AppTest: start a run from the form (the worker process trains it), see it
finish with its curve, then promote the new version and roll back."""
from __future__ import annotations

import time

from fusion.ml import registry
from fusion.ml.embeddings import load_embeddings
from fusion.jobs.queue import Jobs
from fusion.store.labeling import open_store

from helpers import started


def test_train_page_runs_a_job_then_promotes_and_rolls_back(settings, demo_project, corrected):
    store = open_store(settings)
    jobs = Jobs(store)
    app = started(demo_project)
    app.selectbox(key="project").set_value(corrected.name).run()
    app.switch_page("pages/train.py").run()
    assert not app.exception, app.exception
    assert app.title[0].value == "Train"

    app.number_input(key="train_epochs").set_value(3)
    app.button[0].click().run()                          # the form's "Start training"
    assert not app.exception, app.exception
    job = jobs.list(corrected.name, limit=1)[0]
    assert job.project == corrected.name and job.created_by == "reviewer" and job.params["epochs"] == 3 and job.params["mode"] == "head"

    end = time.monotonic() + 240
    while not jobs.get(job.id).finished and time.monotonic() < end:
        time.sleep(1)
    done = jobs.get(job.id)
    assert done.status == "succeeded", (done.error, jobs.log_tail(job.id))
    assert [r.epoch for r in done.curve] == [1, 2, 3]

    app.run()
    assert not app.exception, app.exception
    assert any(f"Version **{done.result['version']}**" in s.value for s in app.success)
    table = app.dataframe[0].value
    assert done.result["version"] in set(table["version"])
    counts = registry.get_version(store, corrected.name, done.result["version"]).metrics.counts
    shown = table.set_index("version").loc[done.result["version"], "train items"]
    assert shown == (f"{counts['train']} + {counts['pseudo_labeled']}" if counts.get("pseudo_labeled") else str(counts["train"]))

    before = store.project(corrected.name).active_model
    app.selectbox(key="train_version_pick").set_value(done.result["version"]).run()
    app.button(key="promote").click().run()
    assert not app.exception, app.exception
    assert store.project(corrected.name).active_model == done.result["version"]
    assert registry.events(store, corrected.name)[0].user == "reviewer"
    embed = jobs.list(corrected.name, limit=1, kind="embed")[0]   # the new version's map, in the background
    end = time.monotonic() + 240
    while not jobs.get(embed.id).finished and time.monotonic() < end:
        time.sleep(1)
    assert jobs.get(embed.id).status == "succeeded", (jobs.get(embed.id).error, jobs.log_tail(embed.id))
    embeddings = load_embeddings(store.project(corrected.name))
    assert embeddings.version == done.result["version"] and len(embeddings.item_ids) == jobs.get(embed.id).result["items"]
    rollback = app.button(key="rollback")
    assert registry.rollback_target(store, corrected.name) == before
    if before is None:       # nothing was active before: nothing to roll back to (issue 19)
        assert rollback.disabled and rollback.label == "Roll back"
    else:
        assert not rollback.disabled and rollback.label == f"Roll back to {before}"
        rollback.click().run()
        assert store.project(corrected.name).active_model == before


def test_train_page_descriptions_measure_zero_shot_in_the_background(settings, engine, demo_project):
    from conftest import make_corrected_project

    project = make_corrected_project(settings, engine, demo_project, "described", count=60)
    store, jobs = open_store(settings), Jobs(open_store(settings))
    app = started(demo_project)
    app.selectbox(key="project").set_value(project.name).run()
    app.switch_page("pages/train.py").run()
    assert not app.exception, app.exception
    label = project.label_names[0]
    app.text_input(key=f"description_{label}").set_value("laboratory results: potassium, sodium, mmol/L")
    next(b for b in app.button if b.label == "Save and measure zero-shot").click().run()   # one submit
    assert not app.exception, app.exception
    assert store.project(project.name).labels[label] == "laboratory results: potassium, sodium, mmol/L"
    job = jobs.list(project.name, limit=1, kind="zero_shot")[0]
    end = time.monotonic() + 240
    while not jobs.get(job.id).finished and time.monotonic() < end:
        time.sleep(1)
    done = jobs.get(job.id)
    assert done.status == "succeeded", (done.error, jobs.log_tail(job.id))
    assert done.result["items"] == 60 and len(done.result["votes"]) == 2
    app.run()
    assert not app.exception, app.exception
    assert any("Zero-shot accuracy on 60 labeled items" in m.value for m in app.markdown)
    shown = next(d.value for d in app.dataframe if "one vote each" in d.value.columns)
    assert list(shown["head"]) == ["fused", "image", "text"]
    assert shown.loc[0, "votes measured"] == done.result["accuracy"]["fused"]
    adaptation = done.result["adaptation"]     # this sample of the demo: zero-shot gives two labels all the pages
    assert adaptation["pages"] == sum(i.split != "test" for i in store.iter_items(project.name))
    shown = f"Adapted to the project's {adaptation['pages']:,} pages" if adaptation["adapted"] else adaptation["why"]
    assert any(shown in c.value for c in app.caption), adaptation
