"""Uploaded archives waiting for their import: <home>/uploads/<pid>-<id>/.

The Dataset page unpacks an upload there and imports it in a background process
(`python -m fusion import`). The folder's lock is taken before the folder gets its real name
and handed down to that process, so it is held from the first byte unpacked to the import's
end. Recovery (and the next upload) removes exactly the folders whose lock nobody holds:
imported ones, and those of a server killed while unpacking or an import killed half-way (an
import adds only what is missing, so uploading the same file again finishes it).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

from fusion.core import background
from fusion.core.atomic import pid_alive
from fusion.store.blobs import try_lock
from fusion.services.importing import unpack_upload
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


def start_import(settings: Settings, project: str, filename: str, data: bytes,
                 user: str) -> tuple[subprocess.Popen, Path]:
    """Unpack an uploaded .zip or .csv and import it into `project` in a background process.
    Returns (process, log) for background.progress. FusionError, keeping nothing, if the upload
    can't be unpacked."""
    remove_finished(settings)
    folder, lock = new_upload_folder(settings)
    try:
        target = unpack_upload(filename, data, folder)
        log = settings.home / "logs" / f"import-{folder.name}.log"
        process = background.start(settings, ["import", project, str(target), "--user", user], log,
                                   pass_fds=(lock,))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        os.close(lock)                              # the import process holds it now
    return process, log


def remove_finished(settings: Settings) -> int:
    """Delete the upload folders nobody works on: imported, or left by a killed process."""
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
        if not folder.is_dir():
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
