"""Image files, content-addressed: <home>/images/<sha[:2]>/<sha256><ext>, each stored once.

A file and its database row can't be written in one atomic step, so writers stage files first:
  1. stage: write the bytes under images/.staging/<writer>/ (temp + rename), holding that
     folder's lock for the writer's whole life;
  2. commit the rows in one transaction;
  3. promote: rename the staged files to their final names.
A writer killed between 1 and 3 leaves only a staging folder whose lock nobody holds.
`recover()` (run whenever the store opens) promotes the files that have rows and deletes the
rest, so the final folders never hold a file without its row or miss the file of a row.
Staged files and the staging folder are fsynced before the commit; the renames of step 3 need
no fsync of their own: if a crash undoes one, the file is back in staging and recover() redoes it.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

from fusion.core.atomic import fsync_dir, pid_alive


class BlobStore:
    def __init__(self, root: Path):
        self.root = root
        self.staging_root = root / ".staging"

    def path(self, sha256: str, extension: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}{extension}"

    def exists(self, sha256: str, extension: str) -> bool:
        return self.path(sha256, extension).is_file()

    def staging(self) -> "Staging":
        return Staging(self)

    def recover(self, has_row: Callable[[str], bool]) -> tuple[int, int]:
        """Finish or undo the staging folders of dead writers. Returns (promoted, deleted)."""
        promoted = deleted = 0
        if not self.staging_root.is_dir():
            return 0, 0
        for folder in self.staging_root.iterdir():
            if folder.name.startswith("."):
                # Still being created (locked and renamed within microseconds), or left by a
                # writer killed in between: that one holds no files yet.
                owner = folder.name[1:].split("-", 1)[0]
                if owner.isdigit() and not pid_alive(int(owner)):
                    shutil.rmtree(folder, ignore_errors=True)
                continue
            lock = try_lock(folder / ".lock")
            if lock is None:
                continue  # a live writer owns it
            try:
                for file in folder.iterdir():
                    if file.name == ".lock" or file.name.endswith(".tmp"):
                        continue
                    sha256, extension = file.stem, file.suffix
                    if has_row(sha256):
                        _promote(file, self.path(sha256, extension))
                        promoted += 1
                    else:
                        deleted += 1
                shutil.rmtree(folder, ignore_errors=True)
            finally:
                os.close(lock)
        return promoted, deleted


def try_lock(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT)
    except FileNotFoundError:  # the folder went away meanwhile
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        os.close(fd)
        return None


def _promote(staged: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():  # same content already stored (another writer got there first)
        staged.unlink(missing_ok=True)
        return
    os.replace(staged, final)


class Staging:
    """One writer's staging folder. Use as a context manager: the lock lives as long as it."""

    def __init__(self, blobs: BlobStore):
        self.blobs = blobs
        # Locked before it becomes visible under its real name, so recover() never mistakes a
        # folder being born for a dead writer's.
        name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        partial = blobs.staging_root / f".{name}"
        partial.mkdir(parents=True)
        self._lock = try_lock(partial / ".lock")
        self.folder = partial.rename(blobs.staging_root / name)
        self.staged: dict[str, Path] = {}  # sha256 -> staged file

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write(self, sha256: str, extension: str, data: bytes) -> None:
        target = self.folder / f"{sha256}{extension}"
        tmp = target.with_name(target.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        self.staged[sha256] = target

    def add(self, files: list[tuple[str, str, bytes]]) -> None:
        """Write (sha256, extension, bytes) durably under the staging folder, skipping files
        already stored. Several at once: fsync waits on the disk, and the disk takes many."""
        todo = {sha: (sha, ext, data) for sha, ext, data in files
                if sha not in self.staged and not self.blobs.exists(sha, ext)}
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda args: self._write(*args), todo.values()))
        fsync_dir(self.folder)

    def promote(self, shas: Iterable[str]) -> None:
        """After the rows of these files committed: move them to their final names."""
        for sha256 in shas:
            staged = self.staged.pop(sha256, None)
            if staged is not None:
                _promote(staged, self.blobs.path(sha256, staged.suffix))

    def discard(self, shas: Iterable[str]) -> None:
        """After a rollback: these files have no rows."""
        for sha256 in shas:
            staged = self.staged.pop(sha256, None)
            if staged is not None:
                staged.unlink(missing_ok=True)

    def close(self) -> None:
        self.discard(list(self.staged))
        shutil.rmtree(self.folder, ignore_errors=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
