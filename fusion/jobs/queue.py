"""Background jobs, kept in the store so they outlive page reloads and app restarts.

A job is queued by the app or the CLI, claimed by a worker process (fusion.jobs.worker; on
PostgreSQL, several, on several machines: a claim locks the row and skips rows others hold), and
ends succeeded, failed or cancelled. While it runs the worker writes its progress and a heartbeat
every few seconds; each job also has a plain-text log and, for training, a checkpoint that a new
job can resume from. A running job whose worker is gone (its process no longer on its machine, or
no heartbeat for DEAD_AFTER_S) is failed by whoever looks next: a worker or the app.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from fusion.core.atomic import pid_alive
from fusion.core.errors import FusionError
from fusion.core.progress import Progress
from fusion.ml.metrics import EpochRecord, VersionMetrics, headlines
from fusion.store.schema import JobRow, ModelVersionRow, ProjectRow
from fusion.store.labeling import Store, utcnow

FINISHED = ("succeeded", "failed", "cancelled")
# fusion.jobs.kinds runs them
KINDS = ("train", "prelabel", "zero_shot", "label_issues", "embed", "import", "export", "demo")
DEAD_AFTER_S = 30.0   # a running job without a heartbeat this long has lost its worker (it beats every 2 s)
HOST = socket.gethostname()


class JobCancelled(Exception):
    """Raised inside a running job when someone asked to cancel it."""


@dataclass
class Job:
    id: int
    project: str
    kind: str
    params: dict
    status: str
    created_at: datetime
    created_by: str
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    worker_pid: int | None
    worker_host: str | None
    device: str | None
    progress: Progress | None
    curve: list[EpochRecord] | None     # a training job's epochs so far
    cancel_requested: bool
    resume_of: int | None
    error: str | None
    result: dict | None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def seconds_since_heartbeat(self) -> float | None:
        return None if self.heartbeat_at is None else (utcnow() - self.heartbeat_at).total_seconds()


_COLUMNS = [f.name for f in fields(Job) if f.name != "project"]


class Jobs:
    def __init__(self, store: Store):
        self.store = store
        self.db = store.db
        self.root = store.settings.home / "jobs"

    # -- files ----------------------------------------------------------------------------
    def log_path(self, job_id: int) -> Path:
        return self.root / str(job_id) / "log.txt"

    def checkpoint_path(self, job_id: int) -> Path:
        return self.root / str(job_id) / "checkpoint.safetensors"

    def log(self, job_id: int, line: str) -> None:
        path = self.log_path(job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(f"{utcnow():%Y-%m-%d %H:%M:%S} {line}\n")

    def log_tail(self, job_id: int, lines: int = 30) -> list[str]:
        path = self.log_path(job_id)
        return path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []

    # -- reading --------------------------------------------------------------------------
    def _job(self, row: JobRow, project: str) -> Job:
        job = Job(project=project, **{c: getattr(row, c) for c in _COLUMNS})
        job.progress = Progress.from_json(row.progress)
        job.curve = [EpochRecord.from_json(r) for r in row.curve or []]
        return job

    def get(self, job_id: int) -> Job:
        with self.db.read() as session:
            found = session.execute(select(JobRow, ProjectRow.name).join(ProjectRow, ProjectRow.id == JobRow.project_id)
                                    .where(JobRow.id == job_id)).first()
        if found is None:
            raise FusionError(f"no job {job_id}")
        return self._job(*found)

    def list(self, project: str | None = None, limit: int = 20, kind: str | None = None) -> list[Job]:
        """Newest first."""
        query = select(JobRow, ProjectRow.name).join(ProjectRow, ProjectRow.id == JobRow.project_id)
        if project is not None:
            query = query.where(ProjectRow.name == project)
        if kind is not None:
            query = query.where(JobRow.kind == kind)
        with self.db.read() as session:
            return [self._job(*r) for r in session.execute(query.order_by(JobRow.id.desc()).limit(limit)).all()]

    def unfinished(self, kind: str) -> list[Job]:
        """Queued and running jobs of one kind, in every project, oldest first."""
        query = (select(JobRow, ProjectRow.name).join(ProjectRow, ProjectRow.id == JobRow.project_id)
                 .where(JobRow.kind == kind, JobRow.status.in_(("queued", "running"))).order_by(JobRow.id))
        with self.db.read() as session:
            return [self._job(*r) for r in session.execute(query).all()]

    # -- the app's side -------------------------------------------------------------------
    def submit(self, project: str, kind: str, params: dict, user: str, resume_of: int | None = None,
               curve: list[EpochRecord] | None = None) -> Job:
        if kind not in KINDS:
            raise FusionError(f"unknown job kind {kind!r}; known: {', '.join(KINDS)}")
        with self.db.write() as session:
            row = JobRow(project_id=self.store._project_row(session, project).id, kind=kind, params=params,
                         status="queued", created_at=utcnow(), created_by=user, cancel_requested=False,
                         resume_of=resume_of, curve=[r.to_json() for r in curve or []])
            session.add(row)
            session.flush()
            job_id = row.id
        self.log(job_id, f"queued by {user}: {kind} {params}" + (f" (resuming job {resume_of})" if resume_of else ""))
        return self.get(job_id)

    def cancel(self, job_id: int, user: str) -> Job:
        """A queued job is cancelled at once; a running one stops at its next progress report."""
        with self.db.write() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise FusionError(f"no job {job_id}")
            if row.status == "queued":
                row.status, row.finished_at, row.error = "cancelled", utcnow(), f"cancelled by {user} before it started"
            elif row.status == "running":
                row.cancel_requested = True
            else:
                raise FusionError(f"job {job_id} already {row.status}")
        self.log(job_id, f"cancel requested by {user}")
        return self.get(job_id)

    def resume(self, job_id: int, user: str) -> Job:
        """A new job with the same parameters that continues from this one's last checkpoint."""
        old = self.get(job_id)
        if old.status not in ("failed", "cancelled"):
            raise FusionError(f"job {job_id} is {old.status}; only a failed or cancelled job can be resumed")
        if not self.checkpoint_path(job_id).is_file():
            raise FusionError(f"job {job_id} left no checkpoint (it stopped before its first epoch); start a new job")
        return self.submit(old.project, old.kind, old.params, user, resume_of=job_id, curve=old.curve)

    # -- the worker's side ----------------------------------------------------------------
    def claim_next(self, pid: int, kinds: tuple[str, ...] | None = None) -> Job | None:
        """The oldest queued job (of `kinds`, if given), now running under this worker. One
        transaction: on SQLite the write lock, on PostgreSQL a row lock that other workers skip
        (FOR UPDATE SKIP LOCKED), so no job is claimed twice and no worker waits for another."""
        with self.db.write() as session:
            query = select(JobRow).where(JobRow.status == "queued")
            if kinds:
                query = query.where(JobRow.kind.in_(kinds))
            query = query.order_by(JobRow.id).limit(1)
            if session.bind.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            row = session.scalars(query).first()
            if row is None:
                return None
            now = utcnow()
            row.status, row.started_at, row.heartbeat_at, row.worker_pid, row.worker_host = "running", now, now, pid, HOST
            job_id = row.id
        self.log(job_id, f"started by worker pid {pid} on {HOST}")
        return self.get(job_id)

    def beat(self, job_id: int, progress: Progress | None = None, curve_row: EpochRecord | None = None,
             device: str | None = None) -> bool:
        """Heartbeat (+ progress); returns whether a cancel was requested."""
        with self.db.write() as session:
            row = session.get(JobRow, job_id)
            row.heartbeat_at = utcnow()
            if progress is not None:
                row.progress = progress.to_json()
            if curve_row is not None:
                row.curve = [*(row.curve or []), curve_row.to_json()]  # a new list: JSON columns track assignment
            if device is not None:
                row.device = device
            return row.cancel_requested or row.status != "running"   # or it was ended as dead

    def finish(self, job_id: int, status: str, result: dict | None = None, error: str | None = None) -> None:
        with self.db.write() as session:
            row = session.get(JobRow, job_id)
            if row.status != "running":      # ended already, as dead (its heartbeat had stopped)
                return
            row.status, row.finished_at, row.result, row.error = status, utcnow(), result, error
        self.log(job_id, f"{status}" + (f": {error}" if error else ""))

    def fail_dead(self) -> list[int]:
        """End, as failed, every running job whose worker died (killed, out of memory, machine
        restarted): its process is gone from this machine, or its heartbeat stopped DEAD_AFTER_S
        ago (a worker on another machine). A training job whose worker died after registering its
        model version did its work: it is marked succeeded with that version, so nobody resumes
        it into a duplicate."""
        silent_since = utcnow() - timedelta(seconds=DEAD_AFTER_S)

        def dead(row: JobRow) -> bool:
            return ((row.worker_host in (HOST, None) and not (row.worker_pid and pid_alive(row.worker_pid)))
                    or row.heartbeat_at is None or row.heartbeat_at < silent_since)

        running = select(JobRow).where(JobRow.status == "running")
        with self.db.read() as session:   # the pages call this on every run: no write lock unless one died
            if not any(dead(row) for row in session.scalars(running)):
                return []
        with self.db.write() as session:
            rows = [row for row in session.scalars(running).all() if dead(row)]
            registered = {job_id: (version, metrics) for job_id, version, metrics in session.execute(
                select(ModelVersionRow.job_id, ModelVersionRow.version, ModelVersionRow.metrics).where(
                    ModelVersionRow.job_id.in_([r.id for r in rows])))} if rows else {}
            ended = []
            for row in rows:
                beat = f"{row.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC" if row.heartbeat_at else "never"
                row.finished_at = utcnow()
                if row.id in registered:
                    version, metrics = registered[row.id]
                    test = headlines(VersionMetrics.from_json(metrics).test)
                    row.status, row.error = "succeeded", None
                    row.result = {"version": version, "promoted": False, "recovered": True, "test": test}
                    ended.append((row.id, f"succeeded: version {version} was registered before the worker "
                                          f"(pid {row.worker_pid}) stopped; not auto-promoted"))
                    continue
                row.status = "failed"
                row.error = (f"the worker (pid {row.worker_pid} on {row.worker_host}) stopped while running this job; "
                             f"last heartbeat {beat}. Resume it to continue from its last checkpoint.")
                ended.append((row.id, f"failed: {row.error}"))
        for job_id, line in ended:
            self.log(job_id, line)
        return [job_id for job_id, _ in ended]
