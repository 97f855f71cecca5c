"""Background jobs: queued in the store, run in order by one worker process, cancelled within
seconds, and a worker killed mid-training leaves its job failed and resumable, the active model
and the database intact."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from fusion.ml import registry
from fusion.core.errors import FusionError
from fusion.jobs.queue import Jobs
from fusion.core.settings import REPO_ROOT
from fusion.store.labeling import open_store
from fusion.ml.train import TrainConfig
from fusion.jobs.worker import reap_dead_jobs, worker_alive

from conftest import ANNOTATOR
from helpers import png_bytes, wait_for


def start_worker(settings, idle_exit: float = 2.0) -> subprocess.Popen:
    env = os.environ | {"FUSION_HOME": str(settings.home)}
    return subprocess.Popen([sys.executable, "-m", "fusion", "worker", "--idle-exit", str(idle_exit)], cwd=REPO_ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def params(**overrides) -> dict:
    return TrainConfig(**overrides).job_params(auto_promote=True)


@pytest.fixture
def jobs(settings, corrected):
    # A worker the app tests started may still be idling (it exits after 60 s): these tests claim
    # and run jobs themselves, so wait for it to go.
    wait_for(lambda: not worker_alive(settings), 90, "the previous worker to exit", every=1)
    return Jobs(open_store(settings))


def test_queue_order_cancel_before_start_and_resume_rules(jobs, corrected):
    first = jobs.submit(corrected.name, "train", params(epochs=1), ANNOTATOR)
    second = jobs.submit(corrected.name, "train", params(epochs=1), ANNOTATOR)
    assert jobs.cancel(first.id, "reviewer rae").status == "cancelled"       # queued: at once
    with pytest.raises(FusionError, match="already cancelled"):
        jobs.cancel(first.id, "reviewer rae")
    with pytest.raises(FusionError, match="left no checkpoint"):
        jobs.resume(first.id, ANNOTATOR)
    with pytest.raises(FusionError, match="unknown job kind"):
        jobs.submit(corrected.name, "mine bitcoin", {}, ANNOTATOR)
    claimed = jobs.claim_next(pid=os.getpid())
    assert claimed.id == second.id and claimed.status == "running" and claimed.worker_pid == os.getpid()
    assert jobs.claim_next(pid=os.getpid()) is None
    with pytest.raises(FusionError, match="only a failed or cancelled job"):
        jobs.resume(second.id, ANNOTATOR)
    jobs.finish(second.id, "cancelled", error="test over")
    assert "cancel requested by" not in "\n".join(jobs.log_tail(second.id)) and jobs.log_tail(first.id)


def test_worker_killed_mid_training_leaves_a_failed_resumable_job(settings, jobs, corrected):
    store = open_store(settings)
    active_before = store.project(corrected.name).active_model
    versions_before = [v.version for v in registry.versions(store, corrected.name)]
    job = jobs.submit(corrected.name, "train", params(epochs=12, patience=100, batch_size=16), ANNOTATOR)
    worker = start_worker(settings)
    try:
        wait_for(lambda: len(jobs.get(job.id).curve or []) >= 2, 180, "two finished epochs")
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
    finally:
        worker.kill()
    assert jobs.get(job.id).status == "running"                # nobody has noticed yet...
    assert not worker_alive(settings)
    assert reap_dead_jobs(settings, store) == [job.id]          # ...until the app or a worker looks
    failed = jobs.get(job.id)
    assert failed.status == "failed" and "stopped while running" in failed.error and "Resume" in failed.error
    assert jobs.checkpoint_path(job.id).is_file()
    assert store.project(corrected.name).active_model == active_before
    assert [v.version for v in registry.versions(store, corrected.name)] == versions_before
    with sqlite3.connect(settings.home / "fusion.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    resumed = jobs.resume(job.id, ANNOTATOR)
    worker = start_worker(settings, idle_exit=1)
    out, _ = worker.communicate(timeout=300)
    done = jobs.get(resumed.id)
    assert done.status == "succeeded", (done.error, out, jobs.log_tail(resumed.id))
    epochs = [row.epoch for row in done.curve]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) == 12   # continued, not restarted
    version = done.result["version"]
    assert version not in versions_before and registry.get_version(store, corrected.name, version).job_id == resumed.id


def test_cancel_stops_a_running_job_within_seconds(settings, jobs, corrected):
    job = jobs.submit(corrected.name, "train", params(epochs=1000, patience=1000, batch_size=4), ANNOTATOR)
    worker = start_worker(settings)
    try:
        wait_for(lambda: getattr(jobs.get(job.id).progress, "stage", None) in ("training", "epoch"), 180, "training")
        asked = time.monotonic()
        jobs.cancel(job.id, "reviewer rae")
        wait_for(lambda: jobs.get(job.id).status == "cancelled", 15, "the job to stop")
        print(f"cancel took {time.monotonic() - asked:.1f} s")
        assert jobs.get(job.id).device.startswith(("cpu", "cuda"))
        worker.wait(30)                                         # and the worker went idle and exited
    finally:
        worker.kill()
    assert any("cancel requested by reviewer rae" in line for line in jobs.log_tail(job.id))


def test_every_job_kind_has_its_runner():
    from fusion.jobs import kinds, queue

    assert set(kinds.KINDS) == set(queue.KINDS)


def test_an_upload_and_an_export_are_jobs_of_the_worker(settings, jobs, corrected, monkeypatch, tmp_path):
    """The Dataset page's Import and Export: queued in the store, run by a worker (here, in this
    process), progress in the job's row, the upload folder kept while its job waits and removed
    when it ends, the zip kept in the job's folder."""
    import io
    import zipfile

    from fusion.jobs import worker
    from fusion.jobs.recovery import active_uploads
    from fusion.services.uploads import remove_finished, uploads_dir

    monkeypatch.setattr(worker, "ensure_worker", lambda s: None)      # this test runs the worker itself
    # A project of its own: a de-identified export reads every page without stored word boxes,
    # which for `corrected`'s 240 pages would take minutes.
    project = jobs.store.create_project("uploaded", corrected.labels, ANNOTATOR)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(5):
            archive.writestr(f"batch/{corrected.label_names[i % 2]}/new{i}.png", png_bytes(7_000 + i))
        archive.writestr("batch/broken.png", b"not a png")
    job = worker.queue_import(settings, jobs.store, project.name, "batch.zip", buffer.getvalue(), ANNOTATOR)
    folder = job.params["upload"]
    assert job.kind == "import" and job.status == "queued" and os.path.isdir(folder)
    assert remove_finished(settings, active_uploads(jobs.store)) == 0 and os.path.isdir(folder)  # its job waits
    worker.run_worker(settings, idle_exit_s=0, kinds=("import", "export"))
    done = jobs.get(job.id)
    assert done.status == "succeeded", (done.error, jobs.log_tail(job.id))
    assert done.result["added"] == 5 and [p["where"] for p in done.result["problems"]] == ["broken.png"]
    assert not os.path.exists(folder) and not any(uploads_dir(settings).iterdir())
    assert any("skipped broken.png" in line for line in jobs.log_tail(job.id))
    with pytest.raises(FusionError):                                  # a bad upload: nothing queued, nothing kept
        worker.queue_import(settings, jobs.store, project.name, "x.zip", b"not a zip", ANNOTATOR)
    assert not any(uploads_dir(settings).iterdir()) and jobs.list(project.name, limit=1)[0].id == job.id

    export = worker.queue_job(settings, jobs.store, project.name, "export", {"format": "csv", "deidentify": True},
                              ANNOTATOR)
    worker.run_worker(settings, idle_exit_s=0, kinds=("export",))
    done = jobs.get(export.id)
    assert done.status == "succeeded", (done.error, jobs.log_tail(export.id))
    with zipfile.ZipFile(done.result["file"]) as opened:
        assert "items.csv" in opened.namelist() and done.result["deidentified"]
    assert done.result["file"].endswith(f"{project.name}-csv-deidentified.zip")
