"""Exporting a project as CSV, JSONL, an ImageFolder or a Hugging Face dataset.

Every format carries each item's image bytes unchanged, label, caption, stored text and original
file name, so exporting and importing into a new project reproduces the items exactly. The export
is written to a temporary folder beside OUT and renamed to OUT at the end: OUT is either complete
or absent.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from .errors import FusionError
from .store import Item, Store

FORMATS = ("csv", "jsonl", "imagefolder", "hf")
COLUMNS = ("image", "label", "caption", "filename", "ocr_text", "ocr_engine", "status", "split", "sha256")
Progress = Callable[[str, int, int], None]


def _unique_paths(items: list[Item], folder_of: Callable[[Item], str]) -> Iterator[tuple[Item, str]]:
    """folder/original name, unless two different images would share it (or the name is unsafe)."""
    taken: set[str] = set()
    for item in items:
        stem, suffix = os.path.splitext(os.path.basename(item.filename.replace("\\", "/")))
        name = f"{stem}{item.extension}" if stem and suffix.lower() == item.extension else \
            f"{stem or item.sha256[:12]}{item.extension}"
        path = f"{folder_of(item)}/{name}".lstrip("/")
        if path.lower() in taken or stem.startswith("."):
            path = f"{folder_of(item)}/{stem.lstrip('.')}-{item.sha256[:12]}{item.extension}".lstrip("/")
        taken.add(path.lower())
        yield item, path


def _record(item: Item, image: str) -> dict:
    return {"image": image, "label": item.label or "", "caption": item.caption, "filename": item.filename,
            "ocr_text": item.ocr_text or "", "ocr_engine": item.ocr_engine or "", "status": item.status,
            "split": item.split, "sha256": item.sha256}


def _copy_images(store: Store, items: list[Item], out: Path, folder_of: Callable[[Item], str],
                 progress: Progress | None) -> list[dict]:
    records = []
    for n, (item, relative) in enumerate(_unique_paths(items, folder_of), 1):
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(store.image_path(item), out / relative)
        records.append(_record(item, relative))
        if progress and (n % 100 == 0 or n == len(items)):
            progress("exporting", n, len(items))
    return records


def _write_csv(path: Path, records: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(records)


def _write_jsonl(path: Path, records: list[dict], image_key: str = "image") -> None:
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            if image_key != "image":
                record = {image_key: record["image"]} | {k: v for k, v in record.items() if k != "image"}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def _hf_records(settings, project_name: str) -> Iterator[dict]:
    """Module-level with plain arguments: `datasets` pickles the generator to fingerprint it
    (and would split a list argument into shards)."""
    store = Store(settings)
    labels = store.project(project_name).label_names
    for item in store.iter_items(project_name):
        record = _record(item, "")
        # The original bytes, not a re-encoding: the same SHA-256 comes back on import.
        record["image"] = {"bytes": store.image_path(item).read_bytes(), "path": None}
        record["label"] = labels.index(item.label) if item.label else -1
        yield record


def _write_hf(store: Store, project_name: str, out: Path, labels: list[str]) -> None:
    import datasets

    features = datasets.Features({
        "image": datasets.Image(), "label": datasets.ClassLabel(names=labels),
        **{c: datasets.Value("string") for c in COLUMNS if c not in ("image", "label")}})
    with tempfile.TemporaryDirectory(dir=out.parent) as cache:
        dataset = datasets.Dataset.from_generator(
            _hf_records, features=features, cache_dir=cache,
            gen_kwargs={"settings": store.settings, "project_name": project_name})
        dataset.save_to_disk(str(out))


def export_project(store: Store, project_name: str, fmt: str, out: Path,
                   progress: Progress | None = None) -> dict:
    """Write every item of the project to the folder `out` (which must not exist or be empty)."""
    if fmt not in FORMATS:
        raise FusionError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FusionError(f"{out} already exists and is not an empty folder; choose a new one")
    project = store.project(project_name)
    items = list(store.iter_items(project_name))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if fmt == "hf":
            shutil.rmtree(partial)
            _write_hf(store, project_name, partial, project.label_names)
        elif fmt == "imagefolder":
            records = _copy_images(store, items, partial, lambda item: item.label or "", progress)
            _write_jsonl(partial / "metadata.jsonl", records, image_key="file_name")
        else:
            records = _copy_images(store, items, partial, lambda item: "images", progress)
            (_write_csv if fmt == "csv" else _write_jsonl)(partial / f"items.{fmt}", records)
        if out.exists():
            out.rmdir()
        os.replace(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return {"project": project_name, "format": fmt, "items": len(items), "path": str(out)}


def export_zip(store: Store, project_name: str, fmt: str) -> tuple[str, bytes]:
    """The export as one zip file for a download: (file name, bytes)."""
    with tempfile.TemporaryDirectory() as tmp:
        export_project(store, project_name, fmt, Path(tmp) / "export")
        archive = shutil.make_archive(str(Path(tmp) / f"{project_name}-{fmt}"), "zip", Path(tmp) / "export")
        return Path(archive).name, Path(archive).read_bytes()
