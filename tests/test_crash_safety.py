"""Crash safety: processes SIGKILLed at random (seeded) points while they upload, correct, import
and train. After every kill the workspace gets the recovery the app and the worker run when they
start (fusion.jobs.recovery), and then must hold: every correction and upload acknowledged to the user,
an intact database, and no orphan: no temp or staging file, no image file without its row or row
without its file, no job or model version folder without its row or the reverse, no half-written
safetensors.

Starting Python + torch costs seconds here, so most kills hit children forked from this process
(which has the library and the encoders loaded already), running the library calls the pages
make; a few hit the real entry points: `python -m fusion worker` mid-training and the Dataset
page's background `python -m fusion import`. Real SQLite, files, encoders and training; no mocks.
The kill points are random, so assertions are about properties, never about timing.
"""
from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from fusion.jobs import recovery
from fusion.jobs import worker as worker_module
from fusion.services import uploads
from fusion.imaging.images import check_image_file
from fusion.services.importing import import_path, unpack_upload
from fusion.jobs.queue import Jobs
from fusion.ml.pipeline import Prediction
from fusion.services.review import add_upload, decide
from fusion.core.settings import REPO_ROOT, load_settings
from fusion.store.labeling import NewItem, StaleEdit, Store
from fusion.ml.train import TrainConfig, train_version
from fusion.jobs.worker import run_worker, worker_alive

SEED = 6_2024
LABELS = {"red": "a reddish page", "green": "a greenish page", "blue": "a bluish page"}
REVIEW, TRAIN = "review", "train"          # corrections, uploads, imports | training
PLAN = {"correct": 14, "upload": 11, "import": 10, "train": 12, "mixed": 5}   # rounds; mixed kills two
REAL_IMPORT_KILLS = 3
TRAIN_EPOCHS = 5


def png_bytes(seed: int, color: int, size: int = 40) -> bytes:
    """A small PNG that no other seed produces, tinted toward one channel."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 70, (size, size, 3), dtype=np.uint8)
    pixels[..., color] += 170
    pixels[0, :3] = [seed % 256, (seed // 256) % 256, (seed // 65536) % 256]
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def child_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUSION_")}
    return env | {"FUSION_HOME": str(home), "FUSION_DEVICE": "cpu", "PYTHONUNBUFFERED": "1"}


# ---- the workspace and what the user was told -----------------------------------------------

@dataclass
class Lab:
    settings: object
    store: Store
    review_ids: list[int]
    sources: list[Path] = field(default_factory=list)            # every import source, to finish later
    decisions: list[dict] = field(default_factory=list)          # acknowledged corrections
    uploaded: list[dict] = field(default_factory=list)           # acknowledged uploads
    kills: collections.Counter = field(default_factory=collections.Counter)
    stages: collections.Counter = field(default_factory=collections.Counter)   # where training kills hit
    recovered: collections.Counter = field(default_factory=collections.Counter)
    verified: set = field(default_factory=set)                   # safetensors files already read whole


def new_items(settings, start: int, n: int, labeled: bool) -> list[NewItem]:
    """Pages with their text stored (no OCR), a third of them per label."""
    names = list(LABELS)
    return [NewItem(check_image_file(png_bytes(start + i, i % 3), settings), f"page{start + i}.png",
                    label=names[i % 3] if labeled else None, caption=f"{names[i % 3]} note {i}",
                    ocr_text=f"page {i} of the {names[i % 3]} series", ocr_engine="test text")
            for i in range(n)]


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Lab:
    home = tmp_path_factory.mktemp("crash-home")
    settings = load_settings(home=home, device="cpu", database_url="")
    store = Store(settings)
    for name in (REVIEW, TRAIN):
        store.create_project(name, LABELS, user="setup")
    names = list(LABELS)
    store.add_items(TRAIN, new_items(settings, 0, 60, labeled=True), user="setup")
    review = [item for item, _ in store.add_items(REVIEW, new_items(settings, 1000, 30, labeled=False), "setup")]
    for n, item in enumerate(review):      # a suggestion on screen: saving is an accept or a correction
        label = names[n % 3]
        store.record_prediction(REVIEW, item.id, label, 0.7, {k: 0.15 for k in names} | {label: 0.7}, "m0")
    # The first version, in this process: loads the encoders that forked children inherit and
    # fills the feature cache, so a killed training run spends its time training.
    train_version(settings, store, TRAIN, TrainConfig(epochs=1, device="cpu"), user="setup")
    return Lab(settings, store, [item.id for item in review])


# ---- forked children --------------------------------------------------------------------------

def _send(fd: int, message: dict) -> None:
    """An acknowledgement: one line on a pipe (atomic below PIPE_BUF), kept by the kernel when we die."""
    os.write(fd, (json.dumps(message) + "\n").encode())


def fork_child(lab: Lab, work) -> tuple[int, int]:
    """Fork a child running work(store, send); returns (pid, read end of its message pipe)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                                        # the child: never returns into pytest
        code = 0
        try:
            os.close(read)
            import torch

            torch.set_num_threads(1)                    # 2 cores, and OpenMP pools don't survive fork
            from fusion.store import database
            from fusion.store import labeling as store_module
            database.open_database.cache_clear()        # the parent's connections stay the parent's
            store_module.open_store.cache_clear()
            store = Store(lab.settings)
            work(store, lambda message: _send(write, message))
        except BaseException:                           # noqa: BLE001 -- reported to the parent
            code = 1
            try:
                _send(write, {"kind": "error", "traceback": traceback.format_exc()[-3000:]})
            except OSError:
                pass
        finally:
            os._exit(code)
    os.close(write)
    return pid, read


class Child:
    """A forked child, killed `delay` seconds after it says it is ready, or as soon as `trigger()`
    holds (then `jitter` seconds later): a kill aimed at a short window, e.g. files staged."""

    def __init__(self, lab: Lab, work, delay: float, trigger=None, jitter: float = 0.0):
        self.pid, self.fd = fork_child(lab, work)
        self.delay, self.trigger, self.jitter = delay, trigger, jitter
        self.buffer, self.messages = b"", []
        self.kill_at: float | None = None
        self.eof = False
        self.killed: bool | None = None     # None while it runs

    def read(self) -> None:
        chunk = os.read(self.fd, 65536)
        self.eof = not chunk
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        self.messages += [json.loads(line) for line in lines]
        errors = [m["traceback"] for m in self.messages if m["kind"] == "error"]
        assert not errors, errors[0]
        if self.kill_at is None and any(m["kind"] == "ready" for m in self.messages):
            self.kill_at = time.monotonic() + self.delay

    def poll_trigger(self, now: float) -> None:
        if self.trigger is not None and self.kill_at is not None and self.trigger():
            self.trigger, self.kill_at = None, min(self.kill_at, now + self.jitter)

    def kill(self) -> None:
        """SIGKILL it (unless it ended by itself), then read every message it sent."""
        done, status = os.waitpid(self.pid, os.WNOHANG)
        self.killed = done == 0
        if self.killed:
            os.kill(self.pid, signal.SIGKILL)
            _, status = os.waitpid(self.pid, 0)
        while not self.eof:
            self.read()
        os.close(self.fd)
        assert self.killed or os.WIFEXITED(status), f"child {self.pid} died by itself: status {status}"


def run_round(lab: Lab, children: list[Child], timeout: float = 120) -> None:
    """Read the children's messages until each one's kill time, and kill it then."""
    deadline = time.monotonic() + timeout
    while running := [c for c in children if c.killed is None]:
        now = time.monotonic()
        assert now < deadline, "a child never got ready"
        for child in running:
            child.poll_trigger(now)
            if child.kill_at is not None and child.kill_at <= now:
                child.kill()
        running = [c for c in running if c.killed is None]
        due = [c.kill_at - now for c in running if c.kill_at is not None]
        wait = max(0.0, min(due + [0.004 if any(c.trigger for c in running) else 0.05]))
        listening = [c.fd for c in running if not c.eof]
        ready = select.select(listening, [], [], wait)[0] if listening else time.sleep(wait) or []
        for child in running:
            if child.fd in ready:
                child.read()
    lab.kills["kill"] += sum(bool(c.killed) for c in children)


def staged_images(home: Path):
    """Trigger: image files written to a staging folder (their rows not committed, or not promoted)."""
    staging = home / "images" / ".staging"

    def staged() -> bool:
        try:
            return any(p.suffix == ".png" for p in staging.glob("*/*"))
        except FileNotFoundError:       # the importer renamed a folder away while we listed it
            return False
    return staged


def training_moment(lab: Lab, job_id: int, rng: random.Random):
    """Trigger for a training job, chosen at random: after its k-th epoch, while a checkpoint is
    being written, or while its model version is (files, then row, then rename). Moments, not
    seconds, so the kills spread over the run however fast this machine is. Fires anyway once
    the job has ended."""
    jobs, home = Jobs(lab.store), lab.settings.home
    moment = rng.choices(["epoch", "checkpoint", "version"], [5, 2, 3])[0]
    k = rng.randrange(TRAIN_EPOCHS)
    asked = [0.0]

    def trigger() -> bool:
        if moment == "checkpoint" and any((home / "jobs" / str(job_id)).glob(".checkpoint*.tmp")):
            return True
        if moment == "version" and any((home / "projects" / TRAIN / "models").glob(".v*")):
            return True
        if time.monotonic() - asked[0] < 0.02:          # the database less often: the parent shares 2 cores
            return False
        asked[0] = time.monotonic()
        job = jobs.get(job_id)
        return job.finished or (moment == "epoch" and len(job.curve or []) >= k and job.status == "running")
    return trigger, (rng.uniform(0, 0.15) if moment == "epoch" else rng.uniform(0, 0.02))


def training_stage(lab: Lab, job_id: int) -> str:
    """Where a killed training job was."""
    job = Jobs(lab.store).get(job_id)
    if any(lab.settings.home.glob(f"projects/{TRAIN}/models/.v*")):
        return "saving its version"
    if job.finished:
        return "after its end"
    progress = job.progress
    if progress is None:
        return "before it started"
    return f"epoch {progress.epoch}" if progress.stage in ("training", "epoch") else progress.stage


# ---- what the children do (the calls the pages make) ------------------------------------------

def correcting(seed: int, ids: list[int]):
    """A reviewer deciding item after item (Review page: decide; Dataset table: set_label)."""
    def work(store: Store, send) -> None:
        rng, user = random.Random(seed), f"reviewer{seed}"
        send({"kind": "ready"})
        for n in range(10_000):
            item = store.item(REVIEW, rng.choice(ids))
            label = rng.choice([*LABELS, *LABELS, None])
            caption = f"caption {seed}-{n}" if rng.random() < 0.3 else None
            try:
                if rng.random() < 0.5 and label is not None and caption is None:
                    saved = store.set_label(REVIEW, item.id, label, user, expected_version=item.version)
                else:
                    shown = Prediction(item.pred_label or "red", item.pred_confidence or 0.5, item.pred_probs or {},
                                       {}, {}, item.ocr_text or "", item.caption, item.pred_model or "m0", None, {})
                    saved = decide(store, REVIEW, item, item.version, label, user, shown, caption)
            except StaleEdit:
                continue                     # another reviewer got there first: not acknowledged
            send({"kind": "decided", "id": saved.id, "version": saved.version, "label": label,
                  "caption": caption, "user": user})
    return work


def uploading(seed: int):
    """Someone uploading pages on the Review page, now and then one already in the project."""
    def work(store: Store, send) -> None:
        rng, user = random.Random(seed), f"uploader{seed}"
        send({"kind": "ready"})
        for n in range(10_000):
            image_seed = seed * 1000 + (rng.randrange(n) if n and rng.random() < 0.2 else n)
            data = png_bytes(image_seed, image_seed % 3)
            item = add_upload(store, REVIEW, f"upload{image_seed}.png", data, user)
            send({"kind": "uploaded", "id": item.id, "sha256": hashlib.sha256(data).hexdigest()})
    return work


def importing(source: Path):
    """The Dataset page's import, in one process: unpack the upload into its folder, import it."""
    def work(store: Store, send) -> None:
        send({"kind": "ready"})
        folder, lock = uploads.new_upload_folder(store.settings)
        if source.suffix == ".zip":
            target = unpack_upload(source.name, source.read_bytes(), folder)
        else:
            target = source
        report = import_path(store, REVIEW, target, "importer")
        send({"kind": "imported", "added": report.added, "already": report.already})
        os.close(lock)
        time.sleep(3600)
    return work


def working(settings):
    """The workspace's worker (what `python -m fusion worker` runs), with a training job queued."""
    def work(store: Store, send) -> None:
        send({"kind": "ready"})
        run_worker(settings, idle_exit_s=3600)
    return work


def import_source(lab: Lab, n: int, rng: random.Random) -> Path:
    """A new ImageFolder (label/file.png) of 30 images, as a folder or as an uploaded zip."""
    root = lab.settings.home.parent / f"source{n}"
    for i in range(30):
        label = list(LABELS)[i % 3] if i % 5 else None        # a few unlabeled ones at the top
        path = root / label / f"s{n}-{i}.png" if label else root / f"s{n}-{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(500_000 + n * 100 + i, i % 3))
    if rng.random() < 0.5:
        return root
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(root.rglob("*.png")):
            archive.write(path, path.relative_to(root.parent))
    zipped = root.with_suffix(".zip")
    zipped.write_bytes(buffer.getvalue())
    return zipped


# ---- after a kill: recover, then check ----------------------------------------------------------

def recover(lab: Lab) -> None:
    """What the app runs at start (a worker runs the same, holding its lock)."""
    counts = recovery.recover_workspace(lab.settings, lab.store)
    lab.recovered.update({k: v for k, v in counts.items() if v})


def _read_whole(lab: Lab, path: Path) -> None:
    """A safetensors file loads completely (checked once per file: final files never change)."""
    key = (path, path.stat().st_size, path.stat().st_mtime_ns)
    if key not in lab.verified:
        load_file(str(path))
        lab.verified.add(key)


def check_workspace(lab: Lab) -> None:
    home, store = lab.settings.home, lab.store
    with sqlite3.connect(f"file:{home / 'fusion.db'}?mode=ro", uri=True, timeout=30) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        items = {sha: (item_id, ext) for item_id, sha, ext in db.execute("SELECT id, sha256, extension FROM items")}
        history = {(item_id, version): (action, label, caption) for item_id, version, action, label, caption in
                   db.execute("SELECT item_id, item_version, action, new_label, new_caption FROM history")}
        current = {item_id: (version, label) for item_id, version, label in
                   db.execute("SELECT id, version, label FROM items")}
        jobs = dict(db.execute("SELECT id, status FROM jobs"))
        versions = {(p, v) for p, v in db.execute(
            "SELECT projects.name, version FROM model_versions JOIN projects ON projects.id = project_id")}
        active = dict(db.execute("SELECT name, active_model FROM projects"))

    # Every acknowledged decision is in the history, at the version the user was shown.
    latest: dict[int, dict] = {}
    for d in lab.decisions:
        action, label, _ = history.get((d["id"], d["version"]), (None, None, None))
        if d["label"] is None:
            assert action == "skip", d
        else:
            assert action in ("accept", "correct") and label == d["label"], (d, action, label)
        if d["caption"] is not None:
            assert history.get((d["id"], d["version"] - 1), (None,) * 3)[::2] == ("caption", d["caption"]), d
        if d["version"] > latest.get(d["id"], {"version": 0})["version"]:
            latest[d["id"]] = d
    for item_id, d in latest.items():
        version, label = current[item_id]
        assert version >= d["version"], d
        if version == d["version"] and d["label"] is not None:
            assert label == d["label"], d
    # Every acknowledged upload is an item with its file.
    for u in lab.uploaded:
        assert u["sha256"] in items and items[u["sha256"]][0] == u["id"], u

    # Image files <-> rows, nothing staged, no temp file anywhere (one walk of the workspace).
    images, stored, leftovers = str(home / "images"), {}, []
    for root, folders, names in os.walk(home):
        leftovers += [os.path.join(root, n) for n in folders + names if n.endswith(".tmp") or n.startswith(".v")]
        if root.startswith(images) and not root.endswith(".thumbs"):
            assert ".staging" not in root or not names, f"staging leftovers {root}: {names}"
            stored |= {n.split(".")[0]: "." + n.split(".", 1)[1] for n in names} if ".staging" not in root else {}
    assert leftovers == [], leftovers
    assert stored == {sha: ext for sha, (_, ext) in items.items()}, "image files and item rows differ"
    for sha, (_, ext) in items.items():
        path = store.blobs.path(sha, ext)
        if path not in lab.verified:                  # content-addressed files never change: hash each once
            assert hashlib.sha256(path.read_bytes()).hexdigest() == sha, path
            lab.verified.add(path)
    assert not any((home / "uploads").iterdir()) if (home / "uploads").is_dir() else True

    # Jobs: none left running without a worker; every job folder has its row; checkpoints whole.
    assert "running" not in jobs.values() or worker_alive(lab.settings)
    for folder in (home / "jobs").iterdir() if (home / "jobs").is_dir() else []:
        assert int(folder.name) in jobs, f"job folder {folder} has no row"
        checkpoint = folder / "checkpoint.safetensors"
        if checkpoint.exists():
            _read_whole(lab, checkpoint)

    # A job that registered its version is not left failed (resuming it would train a duplicate).
    with sqlite3.connect(f"file:{home / 'fusion.db'}?mode=ro", uri=True, timeout=30) as db:
        duplicates = db.execute("SELECT jobs.id, version FROM jobs JOIN model_versions ON job_id = jobs.id "
                                "WHERE jobs.status != 'succeeded'").fetchall()
    assert duplicates == [], f"jobs not succeeded though their version is registered: {duplicates}"

    # Model versions: folders <-> rows, each one whole; the active one exists.
    on_disk = {(p.parent.parent.name, p.name) for p in home.glob("projects/*/models/*")}
    assert on_disk == versions, f"folders without rows {on_disk - versions}, rows without folders {versions - on_disk}"
    for project, version in versions:
        folder = home / "projects" / project / "models" / version
        assert {"model.safetensors", "config.json", "labels.json"} <= {p.name for p in folder.iterdir()}
        json.loads((folder / "config.json").read_text())
        _read_whole(lab, folder / "model.safetensors")
    for project, version in active.items():
        assert version is None or (project, version) in versions
    for path in home.glob("projects/*/features/*"):
        assert path.suffix == ".safetensors", path
        _read_whole(lab, path)


def collect(lab: Lab, children: list[Child]) -> None:
    for child in children:
        for m in child.messages:
            if m["kind"] == "decided":
                lab.decisions.append(m)
            elif m["kind"] == "uploaded":
                lab.uploaded.append(m)


@dataclass
class RealWorker:
    lab: Lab
    process: subprocess.Popen
    log: Path


def _start(home: Path, *args: str, log: Path) -> subprocess.Popen:
    with open(log, "a") as out:
        return subprocess.Popen([sys.executable, "-m", "fusion", *args], cwd=REPO_ROOT, env=child_env(home),
                                stdout=out, stderr=out)


@pytest.fixture(scope="module")
def real_worker(tmp_path_factory):
    """`python -m fusion worker` on a second workspace, started before the forked kills so that its
    start (Python, torch, the encoders: a first short job) overlaps them; killed mid-training later."""
    home = tmp_path_factory.mktemp("worker-home")
    settings = load_settings(home=home, device="cpu", database_url="")
    store = Store(settings)
    store.create_project(TRAIN, LABELS, user="setup")
    store.add_items(TRAIN, new_items(settings, 0, 60, labeled=True), user="setup")
    Jobs(store).submit(TRAIN, "train", TrainConfig(epochs=1, device="cpu").job_params(), "setup")
    log = home.parent / "worker.log"
    process = _start(home, "worker", "--idle-exit", "600", log=log)
    yield RealWorker(Lab(settings, store, []), process, log)
    if process.poll() is None:
        process.kill()
        process.wait()


# ---- the tests ---------------------------------------------------------------------------------

def test_sigkill_at_random_points_loses_no_acknowledged_write_and_leaves_no_orphan(lab, real_worker):
    rng = random.Random(SEED)
    settings, store, jobs = lab.settings, lab.store, Jobs(lab.store)
    started = time.monotonic()

    spent = collections.Counter()
    kinds = [kind for kind, n in PLAN.items() for _ in range(n)]
    rng.shuffle(kinds)
    home, n_source = settings.home, 0
    for round_number, kind in enumerate(kinds):
        seed = SEED + round_number
        aimed = rng.random() < 0.4                          # aimed at a short window, else any moment
        if kind == "correct":
            children = [Child(lab, correcting(seed, lab.review_ids), rng.uniform(0.0, 0.6))]
        elif kind == "upload":
            children = [Child(lab, uploading(seed), rng.uniform(0.0, 0.5),
                              staged_images(home) if aimed else None, rng.uniform(0, 0.01))]
        elif kind == "import":
            if lab.sources and rng.random() < 0.3:
                source = rng.choice(lab.sources)            # run an interrupted import again
            else:
                source = import_source(lab, n_source, rng)
                lab.sources.append(source)
                n_source += 1
            children = [Child(lab, importing(source), rng.uniform(0.0, 0.8),
                              staged_images(home) if aimed else None, rng.uniform(0, 0.05))]
        elif kind == "train":
            failed = [j for j in jobs.list(TRAIN, limit=5, kind="train")
                      if j.status == "failed" and jobs.checkpoint_path(j.id).is_file()]
            if failed and rng.random() < 0.5:
                job = jobs.resume(failed[0].id, "trainer")
            else:
                job = jobs.submit(TRAIN, "train", TrainConfig(epochs=TRAIN_EPOCHS, patience=100).job_params(
                    auto_promote=rng.random() < 0.5), "trainer")
            trigger, jitter = training_moment(lab, job.id, rng)
            children = [Child(lab, working(settings), 60, trigger, jitter)]
        else:                                               # two reviewers at once, or a reviewer and an upload
            other = correcting(seed + 7, lab.review_ids) if rng.random() < 0.5 else uploading(seed + 7)
            children = [Child(lab, correcting(seed, lab.review_ids), rng.uniform(0.0, 0.6)),
                        Child(lab, other, rng.uniform(0.0, 0.6))]
        t0 = time.monotonic()
        run_round(lab, children)
        t1 = time.monotonic()
        collect(lab, children)
        if kind == "train":
            lab.stages[training_stage(lab, job.id)] += 1
        lab.kills[kind] += sum(bool(c.killed) for c in children)
        recover(lab)
        check_workspace(lab)
        spent[kind] += t1 - t0
        spent["recover+check"] += time.monotonic() - t1

    # Every interrupted import finishes when run again: each source's images are all there.
    for source in lab.sources:
        folder, lock = uploads.new_upload_folder(settings)
        target = unpack_upload(source.name, source.read_bytes(), folder) if source.suffix == ".zip" else source
        report = import_path(store, REVIEW, target, "importer")
        os.close(lock)
        assert report.problems == [] and report.total == 30 == report.added + report.already
    recover(lab)
    check_workspace(lab)

    finished_by_recovery = sum(bool((j.result or {}).get("recovered")) for j in jobs.list(TRAIN, limit=1000))
    seconds = time.monotonic() - started
    print(f"\n{lab.kills['kill']} SIGKILLs in {seconds:.0f} s: {dict((k, v) for k, v in lab.kills.items() if k != 'kill')}"
          f"; training kills {dict(lab.stages)}, {finished_by_recovery} jobs ended as succeeded by recovery"
          f"\n{len(lab.decisions)} acknowledged decisions and {len(lab.uploaded)} uploads kept"
          f"\nrecovery did: {dict(lab.recovered)}\nseconds spent: { {k: round(v, 1) for k, v in spent.items()} }")
    assert lab.kills["kill"] >= 50
    assert lab.decisions and lab.uploaded, "every kill came before the first acknowledgement"


def test_sigkill_of_the_real_worker_and_the_pages_background_import(lab, real_worker, monkeypatch):
    rng = random.Random(SEED + 1)
    settings, store = lab.settings, lab.store
    home = settings.home
    staging_files = staged_images(home)

    # The Dataset page's import: the upload unpacked under uploads/ and queued, `python -m fusion
    # worker` importing it, killed while it stages files, just after its rows commit, and at a
    # random moment (n == 2: mostly before it claims the job, which then waits for the next worker).
    workers = []
    monkeypatch.setattr(worker_module, "ensure_worker",
                        lambda s: workers.append(_start(home, "worker", "--idle-exit", "600", log=home.parent / "import-worker.log")))
    for n in range(REAL_IMPORT_KILLS):
        source = import_source(lab, 100 + n, random.Random(1))           # 1: a folder; zipped below
        lab.sources.append(source)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for path in sorted(source.rglob("*.png")):
                archive.write(path, path.relative_to(source.parent))
        before = store.project_info(REVIEW)["items"]
        job = worker_module.queue_import(settings, store, REVIEW, f"batch{n}.zip", buffer.getvalue(), "importer")
        process = workers[-1]
        assert job.kind == "import" and any((home / "uploads").iterdir())
        started, delay = time.monotonic(), rng.uniform(0.0, 1.0)
        while process.poll() is None and not Jobs(store).get(job.id).finished:
            assert time.monotonic() - started < 60, (home.parent / "import-worker.log").read_text()
            if (n == 0 and staging_files()) or (n == 1 and store.project_info(REVIEW)["items"] > before) or \
                    (n == 2 and time.monotonic() - started > delay):
                break
            time.sleep(0.002)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            lab.kills["real import"] += 1
        process.wait(30)
        recover(lab)                          # a job the dead worker ran is failed; its upload removed
        if Jobs(store).get(job.id).status == "queued":   # never claimed: the next worker imports it
            assert any((home / "uploads").iterdir())
            run_worker(settings, idle_exit_s=0, kinds=("import",))
            assert Jobs(store).get(job.id).status == "succeeded"
        check_workspace(lab)
        assert not (home / "uploads").is_dir() or not any((home / "uploads").iterdir())
    for source in lab.sources[-REAL_IMPORT_KILLS:]:                      # and importing again finishes it
        report = import_path(store, REVIEW, source, "importer")
        assert report.problems == [] and report.total == 30 == report.added + report.already

    # The real worker (warm: it ran a first job during the other test), killed at a random point of a
    # training run or just after it.
    wlab, worker = real_worker.lab, real_worker.process
    wjobs = Jobs(wlab.store)
    deadline = time.monotonic() + 240
    while not all(j.finished for j in wjobs.list(TRAIN)):
        assert worker.poll() is None, real_worker.log.read_text()
        assert time.monotonic() < deadline, "the worker's first job did not finish"
        time.sleep(0.1)
    assert [j.status for j in wjobs.list(TRAIN)] == ["succeeded"], real_worker.log.read_text()
    job = wjobs.submit(TRAIN, "train", TrainConfig(epochs=TRAIN_EPOCHS, patience=100).job_params(auto_promote=True),
                       "trainer")
    trigger, jitter = training_moment(wlab, job.id, rng)
    while not trigger():
        assert worker.poll() is None, real_worker.log.read_text()
        assert time.monotonic() < deadline, "the worker never ran the job"
        time.sleep(0.004)
    time.sleep(jitter)
    worker.send_signal(signal.SIGKILL)
    assert worker.wait(30) == -signal.SIGKILL
    lab.kills["real worker"] += 1
    stage = training_stage(wlab, job.id)
    recover(wlab)
    check_workspace(wlab)
    ended = wjobs.get(job.id)
    # Either the worker that took it over finished it, or it failed saying how to resume it.
    assert ended.status == "succeeded" or (ended.status == "failed" and "Resume" in ended.error), ended
    print(f"\nreal processes killed: {dict(lab.kills)}; the worker at {stage}, its job {ended.status}")
