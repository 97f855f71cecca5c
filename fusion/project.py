"""A project: a named label set (with descriptions) and its model versions, in the workspace.

Layout: <home>/projects/<name>/project.json and models/<version>/ (see model.FusionModel.save).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import FusionError, UnknownProject
from .settings import Settings

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class Project:
    name: str
    labels: dict[str, str]            # label -> one-line description ("" if none), in order
    directory: Path
    active_model: str | None = None   # None: zero-shot

    @property
    def label_names(self) -> list[str]:
        return list(self.labels)

    def model_dir(self, version: str) -> Path:
        return self.directory / "models" / version

    def save(self) -> None:
        data = asdict(self) | {"directory": None}
        tmp = self.directory / "project.json.tmp"
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.directory / "project.json")  # atomic: never a half-written project


def create_project(settings: Settings, name: str, labels: dict[str, str]) -> Project:
    if not _NAME.match(name):
        raise FusionError(f"bad project name {name!r}: use 1-64 letters, digits, '_', '-' or '.'")
    if len(labels) < 2:
        raise FusionError(f"a project needs at least 2 labels, got {len(labels)}")
    directory = settings.project_dir(name)
    if (directory / "project.json").exists():
        raise FusionError(f"project {name!r} already exists")
    directory.mkdir(parents=True, exist_ok=True)
    project = Project(name, dict(labels), directory)
    project.save()
    return project


def list_projects(settings: Settings) -> list[str]:
    if not settings.projects_dir.is_dir():
        return []
    return sorted(p.parent.name for p in settings.projects_dir.glob("*/project.json"))


def load_project(settings: Settings, name: str) -> Project:
    path = settings.project_dir(name) / "project.json"
    if not _NAME.match(name) or not path.is_file():
        known = ", ".join(list_projects(settings)) or "none yet"
        raise UnknownProject(f"no project {name!r} in {settings.home} (projects: {known})")
    data = json.loads(path.read_text())
    return Project(data["name"], data["labels"], path.parent, data.get("active_model"))


def set_active_model(project: Project, version: str | None) -> None:
    if version is not None and not (project.model_dir(version) / "model.safetensors").is_file():
        raise FusionError(f"project {project.name!r} has no model version {version!r}")
    project.active_model = version
    project.save()
