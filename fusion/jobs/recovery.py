"""Putting a workspace in order after a crash: finishing or undoing what killed processes left.

Every writer is built so that a kill at any instant leaves the old state or the new one, plus
at most leftovers that only this module may touch, and only once their writer is gone:
  - image files staged by a dead writer: promoted if their rows committed, else deleted (fusion.store.blobs);
  - model versions staged by a dead trainer: likewise (fusion.ml.registry.save_version);
  - temp files `.<name>.<pid>.tmp` of dead writers (fusion.core.atomic): deleted;
  - upload folders nobody imports any more (fusion.services.uploads): deleted;
  - jobs still "running" without a worker: ended, resumable from their checkpoint (fusion.jobs).
SQLite rolls back an unfinished transaction itself (its WAL), the next time the database opens.

The store runs the blob step whenever it opens; the worker runs the rest when it starts, and the
app once per server start (fusion.ui.resources.store). Live writers are never disturbed:
their staging folders are locked and their temp names carry a live pid.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import select

from fusion.core.atomic import abandoned, remove_dead_temps, temp_owner
from fusion.ml.registry import promote_staged
from fusion.store.schema import ModelVersionRow, ProjectRow
from fusion.core.settings import Settings
from fusion.jobs.queue import Jobs
from fusion.store.labeling import Store
from fusion.services.uploads import remove_finished


def _temp_folders(settings: Settings, projects: list[str]) -> list[Path]:
    """Every folder a writer puts temp files in."""
    folders = [settings.home, settings.images_dir / ".thumbs", settings.projects_dir]
    for name in projects:
        project = settings.project_dir(name)
        folders += [project, project / "features", project / "models", project / "source",
                    project / "source" / "images"]
    jobs = settings.home / "jobs"
    if jobs.is_dir():
        folders += [p for p in jobs.iterdir() if p.is_dir()]
    return folders


def _registered_versions(store: Store) -> dict[str, set[str]]:
    with store.db.read() as session:
        rows = session.execute(select(ProjectRow.name, ModelVersionRow.version).join(
            ModelVersionRow, ModelVersionRow.project_id == ProjectRow.id)).all()
    found: dict[str, set[str]] = {}
    for project, version in rows:
        found.setdefault(project, set()).add(version)
    return found


def recover_model_versions(settings: Settings, store: Store) -> tuple[int, int]:
    """Staged version folders of dead trainers: renamed into place if their row committed, else
    deleted. Returns (promoted, deleted)."""
    registered = _registered_versions(store)
    promoted = deleted = 0
    for name in store.project_names():
        models = settings.project_dir(name) / "models"
        if not models.is_dir():
            continue
        for entry in models.iterdir():
            if not entry.name.startswith("."):
                continue
            pid = temp_owner(entry.name)
            if not abandoned(entry, pid):
                continue
            version = entry.name[1:].rsplit(".", 2)[0] if pid is not None else None
            final = models / version if version else None
            if final is not None and version in registered.get(name, ()) and not final.exists():
                promote_staged(entry, final)
                promoted += 1
            else:
                shutil.rmtree(entry, ignore_errors=True)
                deleted += 1
    return promoted, deleted


def recover_files(settings: Settings, store: Store) -> dict[str, int]:
    """Finish or undo every file a dead writer left half-done. Returns counts, for the log."""
    blobs_promoted, blobs_deleted = store.blobs.recover(store._has_blob_row)
    versions_promoted, versions_deleted = recover_model_versions(settings, store)
    temps = sum(remove_dead_temps(folder) for folder in _temp_folders(settings, store.project_names()))
    return {"blobs_promoted": blobs_promoted, "blobs_deleted": blobs_deleted,
            "versions_promoted": versions_promoted, "versions_deleted": versions_deleted,
            "temp_files_deleted": temps,
            "uploads_deleted": remove_finished(settings, active_uploads(store))}


def active_uploads(store: Store) -> set[str]:
    """The upload folders that queued or running import jobs will read."""
    return {job.params.get("upload") for job in Jobs(store).unfinished("import")} - {None}


def recover_workspace(settings: Settings, store: Store) -> dict[str, int]:
    """What the app runs when it starts: dead workers' jobs ended, then recover_files."""
    jobs = Jobs(store).fail_dead()
    return {"jobs_ended": len(jobs), **recover_files(settings, store)}


def describe(counts: dict[str, int]) -> str:
    done = [f"{n} {what.replace('_', ' ')}" for what, n in counts.items() if n]
    return "recovered after a crash: " + ", ".join(done) if done else ""
