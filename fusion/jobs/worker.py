"""Background workers: `python -m fusion worker [--kinds train,prelabel] [--device cuda]`.

On SQLite a workspace has one worker: an exclusive lock on <home>/worker.lock. On PostgreSQL any
number, on any machine that reaches the database and the workspace folder: each holds the lock
shared, claims jobs with row locks (fusion.jobs), and can be limited to some job kinds and a
device, so a GPU box trains while a CPU box pre-labels. The app starts a worker detached when it
queues a job and no worker holds the lock (ensure_worker); a worker exits after a minute with
nothing to do. A job whose worker died is failed, with the reason, by the next worker or page
that looks (Jobs.fail_dead), and can be resumed from its checkpoint.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import threading
import time
import traceback

from fusion.core.errors import FusionError, UnknownProject
from fusion.core.progress import Progress
from fusion.jobs.kinds import KINDS
from fusion.jobs.queue import Job, JobCancelled, Jobs
from fusion.jobs.recovery import active_uploads, describe, recover_files
from fusion.core.settings import REPO_ROOT, Settings
from fusion.services.importing import unpack_upload
from fusion.services.uploads import new_upload_folder, remove_finished
from fusion.store.labeling import Store, open_store

HEARTBEAT_S = 2.0     # also how often a cancel request is noticed
IDLE_EXIT_S = 60.0
POLL_S = 0.5
REAP_EVERY_S = 10.0   # how often an idle or busy worker looks for jobs whose worker died


def lock_path(settings: Settings):
    return settings.home / "worker.lock"


def worker_alive(settings: Settings) -> bool:
    """Whether some process holds the worker lock (probing it takes and drops it at once)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    with open(lock_path(settings), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def ensure_worker(settings: Settings) -> bool:
    """Start a detached worker unless one runs. Two racing starters are fine: the second
    worker finds the lock taken and exits."""
    if worker_alive(settings):
        return False
    log = settings.home / "logs" / "worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        subprocess.Popen([sys.executable, "-m", "fusion", "worker"], stdout=out, stderr=out, cwd=REPO_ROOT,
                         env=os.environ | {"FUSION_HOME": str(settings.home)}, start_new_session=True)
    return True


def queue_job(settings: Settings, store: Store, project: str, kind: str, params: dict, user: str) -> Job:
    """Queue a job and make sure a worker will run it: what the pages and the CLI call."""
    job = Jobs(store).submit(project, kind, params, user)
    ensure_worker(settings)
    return job


def queue_import(settings: Settings, store: Store, project: str, filename: str, data: bytes, user: str) -> Job:
    """An uploaded .zip unpacked under uploads/ and imported by the worker (the Dataset page's
    Import). The folder's lock is held until the job that names it is in the store, so it is never
    an orphan to remove_finished. FusionError, keeping nothing, if the upload can't be unpacked."""
    remove_finished(settings, active_uploads(store))
    folder, lock = new_upload_folder(settings)
    try:
        target = unpack_upload(filename, data, folder)
        return queue_job(settings, store, project, "import", {"path": str(target), "upload": str(folder)}, user)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        os.close(lock)


def queue_demo_build(settings: Settings, store: Store) -> Job:
    """The demo project, built by the worker (what the app does on a first run): its project is
    created now, so the job has a home; a build already queued or running is returned instead."""
    from fusion.demo.build import DEMO_USER, DEMO_LABELS   # here: queueing other jobs never loads torch

    try:
        store.project(settings.demo_project)
    except UnknownProject:
        try:
            store.create_project(settings.demo_project, DEMO_LABELS, user=DEMO_USER)
        except FusionError:
            store.project(settings.demo_project)       # another session created it meanwhile
    running = [job for job in Jobs(store).unfinished("demo") if job.project == settings.demo_project]
    return running[0] if running else queue_job(settings, store, settings.demo_project, "demo", {}, DEMO_USER)


def resume_job(settings: Settings, store: Store, job_id: int, user: str) -> Job:
    """Queue the continuation of a failed or cancelled job from its checkpoint, and a worker for it."""
    job = Jobs(store).resume(job_id, user)
    ensure_worker(settings)
    return job


def describe_labels(settings, store, project_name: str, descriptions: dict[str, str], user: str):
    """New label descriptions, then their zero-shot measured by the worker (what the Train page's
    form and `zero-shot NAME --descriptions F --queue` do). Returns the queued job."""
    from fusion.ml.pipeline import get_engine   # here: listing or queueing jobs never loads torch

    store.set_descriptions(project_name, descriptions)
    get_engine(settings).forget_models()     # zero-shot predictions read the new prompts now
    return queue_job(settings, store, project_name, "zero_shot", {}, user)


def change_active_model(settings: Settings, store: Store, project: str, user: str, version: str | None = None,
                        rollback_to: str | None = None):
    """Promote `version`, or roll back (to `rollback_to`, default the previous active version), then
    queue the embeddings of the new active version (the Dataset page's map, "more like this"),
    computed in the background. Returns the project. What the Train page and the CLI call."""
    from fusion.ml import registry   # here: listing or queueing jobs never loads torch

    project_now = (registry.promote(store, project, version, user) if version is not None
                   else registry.rollback(store, project, user, to=rollback_to))
    queue_job(settings, store, project, "embed", {}, user)
    return project_now


def reap_dead_jobs(settings: Settings, store: Store) -> list[int]:
    """Fail the running jobs whose worker is gone. For the app to call on page load, so a dead
    worker's job does not look alive until the next worker starts."""
    return Jobs(store).fail_dead()


def run_worker(settings: Settings, idle_exit_s: float = IDLE_EXIT_S, kinds: tuple[str, ...] | None = None) -> int:
    """Run queued jobs (of `kinds`, if given), oldest first, until idle for `idle_exit_s`.
    Returns how many jobs ran."""
    settings.home.mkdir(parents=True, exist_ok=True)
    store = open_store(settings)
    many = store.db.engine.dialect.name == "postgresql"    # row locks let workers share the queue
    lock = open(lock_path(settings), "a")
    try:
        fcntl.flock(lock, (fcntl.LOCK_SH if many else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        print("another worker holds the lock; exiting", flush=True)
        return 0
    jobs = Jobs(store)
    if summary := describe(recover_files(settings, store)):
        print(summary, flush=True)
    ran, idle_since, reaped_at = 0, time.monotonic(), 0.0
    while True:
        if time.monotonic() - reaped_at > REAP_EVERY_S:
            for job_id in jobs.fail_dead():
                print(f"job {job_id}: its worker had died; ended ({jobs.get(job_id).status})", flush=True)
            reaped_at = time.monotonic()
        job = jobs.claim_next(os.getpid(), kinds)
        if job is None:
            if time.monotonic() - idle_since > idle_exit_s:
                return ran
            time.sleep(POLL_S)
            continue
        run_job(settings, store, jobs, job)
        ran, idle_since = ran + 1, time.monotonic()


def run_job(settings: Settings, store: Store, jobs: Jobs, job: Job) -> None:
    """Run one claimed job to its end state. A heartbeat thread keeps the job's row fresh (and
    notices cancel requests) even while one step runs long, e.g. encoding a batch."""
    latest: list[Progress | None] = [None]      # the newest report, for the heartbeat to write
    cancel = threading.Event()
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(HEARTBEAT_S):
            if jobs.beat(job.id, latest[0]):
                cancel.set()

    def report(progress: Progress) -> None:
        latest[0] = progress
        row = progress.ended_epoch
        if row is not None:                 # an epoch ended: its curve point is written now
            jobs.log(job.id, f"epoch {row.epoch}: loss {row.loss}, val macro-F1 "
                             f"{row.val['fused'].macro_f1}, {row.samples_per_s} samples/s")
            if jobs.beat(job.id, progress, curve_row=row):
                cancel.set()
        if cancel.is_set():
            raise JobCancelled()

    beat_thread = threading.Thread(target=heartbeat, name=f"job-{job.id}-heartbeat", daemon=True)
    beat_thread.start()
    try:
        result = _run(settings, store, jobs, job, report)
        jobs.finish(job.id, "succeeded", result=result)
    except JobCancelled:
        jobs.finish(job.id, "cancelled", error="cancelled on request")
    except Exception as e:  # noqa: BLE001 -- whatever went wrong belongs in the job's record
        jobs.log(job.id, traceback.format_exc())
        jobs.finish(job.id, "failed", error=f"{type(e).__name__}: {e}")
    finally:
        done.set()
        beat_thread.join()


def _run(settings: Settings, store: Store, jobs: Jobs, job: Job, report) -> dict:
    if job.kind not in KINDS:
        raise ValueError(f"unknown job kind {job.kind!r}")
    return KINDS[job.kind].run(settings, store, jobs, job, report)
