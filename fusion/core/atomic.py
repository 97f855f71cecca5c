"""Files written atomically: into a temp name, fsynced, then renamed over the real name.

A reader (or a process starting after a crash) sees the old file or the new one, never half of
one. Temp names carry the writer's pid, `.<name>.<pid>.tmp`, so two writers never share one and
recovery (fusion.jobs.recovery) can tell a dead writer's leftovers from a live writer's work.
The fsyncs are for power loss; a killed process's written pages survive in the OS cache anyway.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Callable

_TEMP = re.compile(r"^\..+\.(\d+)\.tmp$")
ABANDONED_AFTER_S = 3600   # a leftover without a pid in its name is only removed once this old


def temp_path(path: Path) -> Path:
    """The temp name this process writes `path` under (a file or a folder)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


fsync_dir = fsync_file  # a folder is fsynced the same way: its entries (renames) become durable


def fsync_tree(folder: Path) -> None:
    """Every file and folder under `folder`, and `folder` itself."""
    for root, _dirs, files in os.walk(folder, topdown=False):
        for name in files:
            fsync_file(Path(root) / name)
        fsync_dir(Path(root))


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` writes the content; then fsync, rename over `path`, fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs here (a zombie, killed but not yet reaped, counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True                      # someone else's process
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] != "Z"
    except (OSError, ValueError, IndexError):
        return True


def temp_owner(name: str) -> int | None:
    """The pid in a temp name `.<name>.<pid>.tmp`, or None if `name` is no such temp."""
    match = _TEMP.match(name)
    return int(match.group(1)) if match else None


def abandoned(path: Path, pid: int | None) -> bool:
    """A temp whose writer is gone: its pid is dead, or (no pid in its name) it is old."""
    if pid is not None:
        return not pid_alive(pid)
    try:
        return time.time() - path.lstat().st_mtime > ABANDONED_AFTER_S
    except FileNotFoundError:
        return False


def remove_dead_temps(folder: Path) -> int:
    """Delete the temp files and folders in `folder` (not below) whose writer died. Returns how many."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for entry in entries:
        if not entry.name.endswith(".tmp"):
            continue
        pid = temp_owner(entry.name)
        if not abandoned(Path(entry.path), pid):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            Path(entry.path).unlink(missing_ok=True)
        removed += 1
    return removed
