"""The labeling store: items stored once, splits stable, every change in an append-only history,
stale edits refused, old workspaces upgraded, export -> import reproducing a project exactly."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import datetime

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import create_engine, inspect, text

from fusion.store.database import create_database_engine, schema_revision, upgrade_schema
from fusion.core.errors import FusionError
from fusion.services.exporting import export_project
from fusion.imaging.images import check_image_file
from fusion.services.importing import import_path
from fusion.core.settings import REPO_ROOT, load_settings
from fusion.store.labeling import ItemFilter, NewItem, Shown, StaleEdit, Store, split_of

LABELS = {"cat": "a cat", "dog": "a dog", "bird": ""}


def png(seed: int, size=(40, 30), fmt="PNG") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


@pytest.fixture
def store(tmp_path, database_url):
    store = Store(load_settings(home=tmp_path, database_url=database_url))
    store.create_project("pets", LABELS, user="ann")
    return store


def add(store, seed, name=None, **fields):
    new = NewItem(check_image_file(png(seed), store.settings), name or f"img{seed}.png", **fields)
    (item, outcome), = store.add_items("pets", [new], user="ann")
    return item, outcome


def test_the_same_file_twice_is_one_item_stored_once(store):
    first, outcome = add(store, 1, "a.png")
    again, outcome2 = add(store, 1, "copy-of-a.png")
    assert (outcome, outcome2) == ("added", "already in the project") and again.id == first.id
    files = [p for p in store.settings.images_dir.rglob("*") if p.is_file()]
    assert files == [store.image_path(first)] and files[0].read_bytes() == png(1)
    assert first.filename == "a.png" and first.size == len(png(1)) and (first.width, first.height) == (40, 30)
    assert first.split == split_of(first.sha256) and first.status == "unlabeled" and first.added_by == "ann"
    assert not list(store.settings.images_dir.glob(".staging/*"))   # staging cleaned up


def test_splits_come_from_the_hash_and_are_roughly_70_15_15():
    from hashlib import sha256

    splits = [split_of(sha256(str(i).encode()).hexdigest()) for i in range(3000)]
    shares = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
    assert 0.66 < shares["train"] < 0.74 and 0.12 < shares["val"] < 0.18 and 0.12 < shares["test"] < 0.18


def test_accept_correct_and_history_record_who_when_what_and_the_suggestion_shown(store):
    item, _ = add(store, 2, caption="first note")
    store.record_prediction("pets", item.id, "dog", 0.71, {"cat": 0.2, "dog": 0.71, "bird": 0.09}, "v3")
    predicted = store.item("pets", item.id)
    assert predicted.status == "predicted" and predicted.version == 1   # machine output: no new version
    accepted = store.set_label("pets", item.id, "dog", "bob", expected_version=1)
    assert (accepted.label, accepted.status, accepted.version) == ("dog", "accepted", 2)
    shown = Shown("dog", 0.71, "v3")
    corrected = store.set_label("pets", item.id, "cat", "cy", expected_version=2, shown=shown)
    assert (corrected.label, corrected.status, corrected.updated_by) == ("cat", "corrected", "cy")
    store.set_caption("pets", item.id, "second note", "cy", expected_version=3)

    history = store.history("pets", item.id)
    assert [h.action for h in history] == ["add", "predict", "accept", "correct", "caption"]
    assert [h.item_version for h in history] == [1, 1, 2, 3, 4]
    correct = history[3]
    assert (correct.user, correct.old_label, correct.new_label) == ("cy", "dog", "cat")
    assert (correct.model_version, correct.shown_label, correct.shown_confidence) == ("v3", "dog", 0.71)
    assert (history[4].old_caption, history[4].new_caption) == ("first note", "second note")
    assert all(isinstance(h.at, datetime) for h in history) and history[0].at <= history[-1].at


def test_a_stale_edit_is_refused_and_nothing_is_overwritten(store):
    item, _ = add(store, 3)
    store.set_label("pets", item.id, "cat", "ann", expected_version=item.version)
    with pytest.raises(StaleEdit, match=r"changed by ann .* not saved"):
        store.set_label("pets", item.id, "dog", "bob", expected_version=item.version)
    with pytest.raises(StaleEdit):
        store.set_caption("pets", item.id, "bob's note", "bob", expected_version=item.version)
    now = store.item("pets", item.id)
    assert (now.label, now.caption, now.version) == ("cat", "", 2)
    assert [h.user for h in store.history("pets", item.id)] == ["ann", "ann"]


def test_history_is_append_only_in_the_database_itself(store):
    item, _ = add(store, 4)
    for sql in ("UPDATE history SET \"user\" = 'mallory'", "DELETE FROM history"):
        with store.db.engine.connect() as connection, pytest.raises(Exception, match="append-only"):
            connection.exec_driver_sql(sql)
    assert [h.user for h in store.history("pets", item.id)] == ["ann"]


def test_bad_labels_and_names_are_refused_clearly(store):
    item, _ = add(store, 5)
    with pytest.raises(FusionError, match="unknown label 'zebra'.*cat, dog, bird"):
        store.set_label("pets", item.id, "zebra", "ann", expected_version=1)
    with pytest.raises(FusionError, match="already exists"):
        store.create_project("pets", LABELS, "ann")
    with pytest.raises(FusionError, match="bad project name"):
        store.create_project("../etc", LABELS, "ann")
    with pytest.raises(FusionError, match="bad label"):
        store.create_project("p2", {"a/b": "", "c": ""}, "ann")
    with pytest.raises(FusionError, match="no item"):
        store.item("pets", "nope")


def test_listing_filters_sorts_and_pages(store):
    items = [add(store, 10 + i, f"scan-{i:02d}.png", caption="chest x-ray" if i % 3 == 0 else "")[0]
             for i in range(12)]
    for i, item in enumerate(items[:6]):
        store.record_prediction("pets", item.id, "cat", 0.5 + i / 20, {"cat": 0.5 + i / 20}, "v1")
    store.set_label("pets", items[0].id, "dog", "ann", expected_version=1)

    page = store.list_items("pets", ItemFilter(status=("predicted",), sort="confidence", descending=False), limit=3)
    assert page.total == 5 and [i.pred_confidence for i in page.items] == pytest.approx([0.55, 0.6, 0.65])
    second = store.list_items("pets", ItemFilter(sort="filename", descending=False), offset=10, limit=5)
    assert [i.filename for i in second.items] == ["scan-10.png", "scan-11.png"] and second.total == 12
    assert store.list_items("pets", ItemFilter(search="X-RAY")).total == 4
    assert store.list_items("pets", ItemFilter(search="100%_")).total == 0
    add(store, 99, "odd.png", caption="saturation 50% (room air)")
    assert [i.filename for i in store.list_items("pets", ItemFilter(search="%")).items] == ["odd.png"]  # no words:
    assert store.list_items("pets", ItemFilter(search="_")).total == 0                # a literal LIKE, not a wildcard
    assert [i.id for i in store.list_items("pets", ItemFilter(label="dog")).items] == [items[0].id]
    words = [{"text": "Troponin", "conf": 0.93, "box": [1, 2, 30, 12]}]
    read = store.set_ocr("pets", items[5].id, "Troponin raised", words, "easyocr 1.7.2", "ocr", ms=1234.5, angle=90)
    assert read.version == 1 and store.ocr_words(read) == words   # machine output: no new version
    assert store.ocr_reading(read) == (words, 1234.5, 90)         # "read earlier: 1.2 s", page turned 90°
    assert [i.id for i in store.list_items("pets", ItemFilter(search="tropo")).items] == [items[5].id]
    assert store.project_info("pets")["by_status"] == {
        "unlabeled": 7, "predicted": 5, "accepted": 0, "corrected": 1, "skipped": 0}


def test_a_workspace_from_an_older_schema_opens_and_keeps_its_data(tmp_path, database_url):
    url = database_url or f"sqlite:///{tmp_path / 'fusion.db'}"
    engine = create_database_engine(url)
    upgrade_schema(engine, "0001")
    old_item = check_image_file(png(7), load_settings(home=tmp_path))
    with engine.begin() as c:
        c.execute(text("INSERT INTO projects (name, labels, created_at, created_by) VALUES "
                       "('old', '[{\"name\": \"a\"}, {\"name\": \"b\"}]', '2026-01-01 00:00:00', 'ann')"))
        c.execute(text(
            "INSERT INTO items (project_id, sha256, extension, filename, size, width, height, split, added_at, "
            "added_by, caption, status, version, updated_at, updated_by) VALUES (1, :sha, '.png', 'old.png', 1, "
            "40, 30, 'train', '2026-01-01 00:00:00', 'ann', 'an echocardiogram report', 'unlabeled', 1, "
            "'2026-01-01 00:00:00', 'ann')"), {"sha": old_item.sha256})
    assert schema_revision(engine) == "0001"
    assert "ix_items_status_updated" not in {i["name"] for i in inspect(engine).get_indexes("items")}
    engine.dispose()

    store = Store(load_settings(home=tmp_path, database_url=database_url))
    assert schema_revision(store.db.engine) == "0013"
    assert store.project("old").labels == {"a": "", "b": ""}
    assert {"ix_items_status_updated", "ix_items_updated_by", "ix_items_ood"} <= {i["name"] for i in inspect(store.db.engine).get_indexes("items")}
    found = store.list_items("old", ItemFilter(search="echocardio")).items   # indexed by the migration
    assert [i.filename for i in found] == ["old.png"]
    store.set_label("old", found[0].id, "a", "bob", expected_version=1)
    with pytest.raises(Exception, match="append-only"), store.db.engine.begin() as c:
        c.exec_driver_sql("DELETE FROM history")


def test_a_step_one_workspace_with_json_projects_is_adopted(tmp_path):
    folder = tmp_path / "projects" / "legacy"
    folder.mkdir(parents=True)
    (folder / "project.json").write_text(json.dumps(
        {"name": "legacy", "labels": {"x": "first", "y": ""}, "directory": None, "active_model": None}))
    store = Store(load_settings(home=tmp_path))
    assert store.project("legacy").labels == {"x": "first", "y": ""}
    assert not (folder / "project.json").exists()  # adopted once; the database is the truth now


def test_a_newer_database_is_refused_clearly(tmp_path):
    url = f"sqlite:///{tmp_path / 'fusion.db'}"
    Store(load_settings(home=tmp_path))
    with create_engine(url).begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    from fusion.store.database import Database

    with pytest.raises(FusionError, match="newer FusionLab"):
        Database(url)


ODD_CAPTIONS = ["", "plain", 'commas, "quotes", and\nnew lines', "naïve café — 東京 🩺", "  spaces kept  ", "=1+1"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "imagefolder", "hf"])
def test_export_then_import_reproduces_every_item_label_and_caption(store, tmp_path, fmt):
    for i, caption in enumerate(ODD_CAPTIONS):
        label = [None, "cat", "dog", "bird"][i % 4]
        add(store, 100 + i, "same-name.png" if i < 3 else f"f,{i} ü.png", label=label, caption=caption,
            ocr_text=f"page {i} text" if i % 2 else None, ocr_engine="easyocr 1.7.2" if i % 2 else None)
    jpeg = NewItem(check_image_file(png(200, fmt="JPEG"), store.settings), "photo.jpeg", label="cat")
    store.add_items("pets", [jpeg], "ann")

    out = tmp_path / f"export-{fmt}"
    summary = export_project(store, "pets", fmt, out)
    assert summary["items"] == len(ODD_CAPTIONS) + 1
    source = {"csv": out / "items.csv", "jsonl": out / "items.jsonl"}.get(fmt, out)
    store.create_project("copy", LABELS, "bob")
    report = import_path(store, "copy", source, "bob")
    assert report.problems == [] and report.added == len(ODD_CAPTIONS) + 1

    def snapshot(name):
        return sorted((i.sha256, i.label, i.caption, i.filename, i.ocr_text, i.split, i.extension)
                      for i in store.iter_items(name))
    assert snapshot("copy") == snapshot("pets")
    with pytest.raises(FusionError, match="not an empty folder"):
        export_project(store, "pets", fmt, out)


def test_cli_create_import_label_history_export(tmp_path):
    images = tmp_path / "incoming"
    for label in ("cat", "dog"):
        (images / label).mkdir(parents=True)
        for i in range(3):
            (images / label / f"{label}{i}.png").write_bytes(png(500 + 10 * ("cat", "dog").index(label) + i))
    (images / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "fusion", "--home", str(tmp_path / "ws"), *args],
                              capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)

    assert cli("project", "create", "pets", "--labels", "cat,dog").returncode == 0
    imported = cli("import", "pets", str(images), "--json")
    assert imported.returncode == 1   # some rows had problems: scripts must notice
    report = json.loads(imported.stdout)
    assert report["added"] == 6 and report["problems"][0]["where"] == "cat/broken.png"
    assert "skipped cat/broken.png" in imported.stderr
    assert cli("import", "pets", str(images)).stdout.startswith("imported 0 new items")

    labeled = cli("label", "pets", "dog1.png", "cat", "--user", "rita", "--json")
    assert labeled.returncode == 0 and json.loads(labeled.stdout)["status"] == "accepted"
    stale = cli("label", "pets", "dog1.png", "dog", "--user", "sam", "--expect-version", "1")
    assert stale.returncode == 2 and stale.stderr.startswith("error: item") and "rita" in stale.stderr
    shown = cli("history", "pets", "dog1.png", "--json")
    assert shown.returncode == 0, shown.stderr
    history = json.loads(shown.stdout)["history"]
    assert [(h["user"], h["action"], h["new_label"]) for h in history][-1] == ("rita", "label", "cat")
    listing = json.loads(cli("project", "list", "--json").stdout)["projects"]
    assert listing[0]["items"] == 6 and listing[0]["by_status"]["accepted"] == 6
    exported = cli("export", "pets", "--format", "csv", str(tmp_path / "out"))
    assert exported.returncode == 0 and (tmp_path / "out" / "items.csv").read_text().count("\n") == 7
    missing = cli("import", "nope", str(images))
    assert missing.returncode == 2 and missing.stderr.startswith("error: no project 'nope'")


def test_search_counts_up_to_a_cap_and_still_pages_in_sort_order(store):
    from fusion.bench.store import fill
    from fusion.store.labeling import SEARCH_COUNT_CAP

    fill(store, "pets", SEARCH_COUNT_CAP + 200)   # rows only, text from a 15-word vocabulary
    store.optimize()
    common = store.list_items("pets", ItemFilter(search="patient", sort="filename", descending=False), limit=50)
    assert common.total_is_capped and common.total == SEARCH_COUNT_CAP and len(common.items) == 50
    names = [i.filename for i in common.items]
    assert names == sorted(names) and all("patient" in f"{i.caption} {i.ocr_text}" for i in common.items)
    one = store.list_items("pets", ItemFilter(search="scan-000417"))
    assert (one.total, one.total_is_capped, [i.filename for i in one.items]) == (1, False, ["scan-000417.png"])
    plain = store.list_items("pets", ItemFilter())
    assert plain.total == SEARCH_COUNT_CAP + 200 and not plain.total_is_capped


def test_uploaded_zips_unpack_safely_into_what_import_reads(tmp_path):
    import zipfile

    from fusion.services.importing import unpack_upload

    def zipped(entries: dict[str, bytes]) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as archive:
            for name, data in entries.items():
                archive.writestr(name, data)
        return out.getvalue()

    folder = unpack_upload("scans.zip", zipped({"scans/cat/a.png": png(1), "scans/dog/b.png": png(2)}), tmp_path / "u1")
    assert folder.name == "scans" and (folder / "cat" / "a.png").read_bytes() == png(1)
    table = unpack_upload("t.zip", zipped({"labels.csv": b"image,label\na.png,cat\n", "a.png": png(3)}), tmp_path / "u2")
    assert table.name == "labels.csv"
    with pytest.raises(FusionError, match="outside the archive"):
        unpack_upload("evil.zip", zipped({"../../escaped.txt": b"x"}), tmp_path / "u3")
    assert not list(tmp_path.rglob("escaped.txt"))
    with pytest.raises(FusionError, match="not a readable zip"):
        unpack_upload("broken.zip", b"PK\x03\x04 garbage", tmp_path / "u4")
    with pytest.raises(FusionError, match="upload a .zip"):
        unpack_upload("notes.txt", b"hello", tmp_path / "u5")


def test_the_latest_predictions_ood_score_filters_and_sorts(store):
    items = [add(store, 200 + i)[0] for i in range(4)]
    for item, score in zip(items, (0.4, 2.5, None, 1.3)):
        store.record_prediction("pets", item.id, "cat", 0.9, {"cat": 0.9}, "v1", ood_score=score)
    unusual = store.list_items("pets", ItemFilter(in_distribution=False, sort="ood", descending=True))
    assert [i.pred_ood for i in unusual.items] == [2.5, 1.3]
    assert [i.id for i in store.list_items("pets", ItemFilter(in_distribution=True)).items] == [items[0].id]
    assert store.list_items("pets", ItemFilter()).total == 4        # no score (an older version): in neither
