"""The store under stress: concurrent reviewers in separate processes, an import killed with
SIGKILL half-way, and malformed import files. Real SQLite, real files, real processes, no mocks;
every workspace is a fresh tmp_path (none of conftest's demo fixtures)."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fusion.core.errors import FusionError
from fusion.imaging.images import check_image_file
from fusion.services.importing import import_path
from fusion.core.settings import load_settings
from fusion.store.labeling import NewItem, Store

from helpers import png_bytes

ROOT = Path(__file__).resolve().parent.parent
LABEL_ACTIONS = ("accept", "correct", "label")


@pytest.fixture(autouse=True)
def _no_workspace_env(monkeypatch):
    """Only the explicit home counts: no FUSION_* from the caller's shell or another test."""
    for name in list(os.environ):
        if name.startswith("FUSION_"):
            monkeypatch.delenv(name)


def child_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUSION_")}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def connect(home: Path, readonly: bool = False) -> sqlite3.Connection:
    db = home / "fusion.db"
    if readonly:
        return sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None, timeout=30)
    return sqlite3.connect(db, isolation_level=None, timeout=30)


def integrity(home: Path) -> str:
    with connect(home) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def blob_files(home: Path) -> list[Path]:
    """Every file under images/, outside the staging folder."""
    images = home / "images"
    if not images.is_dir():
        return []
    return sorted(p for p in images.rglob("*") if p.is_file() and ".staging" not in p.relative_to(images).parts)


def staging_leftovers(home: Path) -> list[Path]:
    staging = home / "images" / ".staging"
    return sorted(staging.rglob("*")) if staging.exists() else []


def assert_files_match_rows(store: Store, home: Path) -> None:
    """Every stored file has a row with its SHA-256, and every row's file exists with those bytes."""
    with connect(home, readonly=True) as conn:
        rows = conn.execute("SELECT id, sha256, extension FROM items").fetchall()
    shas = {sha: ext for _, sha, ext in rows}
    for path in blob_files(home):
        digest = sha256_of(path)
        assert path.stem == digest, f"{path} holds bytes with SHA-256 {digest}"
        assert path.parent.name == digest[:2], f"{path} is in the wrong folder"
        assert shas.get(digest) == path.suffix, f"{path} has no item row"
    for item_id, sha, ext in rows:
        path = store.blobs.path(sha, ext)
        assert path.is_file(), f"item {item_id} has no file at {path}"
        assert sha256_of(path) == sha, f"item {item_id}'s file {path} has other bytes"


# ---- 1. concurrent reviewers ------------------------------------------------------------------

WORKER = r"""
import json, os, random, sys, time
from fusion.core.settings import load_settings
from fusion.store.labeling import Store, StaleEdit

home, project, index, saves, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
store = Store(load_settings(home=home))
ids = json.loads(open(os.path.join(home, "item_ids.json")).read())
labels = list(store.project(project).labels)
rng = random.Random(index)
user = f"w{index}"
open(os.path.join(home, f"ready-{index}"), "w").close()
while not os.path.exists(go):
    time.sleep(0.002)
saved = stale = 0
while saved < saves:
    item = store.item(project, rng.choice(ids))          # the reviewer opens an item...
    while True:
        try:                                             # ...and saves a decision against that version
            store.set_label(project, item.id, rng.choice(labels), user, expected_version=item.version)
            saved += 1
            break
        except StaleEdit:                                # someone else saved first: reload, decide again
            stale += 1
            item = store.item(project, item.id)
print(json.dumps({"user": user, "saved": saved, "stale": stale}))
"""


def test_eight_processes_saving_200_corrections_each_lose_nothing(tmp_path):
    workers, saves, n_items = 8, 200, 50
    home = tmp_path / "home"
    settings = load_settings(home=home)
    store = Store(settings)
    store.create_project("race", {"cat": "", "dog": "", "bird": ""}, user="setup")
    added = store.add_items("race", [NewItem(check_image_file(png_bytes(i), settings), f"img{i}.png")
                                     for i in range(n_items)], user="setup")
    assert [outcome for _, outcome in added] == ["added"] * n_items
    ids = [item.id for item, _ in added]
    # Half the items carry a model suggestion (not a version bump): saving on them is an accept or a
    # correction; on the other half it is a plain label.
    predicted = set(ids[::2])
    for n, item_id in enumerate(sorted(predicted)):
        label = ("cat", "dog", "bird")[n % 3]
        store.record_prediction("race", item_id, label, 0.8, {"cat": 0.1, "dog": 0.1, "bird": 0.1} | {label: 0.8}, "m1")
    (home / "item_ids.json").write_text(json.dumps(ids))

    go = home / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(home), "race", str(i), str(saves), str(go)],
                              cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(workers)]
    try:
        deadline = time.monotonic() + 120
        while not all((home / f"ready-{i}").exists() for i in range(workers)):
            failed = [p for p in procs if p.poll() is not None]
            assert not failed, failed[0].communicate()[1]
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.01)
        start = time.perf_counter()
        go.touch()  # all at once
        outputs = [p.communicate(timeout=300) for p in procs]
        elapsed = time.perf_counter() - start
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    stale = sum(r["stale"] for r in results)
    print(f"\n{workers} x {saves} saves in {elapsed:.1f} s, {stale} stale edits refused and retried")
    assert [r["saved"] for r in results] == [saves] * workers
    assert stale > 0, "the workers never contended; the test proves nothing"
    assert elapsed < 120

    assert integrity(home) == "ok"
    users = [f"w{i}" for i in range(workers)]
    with connect(home, readonly=True) as conn:
        per_user = dict(conn.execute(
            f"SELECT user, count(*) FROM history WHERE user IN ({','.join('?' * workers)}) GROUP BY user", users))
        actions = {a for (a,) in conn.execute("SELECT DISTINCT action FROM history WHERE user LIKE 'w%'")}
        label_rows = conn.execute(f"SELECT count(*) FROM history WHERE action IN {LABEL_ACTIONS}").fetchone()[0]
        items = {i: (v, label, status) for i, v, label, status in
                 conn.execute("SELECT id, version, label, status FROM items")}
    assert per_user == {u: saves for u in users}
    assert actions <= set(LABEL_ACTIONS)
    assert label_rows == workers * saves  # nobody else labeled: no lost and no extra decision

    total = 0
    for item_id in ids:
        history = store.history("race", item_id)
        assert [h.action for h in history[:1]] == ["add"] and history[0].item_version == 1
        machine = [h for h in history if h.action == "predict"]
        assert len(machine) == (item_id in predicted) and all(h.item_version == 1 for h in machine)
        events = [h for h in history if h.action in LABEL_ACTIONS]
        assert len(history) == 1 + len(machine) + len(events), [h.action for h in history]
        version, label, status = items[item_id]
        assert version == 1 + len(events)
        assert [h.item_version for h in events] == list(range(2, len(events) + 2))
        # Each decision was made against the state the previous one left: no overwritten decision.
        assert [h.old_label for h in events] == [None] + [h.new_label for h in events[:-1]]
        assert {h.action for h in events} <= ({"accept", "correct"} if item_id in predicted else {"label"})
        last = events[-1] if events else None
        assert label == (last.new_label if last else None)
        assert not last or status == ("corrected" if last.action == "correct" else "accepted")
        assert store.item("race", item_id).version == version
        total += len(events)
    assert total == workers * saves


# ---- 2. an import killed with SIGKILL ---------------------------------------------------------

def make_image_folder(root: Path, n: int) -> dict[str, str]:
    """An ImageFolder (label/file.png) of n distinct PNGs; returns {sha256: label}."""
    expected = {}
    for i in range(n):
        label = ("cat", "dog")[i % 2]
        data = png_bytes(10_000 + i, size=64)
        (root / label).mkdir(parents=True, exist_ok=True)
        (root / label / f"img{i:04d}.png").write_bytes(data)
        expected[hashlib.sha256(data).hexdigest()] = label
    assert len(expected) == n
    return expected


def staged_files(home: Path) -> list[Path]:
    staging = home / "images" / ".staging"
    if not staging.is_dir():
        return []
    return [p for p in staging.glob("*/*") if p.suffix == ".png"]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fusion", *args], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=timeout)


def kill_import_with_files_staged(tmp_path, folder, total: int, attempts: int = 3):
    """A fresh workspace whose `import` was SIGKILLed once a batch had committed and the next was
    being staged: (home, committed shas, staged files). The import can promote its staged files
    between the check and the kill; then it is tried again in a new workspace."""
    for attempt in range(attempts):
        home = tmp_path / f"home{attempt}"
        done = run_cli("--home", str(home), "project", "create", "killed", "--labels", "cat,dog", "--user", "setup")
        assert done.returncode == 0, done.stderr
        log = open(tmp_path / "import.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "fusion", "--home", str(home), "import", "killed", str(folder),
                                 "--user", "importer"], cwd=ROOT, env=child_env(), stdout=log, stderr=log)
        conn = connect(home, readonly=True)
        try:
            deadline = time.monotonic() + 120
            while True:
                assert proc.poll() is None, "the import finished before it could be killed: " + \
                    (tmp_path / "import.log").read_text()
                assert time.monotonic() < deadline, "the import made no progress"
                count = conn.execute("SELECT count(*) FROM items").fetchone()[0]
                if 0 < count < total and staged_files(home):
                    break
                time.sleep(0.002)
        finally:
            conn.close()
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        log.close()
        assert integrity(home) == "ok"
        with connect(home, readonly=True) as conn:
            committed_shas = {sha for (sha,) in conn.execute("SELECT sha256 FROM items")}
        print(f"\nkilled with {len(committed_shas)} of {total} items committed, {len(staged_files(home))} files staged")
        assert 0 < len(committed_shas) < total, "the kill did not land mid-import"
        in_flight = {p.stem: p.suffix for p in staged_files(home)}
        if in_flight:
            return home, committed_shas, in_flight
    pytest.fail(f"in {attempts} imports no kill landed while files were staged")


def test_import_killed_midway_leaves_a_consistent_workspace_and_finishes_on_rerun(tmp_path):
    total = 600
    folder = tmp_path / "folder"
    expected = make_image_folder(folder, total)
    home, committed_shas, in_flight = kill_import_with_files_staged(tmp_path, folder, total)
    committed = len(committed_shas)

    store = Store(load_settings(home=home))  # opening the store recovers the dead writer's staging folder
    assert staging_leftovers(home) == []
    for sha, ext in in_flight.items():  # staged files with a row were promoted, the others deleted
        assert store.blobs.path(sha, ext).is_file() == (sha in committed_shas)
    assert_files_match_rows(store, home)
    assert {sha256_of(p) for p in blob_files(home)} == committed_shas

    report = import_path(store, "killed", folder, "importer")
    assert report.problems == []
    assert report.total == total and report.added + report.already == total
    assert report.already == committed and report.added == total - committed
    assert staging_leftovers(home) == []
    assert_files_match_rows(store, home)

    with connect(home, readonly=True) as conn:
        rows = conn.execute("SELECT id, sha256, label, status FROM items").fetchall()
        adds = dict(conn.execute("SELECT item_id, count(*) FROM history WHERE action = 'add' GROUP BY item_id"))
        other = conn.execute("SELECT count(*) FROM history WHERE action != 'add'").fetchone()[0]
    assert len(rows) == total and len({sha for _, sha, _, _ in rows}) == total
    assert {sha: label for _, sha, label, _ in rows} == expected
    assert {status for *_, status in rows} == {"accepted"}
    assert adds == {item_id: 1 for item_id, *_ in rows} and other == 0
    assert len(blob_files(home)) == total

    done = run_cli("--home", str(home), "history", "killed", str(rows[0][0]), "--json")
    assert done.returncode == 0, done.stderr
    history = json.loads(done.stdout)["history"]
    assert [(h["action"], h["user"], h["item_version"]) for h in history] == [("add", "importer", 1)]


# ---- 3. malformed import files ----------------------------------------------------------------

@pytest.fixture
def project(tmp_path):
    """(store, home, folder): an empty project "p" (cat, dog) and a folder holding a good a.png."""
    home, folder = tmp_path / "home", tmp_path / "src"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes(1))
    store = Store(load_settings(home=home))
    store.create_project("p", {"cat": "", "dog": ""}, user="setup")
    return store, home, folder


def assert_nothing_written(store: Store, home: Path) -> None:
    assert store.project_info("p")["items"] == 0
    assert blob_files(home) == [] and staging_leftovers(home) == []
    with connect(home, readonly=True) as conn:
        assert conn.execute("SELECT count(*) FROM history").fetchone()[0] == 0


HEADER = b"image,label,caption\n"
WHOLE_FILE_ERRORS = {
    # name: (bytes, what the message must say)
    "zero-bytes": (b"", ["is empty", "header"]),
    "blank-lines": (b"\n  \r\n\t\n", ["is empty", "header"]),
    "bom-only-empty": (b"\xef\xbb\xbf", ["empty"]),  # an empty file saved as "CSV UTF-8" by Excel
    "binary-garbage": (bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8)) + b"\x00\x00",
                       ["binary", "nothing was imported"]),
    "no-image-column": (b"path,label\na.png,cat\n", ["header", "image,label", "'path'"]),
    "huge-line": (HEADER + b"a.png,cat," + b"x" * 1_000_001 + b"\n", ["line 2", "1,000,011 characters",
                                                                       "limit is 1,000,000", "nothing was imported"]),
    "huge-multiline-field": (HEADER + b'a.png,cat,"' + (b"y" * 999 + b"\n") * 1100 + b'"\n',
                             ["not a valid CSV", "field", "nothing was imported"]),
    "unclosed-quote": (HEADER + b'a.png,cat,"forgot to close\nb.png,dog,second\nc.png,dog,third\n',
                       ["not a valid CSV", "nothing was imported"]),
    "latin-1": ("image,label,caption\na.png,cat,caf\xe9\n".encode("latin-1"),
                ["not UTF-8", "0xe9", "line 2", "nothing was imported"]),
}


@pytest.mark.parametrize("case", list(WHOLE_FILE_ERRORS))
def test_unreadable_csv_is_refused_whole_with_a_clear_message(project, case):
    store, home, folder = project
    data, phrases = WHOLE_FILE_ERRORS[case]
    path = folder / f"{case}.csv"
    path.write_bytes(data)
    with pytest.raises(FusionError) as raised:
        import_path(store, "p", path, "importer")
    message = str(raised.value)
    assert path.name in message and "\n" not in message and len(message) < 400, message
    for phrase in phrases:
        assert phrase in message, message
    assert_nothing_written(store, home)


def test_header_only_csv_imports_nothing(project):
    store, home, folder = project
    (folder / "header.csv").write_bytes(HEADER)
    report = import_path(store, "p", folder / "header.csv", "importer")
    assert (report.total, report.added, report.already, report.problems) == (0, 0, 0, [])
    assert_nothing_written(store, home)


CAPTION = 'She said "hi, there", then left.\nSecond line, with a comma\r\nThird "quoted" line — café ✓, '


LAST_CAPTION = 'last, "quoted" one'


def csv_cell(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def test_bad_rows_are_listed_by_line_and_good_rows_are_imported(project):
    store, home, folder = project
    settings = store.settings
    good = {name: png_bytes(100 + n) for n, name in enumerate(["good1", "good2", "good3", "good4", "good5", "good6"])}
    for name, data in good.items():
        (folder / f"{name}.png").write_bytes(data)
    (folder / "bad.png").write_bytes(b"this is a text file, not a PNG\n")
    (folder / "truncated.png").write_bytes(png_bytes(200)[:300])
    (folder / "empty.png").write_bytes(b"")
    lines = [
        "image,label,caption",                          # 1
        "good1.png,cat,plain caption",                  # 2
        "missing.png,cat,where is it",                  # 3
        "bad.png,dog,not an image",                     # 4
        "good2.png,horse,unknown label",                # 5
        f"good3.png,dog,{csv_cell(CAPTION)}",           # 6-8 (two line breaks in the caption)
        "good4.png,cat,too,many,fields",                # 9
        "good1.png,dog,the same image as line 2",       # 10
        "",                                             # 11
        "good4.png,,",                                  # 12
        "truncated.png,cat,",                           # 13
        "empty.png,dog,",                               # 14
        ",cat,no image",                                # 15
        "good5.png,dog",                                # 16
        "good6.png,cat," + csv_cell(LAST_CAPTION),      # 17
    ]
    path = folder / "rows.csv"
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))

    report = import_path(store, "p", path, "importer")
    expected_problems = {
        3: ["no such image file", "missing.png"],
        4: ["not an image"],
        5: ["unknown label 'horse'"],
        9: ["expected 3 fields", "got 5"],
        10: ["the same image as rows.csv line 2"],
        13: ["truncated or corrupt"],
        14: ["empty (0 bytes)"],
        15: ["no image path"],
        16: ["expected 3 fields", "got 2"],
    }
    problems = dict(report.problems)
    assert len(problems) == len(report.problems) == len(expected_problems), report.problems
    assert set(problems) == {f"rows.csv line {n}" for n in expected_problems}, report.problems
    for n, phrases in expected_problems.items():
        for phrase in phrases:
            assert phrase in problems[f"rows.csv line {n}"], (n, problems[f"rows.csv line {n}"])
    assert (report.total, report.added, report.already) == (10, 4, 0)
    assert not any(str(folder) in reason for reason in problems.values())   # paths as listed, not the server's

    items = {item.filename: item for item in store.iter_items("p")}
    assert set(items) == {"good1.png", "good3.png", "good4.png", "good6.png"}
    for name, (label, caption) in {"good1.png": ("cat", "plain caption"), "good3.png": ("dog", CAPTION),
                                   "good4.png": (None, ""), "good6.png": ("cat", LAST_CAPTION)}.items():
        item = items[name]
        assert (item.label, item.caption) == (label, caption), name
        assert item.sha256 == check_image_file(good[name[:-4]], settings).sha256
        assert store.image_path(item).read_bytes() == good[name[:-4]]
    assert store.history("p", items["good3.png"].id)[0].source == "rows.csv line 6"  # a row is named by its first line
    assert items["good4.png"].status == "unlabeled"
    sources = {name: [h.source for h in store.history("p", item.id)] for name, item in items.items()}
    assert sources["good1.png"] == ["rows.csv line 2"]
    assert sources["good4.png"] == ["rows.csv line 12"]
    assert sources["good6.png"] == ["rows.csv line 17"]
    assert len(sources["good3.png"]) == 1 and sources["good3.png"][0].startswith("rows.csv line ")
    assert_files_match_rows(store, home)
    assert len(blob_files(home)) == 4 and staging_leftovers(home) == []

    again = import_path(store, "p", path, "importer")  # the same file again writes nothing new
    assert (again.total, again.added, again.already) == (10, 0, 4)
    assert dict(again.problems).keys() == problems.keys()
    assert {item.filename: (item.label, item.caption, item.version) for item in store.iter_items("p")} == \
        {name: (item.label, item.caption, item.version) for name, item in items.items()}
    with connect(home, readonly=True) as conn:
        assert conn.execute("SELECT count(*) FROM history").fetchone()[0] == 4
    assert len(blob_files(home)) == 4


def test_cli_prints_one_error_line_and_exits_2_on_an_unreadable_csv(project):
    store, home, folder = project
    bad = folder / "bad.csv"
    bad.write_bytes("image,label,caption\na.png,cat,caf\xe9\n".encode("latin-1"))
    done = run_cli("--home", str(home), "import", "p", str(bad), "--user", "importer")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "bad.csv" in lines[0] and "not UTF-8" in lines[0] and "Traceback" not in done.stderr
    assert done.stdout == ""
    assert_nothing_written(store, home)
