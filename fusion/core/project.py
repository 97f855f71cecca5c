"""A project: a named label set (with descriptions) and its model versions.

The store (fusion.store) keeps projects in the database; model files live under
<home>/projects/<name>/models/<version>/ (see model.FusionModel.save).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fusion.core.errors import FusionError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_LABEL = re.compile(r"^[^\x00-\x1f/\\]{1,128}$")  # a label is also a folder name on export


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


def check_project_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise FusionError(f"bad project name {name!r}: use 1-64 letters, digits, '_', '-' or '.'")
    return name


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    if len(labels) < 2:
        raise FusionError(f"a project needs at least 2 labels, got {len(labels)}")
    for label in labels:
        if not _LABEL.match(label) or label.strip() != label or label in (".", ".."):
            raise FusionError(f"bad label {label!r}: 1-128 characters, no '/', '\\\\', control "
                              "characters or surrounding spaces")
    return dict(labels)
