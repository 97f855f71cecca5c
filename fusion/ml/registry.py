"""The model registry: every trained version, what it saw, how it scored, and which is active.

A version's files live in <project>/models/<version>/ (safetensors, config, labels, test
predictions) and never change; its row holds the training parameters, the data snapshot and
the test-split evaluation. Promotions and rollbacks are logged in `model_events`.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from fusion.core.atomic import fsync_dir, temp_path
from fusion.ml.encoders import ENCODERS_FILE
from fusion.core.errors import FusionError
from fusion.ml.metrics import VersionMetrics
from fusion.ml.model import FusionModel
from fusion.core.project import Project
from fusion.ml.safe_weights import safetensors_metadata
from fusion.store.schema import ModelEventRow, ModelVersionRow
from fusion.store.labeling import Store, utcnow


@dataclass
class ModelVersion:
    version: str
    parent: str | None
    created_at: datetime
    created_by: str
    job_id: int | None
    params: dict
    data: dict
    metrics: VersionMetrics
    active: bool

    def score(self, head: str = "fused", metric: str = "macro_f1") -> float | None:
        return self.metrics.score(head, metric)


@dataclass
class ModelEvent:
    at: datetime
    user: str
    action: str
    from_version: str | None
    to_version: str | None


def _version_number(name: str) -> int:
    return int(name[1:]) if name[:1] == "v" and name[1:].isdigit() else 0


def save_version(store: Store, project: Project, fusion: FusionModel, extra_files: Callable[[Path], None],
                 parent: str | None, user: str, job_id: int | None, params: dict, data: dict,
                 metrics: VersionMetrics) -> str:
    """Register a version under the next free name. Returns the name.

    Like image files (fusion.store.blobs): the files are written to a staging folder, the row is
    committed, then the folder is renamed to its final name. So a version folder never exists
    without its row; a trainer killed after the commit leaves a staged folder that
    fusion.jobs.recovery promotes, and one killed before it leaves one that recovery deletes."""
    taken = {v.version for v in versions(store, project.name)}
    taken |= {p.name for p in (project.directory / "models").glob("v*")}
    number = max((_version_number(v) for v in taken), default=0) + 1
    while True:
        version = f"v{number}"
        final = project.model_dir(version)
        if final.exists():                   # a folder from before the registry, or a race
            number += 1
            continue
        fusion.config.version = version
        staged = temp_path(final)
        shutil.rmtree(staged, ignore_errors=True)    # a dead process's leftover that had our pid
        try:
            fusion.write_files(staged, extra_files)
            with store.db.write() as session:
                project_id = store._project_row(session, project.name).id
                session.add(ModelVersionRow(project_id=project_id, version=version, parent=parent,
                                            created_at=utcnow(), created_by=user, job_id=job_id, params=params,
                                            data=data, metrics=metrics.to_json()))
        except IntegrityError:               # another trainer registered this name meanwhile
            shutil.rmtree(staged, ignore_errors=True)
            number += 1
            continue
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        promote_staged(staged, final)
        return version


def promote_staged(staged: Path, final: Path) -> None:
    """Move a registered version's staged folder to its final name (durably)."""
    os.replace(staged, final)
    fsync_dir(final.parent)


def _adopt_unregistered(store: Store, project: Project, known: set[str]) -> None:
    """Versions saved before the registry existed (a metrics.json beside the weights)."""
    for directory in sorted((project.directory / "models").glob("v*/metrics.json")):
        version = directory.parent.name
        if version not in known:
            with store.db.write() as session:
                session.add(ModelVersionRow(
                    project_id=store._project_row(session, project.name).id, version=version, parent=None,
                    created_at=datetime.fromtimestamp(directory.stat().st_mtime), created_by="unknown",
                    job_id=None, params={"mode": "head"}, data={}, metrics=json.loads(directory.read_text())))


def versions(store: Store, project_name: str) -> list[ModelVersion]:
    """Every version of the project, newest first."""
    project = store.project(project_name)
    with store.db.read() as session:
        rows = session.scalars(select(ModelVersionRow).where(
            ModelVersionRow.project_id == store._project_row(session, project_name).id)).all()
    known = {r.version for r in rows}
    if any(p.parent.name not in known for p in (project.directory / "models").glob("v*/metrics.json")):
        _adopt_unregistered(store, project, known)
        return versions(store, project_name)
    found = [ModelVersion(r.version, r.parent, r.created_at, r.created_by, r.job_id, r.params, r.data,
                          VersionMetrics.from_json(r.metrics), r.version == project.active_model) for r in rows]
    return sorted(found, key=lambda v: _version_number(v.version), reverse=True)


def get_version(store: Store, project_name: str, version: str) -> ModelVersion:
    found = {v.version: v for v in versions(store, project_name)}
    if version not in found:
        raise FusionError(f"project {project_name!r} has no model version {version!r} "
                          f"(versions: {', '.join(found) or 'none yet'})")
    return found[version]


def events(store: Store, project_name: str) -> list[ModelEvent]:
    """Promotions and rollbacks, newest first."""
    with store.db.read() as session:
        rows = session.scalars(select(ModelEventRow).where(
            ModelEventRow.project_id == store._project_row(session, project_name).id).order_by(
            ModelEventRow.id.desc())).all()
    return [ModelEvent(r.at, r.user, r.action, r.from_version, r.to_version) for r in rows]


def promote(store: Store, project_name: str, version: str, user: str, action: str = "promote") -> Project:
    """Make `version` the active model: new predictions are tagged with it."""
    project = store.project(project_name)
    get_version(store, project_name, version)
    model = FusionModel.load(project.model_dir(version))  # refuse a version whose files are missing or not safetensors
    if model.config.finetuned_encoders:   # and its own encoders: the app would load them next
        safetensors_metadata(project.model_dir(version) / ENCODERS_FILE)
    with store.db.write() as session:
        row = store._project_row(session, project_name)
        previous, row.active_model = row.active_model, version
        session.add(ModelEventRow(project_id=row.id, at=utcnow(), user=user, action=action,
                                  from_version=previous, to_version=version))
    return store.project(project_name)


def rollback_target(store: Store, project_name: str) -> str | None:
    """The version that was active before the current one, if there was one."""
    current = store.project(project_name).active_model
    earlier = [e.from_version for e in events(store, project_name) if e.to_version == current and e.from_version]
    return earlier[0] if current is not None and earlier else None


def rollback(store: Store, project_name: str, user: str, to: str | None = None) -> Project:
    """Return to `to`, or to the version that was active before the current one."""
    to = to or rollback_target(store, project_name)
    if to is None:
        raise FusionError(f"project {project_name!r} has no earlier active version to roll back to; "
                          "name one with --to")
    return promote(store, project_name, to, user, action="rollback")


def beats_active(metrics: VersionMetrics) -> bool:
    """Auto-promotion rule: a higher fused macro-F1 than the active version on the same test
    items (or than zero-shot when none is active); ties keep the active one."""
    baseline = metrics.parent_test or metrics.zero_shot_test
    return metrics.test["fused"].macro_f1 > baseline["fused"].macro_f1
