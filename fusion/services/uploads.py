"""Uploaded archives waiting for their import: <home>/uploads/<pid>-<id>/.

The Dataset page unpacks an upload there and queues an import job for the worker
(fusion.jobs.worker.queue_import). The folder's lock is taken before the folder gets its real
name and held until the job is in the store; the job removes the folder when it ends. Recovery
(and the next upload) removes exactly the folders whose lock nobody holds and that no queued or
running import job names: imported ones, and those of a server killed while unpacking or an
import killed half-way (an import adds only what is missing, so uploading the same file again
finishes it).
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from fusion.core.atomic import pid_alive
from fusion.store.blobs import try_lock
from fusion.core.settings import Settings

LOCK = ".lock"   # dot-named: importing skips it


def uploads_dir(settings: Settings) -> Path:
    return settings.home / "uploads"


def new_upload_folder(settings: Settings) -> tuple[Path, int]:
    """A fresh, empty folder and the fd of its held lock (close it, or hand it to a process)."""
    root = uploads_dir(settings)
    name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    partial = root / f".{name}"                     # locked before it is visible under its real name
    partial.mkdir(parents=True)
    lock = try_lock(partial / LOCK)
    return partial.rename(root / name), lock


def remove_finished(settings: Settings, keep: set[str] = frozenset()) -> int:
    """Delete the upload folders nobody works on: imported, or left by a killed process. `keep`:
    the folders of import jobs still queued or running (fusion.jobs.worker.active_uploads)."""
    root = uploads_dir(settings)
    if not root.is_dir():
        return 0
    removed = 0
    for folder in root.iterdir():
        if folder.name.startswith("."):             # being created, or its creator died meanwhile
            owner = folder.name[1:].split("-", 1)[0]
            if owner.isdigit() and not pid_alive(int(owner)):
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
            continue
        if not folder.is_dir() or str(folder) in keep:
            continue
        lock = try_lock(folder / LOCK)
        if lock is None:
            continue                                # being unpacked or imported
        try:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
        finally:
            os.close(lock)
    return removed
