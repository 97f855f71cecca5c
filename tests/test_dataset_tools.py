"""Step 13's tools for the people who label: likely label errors kept on the items (the Review
queue's order, the Dataset page's filter and column), the map of the dataset and "more like this"."""
from __future__ import annotations

import json
import os

import numpy as np

from fusion.privacy.shown import Shown
from fusion.services import review
from fusion.store.labeling import ItemFilter, NewItem

from helpers import started


def small_project(settings, store, demo_project, name: str, per_label: int = 6):
    """A project of the first `per_label` demo pages of each label, labeled as the demo labels them."""
    from fusion.imaging.images import check_image_file

    if name in store.project_names():
        return store.project(name)
    store.create_project(name, demo_project.labels, user="annotator")
    chosen = {}
    for item in store.iter_items(demo_project.name):
        if item.label and len(chosen.setdefault(item.label, [])) < per_label:
            chosen[item.label].append(item)
    store.add_items(name, [NewItem(check_image_file(store.image_path(i), settings), i.filename, label=i.label,
                                   caption=i.caption, ocr_text=i.ocr_text, ocr_engine=i.ocr_engine)
                           for items in chosen.values() for i in items], user="annotator")
    return store.project(name)


def check(item, quality: float, flagged: bool, suggested: str) -> dict:
    return {"item_id": item.id, "label": item.label, "quality": quality, "flagged": flagged, "suggested": suggested,
            "heads": {"image": suggested, "text": item.label, "fused": suggested}}


def test_flagged_labels_are_queued_until_a_person_decides_and_stay_decided(settings, demo_project):
    from fusion.store.labeling import open_store

    store = open_store(settings)
    project = small_project(settings, store, demo_project, "checked")
    a, b, c = list(store.iter_items(project.name))[:3]
    other = next(label for label in project.labels if label != a.label)
    assert store.save_label_checks(project.name, [check(a, 0.05, True, other), check(b, 0.02, True, other),
                                                  check(c, 0.9, False, c.label)]) == 3
    flagged = store.list_items(project.name, review.queue_filter("likely mislabeled")).items
    assert [i.id for i in flagged] == [b.id, a.id]                       # least likely label first
    assert review.next_in_queue(store, project.name, strategy="likely mislabeled").id == b.id
    assert store.list_items(project.name, ItemFilter(likely_mislabeled=True), limit=0).total == 2
    assert store.item(project.name, b.id).version == b.version         # a check is not a person's edit

    kept = store.set_label(project.name, b.id, b.label, "rae", expected_version=b.version)
    assert (kept.check_flagged, kept.check_reviewed_by, kept.label) == (False, "rae", b.label)
    assert review.next_in_queue(store, project.name, strategy="likely mislabeled").id == a.id

    # Checked again: the label a person kept is not flagged again; a check of a label changed
    # meanwhile (its item was corrected after the check began) does not land.
    corrected = store.set_label(project.name, a.id, other, "rae", expected_version=a.version)
    assert store.save_label_checks(project.name, [check(a, 0.01, True, c.label), check(kept, 0.01, True, other)]) == 1
    assert store.item(project.name, b.id).check_flagged is False
    assert (store.item(project.name, a.id).label, store.item(project.name, a.id).check_flagged) == (other, False)
    assert corrected.check_reviewed_by == "rae"
    assert review.next_in_queue(store, project.name, strategy="likely mislabeled") is None

    # A label changed later, not while flagged, is one nobody weighed against a check: flagged again.
    relabel = next(label for label in project.labels if label != b.label)
    changed = store.set_label(project.name, b.id, relabel, "sam",
                              expected_version=store.item(project.name, b.id).version)
    assert changed.check_reviewed_by is None
    store.save_label_checks(project.name, [check(changed, 0.01, True, b.label)])
    assert review.next_in_queue(store, project.name, strategy="likely mislabeled").id == b.id


def test_label_issues_job_checks_every_label_of_a_project(settings, demo_project):
    """The worker's label_issues job on a small project: every labeled item checked, kept on the item."""
    from fusion.jobs.queue import Jobs
    from fusion.jobs.worker import run_job
    from fusion.store.labeling import open_store

    store = open_store(settings)
    project = small_project(settings, store, demo_project, "checked_by_job", per_label=5)
    jobs = Jobs(store)
    job = jobs.submit(project.name, "label_issues", {}, "rae")
    claimed = jobs.claim_next(os.getpid(), ("label_issues",))
    assert claimed.id == job.id
    run_job(settings, store, jobs, claimed)
    done = jobs.get(job.id)
    assert done.status == "succeeded", done.error
    assert done.result["items"] == done.result["saved"] == 30
    items = list(store.iter_items(project.name))
    assert all(i.check_quality is not None and i.check_suggested in project.labels for i in items)
    assert all(set(i.check_heads) == {"image", "text", "fused"} for i in items)
    assert sum(bool(i.check_flagged) for i in items) == done.result["flagged"] <= 3   # the demo's labels are right


def test_cli_label_issues_ranks_every_labeled_item_and_keeps_the_checks(settings, demo_project, capsys):
    from fusion.cli.main import main
    from fusion.store.labeling import open_store

    store = open_store(settings)
    project = small_project(settings, store, demo_project, "checked_by_job", per_label=5)   # features cached
    assert main(["--home", str(settings.home), "label-issues", project.name, "--top", "3", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["items"] == shown["saved"] == 30 and len(shown["issues"]) == 3
    first = shown["issues"][0]
    assert set(first) == {"item_id", "label", "suggested", "quality", "flagged", "heads"}
    checked = list(store.iter_items(project.name))
    assert sum(bool(i.check_flagged) for i in checked) == shown["flagged"]
    least = min(checked, key=lambda i: (not i.check_flagged, i.check_quality))
    assert (least.id, least.check_quality, least.check_suggested) == (first["item_id"], first["quality"],
                                                                        first["suggested"])   # most suspect first


def test_similar_pages_share_their_label_and_answer_from_one_matrix(settings, demo_project):
    from fusion.ml.embeddings import load_embeddings, nearest
    from fusion.store.labeling import open_store

    store = open_store(settings)
    embeddings = load_embeddings(demo_project)            # the demo build computes them
    assert embeddings is not None and embeddings.version == demo_project.active_model
    assert embeddings.vectors.shape == (len(embeddings.item_ids), 128)
    assert np.allclose(np.linalg.norm(embeddings.vectors, axis=1), 1.0, atol=1e-4)
    labels = store.labels_of(demo_project.name, embeddings.item_ids.tolist())
    same = []
    for item_id in embeddings.item_ids[::40].tolist():
        if item_id in labels:
            found = nearest(embeddings, item_id, 8)
            assert item_id not in [i for i, _ in found] and [s for _, s in found] == sorted((s for _, s in found),
                                                                                            reverse=True)
            same += [labels.get(i) == labels[item_id] for i, _ in found]
    assert np.mean(same) >= 0.9, np.mean(same)            # the demo's classes are apart


def test_map_samples_past_its_limit_and_colours_by_what_is_asked():
    from fusion.ml.embeddings import Embeddings
    from fusion.services.dataset_map import map_figure, map_points

    n = 3000
    rng = np.random.default_rng(0)
    embeddings = Embeddings("v1", np.arange(1, n + 1, dtype=np.int64), np.zeros((n, 4), np.float32),
                            rng.normal(size=(n, 2)).astype(np.float32), 0.3, None)
    facts = {"id": list(range(1, n + 11)), "filename": [f"{i}.png" for i in range(n + 10)],
             "label": ["a", "b", None] * ((n + 10) // 3) + ["a"] * ((n + 10) % 3),
             "status": ["accepted"] * (n + 10), "pred_label": ["a"] * (n + 10),
             "check_quality": [0.1, None] * ((n + 10) // 2)}
    points = map_points(embeddings, facts, limit=1000)
    assert (len(points.frame), points.embedded, points.not_embedded) == (1000, n, 10)
    assert points.frame["item_id"].is_unique and map_points(embeddings, facts, limit=1000).frame.equals(points.frame)
    row = points.frame.iloc[0]
    assert row["filename"] == f"{row['item_id'] - 1}.png"            # each point's facts are its own
    by_label = map_figure(points, "label", Shown(False))
    assert sorted(t.name for t in by_label.data) == ["a", "b", "none"]
    assert sum(len(t.x) for t in by_label.data) == 1000
    by_score = map_figure(points, "likely-error score", Shown(False))
    assert [t.name for t in by_score.data] == ["not checked", "checked"]
    assert np.allclose(by_score.data[1].marker.color, 0.9)


def test_dataset_page_map_filter_column_and_similar_list(settings, demo_project):
    from fusion.ml.embeddings import load_embeddings
    from fusion.privacy.display_text import literal
    from fusion.store.labeling import open_store

    store = open_store(settings)
    project = small_project(settings, store, demo_project, "checked_on_page")
    first = next(store.iter_items(project.name))
    other = next(label for label in project.labels if label != first.label)
    store.save_label_checks(project.name, [check(first, 0.03, True, other)])
    app = started(demo_project)
    app.session_state["project"] = project.name
    app.switch_page("pages/dataset.py").run()
    assert not app.exception, app.exception
    assert "No map yet" in " ".join(c.value for c in app.caption)    # a new project: offered, computed on demand
    app.selectbox(key="ds_check").set_value("likely mislabeled").run()
    table = app.dataframe[0].value
    assert table["id"].tolist() == [first.id]
    assert table["check"].iloc[0] == f"⚑ likely {other} (97%)"

    # The demo project has embeddings: its map, and the items most like the one chosen.
    app.session_state["project"] = demo_project.name
    app.selectbox(key="ds_check").set_value("any").run()
    assert not app.exception, app.exception
    assert any("principal components" in c.value for c in app.caption)
    # An item embedded with the map (other tests may have added items to the demo since).
    embedded_ids = set(load_embeddings(demo_project).item_ids.tolist())
    picker = app.selectbox(key="ds_item")
    picker.select_index(next(n for n, shown in enumerate(picker.options)
                             if int(shown.split(" · ")[0]) in embedded_ids)).run()
    similar = next(d.value for d in app.dataframe if "similarity" in d.value.columns)
    assert len(similar) == 8 and similar["similarity"].between(-1, 1).all()
    chosen = app.selectbox(key="ds_item").value
    assert (similar["label"] == chosen.label).mean() >= 0.75

    # A selection on the map lists those items in the table.
    embedded = store.items_by_id(demo_project.name, [int(i) for i in store.item_facts(demo_project.name)["id"][:3]])
    app.session_state["ds_map"] = {"selection": {"points": [{"customdata": [i.id]} for i in embedded],
                                                 "point_indices": [], "box": [], "lasso": []}}
    app.run()
    assert not app.exception, app.exception
    assert sorted(app.dataframe[0].value["id"].tolist()) == sorted(i.id for i in embedded)
    # ... and shows their pages, with file name and label (a chart's hover can't show an image).
    assert len(app.get("image")) == 3
    for item in embedded:    # file names are shown as markdown that renders them exactly ("\\_")
        assert any(literal(item.filename) in c.value and f"**{item.label}**" in c.value for c in app.caption), item


def test_review_serves_likely_mislabeled_items_and_keep_takes_one_off_the_list(settings, demo_project):
    from fusion.store.labeling import open_store

    store = open_store(settings)
    project = small_project(settings, store, demo_project, "kept_on_review")
    first, second = list(store.iter_items(project.name))[:2]
    wrong = next(label for label in project.labels if label != first.label)
    first = store.set_label(project.name, first.id, wrong, "sam", expected_version=first.version)  # the model disagrees
    store.save_label_checks(project.name, [check(first, 0.02, True, second.label), check(second, 0.2, True, wrong)])
    app = started(demo_project)
    app.selectbox(key="project").set_value(project.name).run()
    app.selectbox(key="queue_strategy").set_value("likely mislabeled").run()
    assert app.button(key="next_item").label == "Next in queue (2)"
    app.button(key="next_item").click().run()
    assert not app.exception, app.exception
    assert app.session_state["page"]["item_id"] == first.id                  # least likely label first
    assert any("Likely mislabeled" in w.value and f"Labeled **{wrong}**" in w.value for w in app.warning)
    app.button(key="keep_label").click().run()
    assert not app.exception, app.exception
    kept = store.item(project.name, first.id)
    assert (kept.label, kept.check_flagged, kept.check_reviewed_by, kept.version) == (wrong, False, "reviewer",
                                                                                      first.version + 1)
    assert store.history(project.name, first.id)[-1].user == "reviewer"
    assert app.session_state["page"]["item_id"] == second.id                 # the next on the list
    assert app.button(key="next_item").label == "Next in queue (1)"
