"""The built-in demo project: generated on first run, with a baseline model trained on it.

Training reads the generator's own rendering of each page's text instead of running OCR over
480 images (minutes on a CPU); uploads in the app always go through real OCR, and a test checks
that OCR of demo pages recovers their text.
"""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

from . import demo_data
from .errors import UnknownProject
from .pipeline import compose_text, get_engine
from .project import Project, create_project, load_project
from .settings import REPO_ROOT, Settings
from .train import TrainConfig, train_project_model

DEMO_ITEMS = 480
DEMO_SEED = 0


def demo_source(project: Project) -> Path:
    return project.directory / "source"


def ensure_demo_project(settings: Settings, progress: Callable[[str, int, int], None] | None = None) -> Project:
    """The demo project with an active model, building whatever is missing (idempotent, and
    safe when the app and the CLI start at once: a file lock makes the second one wait)."""
    settings.projects_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.projects_dir / f".{settings.demo_project}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            project = load_project(settings, settings.demo_project)
        except UnknownProject:
            project = create_project(settings, settings.demo_project, demo_data.LABELS)
        if project.active_model is None:
            train_demo_baseline(settings, project, progress)
        return project


def train_demo_baseline(settings: Settings, project: Project,
                        progress: Callable[[str, int, int], None] | None = None) -> tuple[str, dict]:
    generated = (lambda done, total: progress("generating", done, total)) if progress else None
    items = demo_data.generate(demo_source(project), n=DEMO_ITEMS, seed=DEMO_SEED, progress=generated)
    root = demo_source(project)
    return train_project_model(
        get_engine(settings), project,
        paths=[root / item.file for item in items],
        texts=[compose_text(item.text, item.caption) for item in items],
        labels=[item.label for item in items],
        splits=[item.split for item in items],
        config=TrainConfig(), progress=progress,
    )


def test_page(project: Project, n: int) -> tuple[str, bytes]:
    """The n-th page (cycling) of the demo's test split: its file name and bytes."""
    items = [i for i in demo_data.load_manifest(demo_source(project)) if i.split == "test"]
    item = items[n % len(items)]
    return item.file, (demo_source(project) / item.file).read_bytes()


def demo_ready(settings: Settings) -> bool:
    try:
        return load_project(settings, settings.demo_project).active_model is not None
    except UnknownProject:
        return False


def build_log(settings: Settings) -> Path:
    return settings.home / "logs" / "demo-build.log"


def start_demo_build(settings: Settings) -> subprocess.Popen:
    """Build the demo project in its own process (the app never trains in its script thread);
    it writes `stage: done/total` lines to build_log(settings). A second build started while
    one runs waits on the first one's lock and then finds the project ready."""
    log = build_log(settings)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"FUSION_HOME": str(settings.home)}
    with open(log, "a") as out:
        return subprocess.Popen([sys.executable, "-m", "fusion", "demo"], stdout=out, stderr=out, env=env,
                                cwd=REPO_ROOT, start_new_session=True)


def build_progress(log: Path) -> tuple[str, int, int] | None:
    """The latest `stage: done/total` line the build process wrote, if any."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    for line in reversed(lines):
        stage, _, count = line.partition(": ")
        done, _, total = count.partition("/")
        if done.isdigit() and total.isdigit():
            return stage, int(done), int(total)
    return None
