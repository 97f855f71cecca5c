"""Long work in its own process: `python -m fusion ...` writing `stage: done/total` lines to a log
that a page polls. The app never runs long work in its script thread."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fusion.core.settings import REPO_ROOT, Settings


def start(settings: Settings, args: list[str], log: Path, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
    """`pass_fds`: open files the process inherits, e.g. a lock it holds for its whole life."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"FUSION_HOME": str(settings.home)}
    with open(log, "a") as out:
        return subprocess.Popen([sys.executable, "-m", "fusion", *args], stdout=out, stderr=out, env=env,
                                cwd=REPO_ROOT, start_new_session=True, pass_fds=pass_fds)


def progress(log: Path) -> tuple[str, int, int] | None:
    """The latest `stage: done/total` line the process wrote, if any."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    for line in reversed(lines):
        stage, _, count = line.partition(": ")
        done, _, total = count.partition("/")
        if done.isdigit() and total.isdigit():
            return stage, int(done), int(total)
    return None
