"""Exporting a project as CSV, JSONL, an ImageFolder or a Hugging Face dataset.

Every format carries each item's image bytes unchanged, label, caption, stored text and original
file name, so exporting and importing into a new project reproduces the items exactly. The export
is written to a temporary folder beside OUT and renamed to OUT at the end: OUT is either complete
or absent.

A de-identified export (the default while the workspace de-identifies, FUSION_DEIDENTIFY or
FUSION_DEMO_MODE) redacts captions, stored text and file names in every format, and blacks out
the words of each page image that hold PHI. Where OCR recorded the words' boxes, those are used;
a page without them (imported text, the demo's rendered text) is read by OCR during the export,
and the words blacked out are the PHI of that reading and any word of the stored text's PHI.
The summary counts the pages masked and the pages read at export.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from fusion.privacy import deidentify as deid
from fusion.privacy.deidentified_view import phi_boxes
from fusion.privacy.shown import Shown
from fusion.core.errors import FusionError
from fusion.store.labeling import Item, Store
from PIL import Image

from fusion.imaging.images import load_image
from fusion.imaging.overlay import black_out

FORMATS = ("csv", "jsonl", "imagefolder", "hf")
COLUMNS = ("image", "label", "caption", "filename", "ocr_text", "ocr_engine", "status", "split", "sha256")
Progress = Callable[[str, int, int], None]


def _unique_paths(items: list[Item], folder_of: Callable[[Item], str],
                  deidentify: bool = False) -> Iterator[tuple[Item, str]]:
    """folder/original name, unless two different images would share it (or the name is unsafe)."""
    taken: set[str] = set()
    for item in items:
        filename = Shown(deidentify).filename(item.filename)
        stem, suffix = os.path.splitext(os.path.basename(filename.replace("\\", "/")))
        name = f"{stem}{item.extension}" if stem and suffix.lower() == item.extension else \
            f"{stem or item.sha256[:12]}{item.extension}"
        path = f"{folder_of(item)}/{name}".lstrip("/")
        if path.lower() in taken or stem.startswith("."):
            path = f"{folder_of(item)}/{stem.lstrip('.')}-{item.sha256[:12]}{item.extension}".lstrip("/")
        taken.add(path.lower())
        yield item, path


def _record(item: Item, image: str, deidentify: bool = False) -> dict:
    shown = Shown(deidentify)
    return {"image": image, "label": item.label or "", "caption": shown.text(item.caption),
            "filename": shown.filename(item.filename), "ocr_text": shown.text(item.ocr_text),
            "ocr_engine": item.ocr_engine or "", "status": item.status, "split": item.split, "sha256": item.sha256}


_FORMAT_OF = {".png": "PNG", ".jpg": "JPEG", ".tif": "TIFF", ".bmp": "BMP", ".webp": "WEBP"}


def masked_image(store: Store, item: Item, boxes: list, image: Image.Image | None = None) -> bytes:
    """The item's image with these boxes blacked out, in its own format."""
    image = black_out(image or load_image(store.image_path(item)), boxes)
    buffer = io.BytesIO()
    image.save(buffer, _FORMAT_OF[item.extension], **({"quality": 95} if item.extension in (".jpg", ".webp") else {}))
    return buffer.getvalue()


def _phi_tokens(*texts: str | None) -> set[str]:
    """The words (lower case, 2+ characters) inside the PHI of these texts."""
    return {token.lower() for text in texts if text for span in deid.find_phi(text)
            for token in re.findall(r"\w{2,}", text[span.start:span.end])}


class _Masking:
    """The images of one export: each page's PHI words blacked out (see the module's notes)."""

    def __init__(self, store: Store, on: bool):
        self.store, self.on, self.masked, self.read = store, on, 0, 0

    def image(self, item: Item, record: dict) -> bytes | None:
        """The bytes to export instead of the stored file, or None to export the file as it is.
        `record`: the item's exported (redacted) fields: text that changed held PHI."""
        if not self.on:
            return None
        # Only EasyOCR readings keep word boxes (as fusion.services.review.stored_ocr reads them): no query for the rest.
        words = self.store.ocr_words(item) if (item.ocr_engine or "").startswith("easyocr") else []
        image = None
        if words:
            if record["ocr_text"] == (item.ocr_text or ""):     # text read from this page, and none of it PHI
                return None
            boxes = phi_boxes(item.ocr_text, words)
        else:
            image, boxes = self._read_now(item)
        if not boxes:
            return None
        self.masked += 1
        return masked_image(self.store, item, boxes, image)

    def _read_now(self, item: Item) -> tuple[Image.Image, list]:
        """Read a page without stored word boxes: the boxes of the PHI in what OCR reads, and of
        the words that the stored text's and caption's PHI hold ("Wren", "1220922")."""
        from fusion.imaging.ocr import read_text   # the OCR models load only when a page needs reading

        settings = self.store.settings
        self.read += 1
        image = load_image(self.store.image_path(item))
        reading = read_text(image, max_side=settings.ocr_max_side, cache_dir=settings.ocr_cache_dir)
        secrets = _phi_tokens(item.ocr_text, item.caption)
        boxes = set(phi_boxes(reading.text, reading.words))
        boxes |= {tuple(w.box) for w in reading.words if secrets & {t.lower() for t in re.findall(r"\w{2,}", w.text)}}
        return image, sorted(boxes)

    def summary(self) -> dict:
        return {"deidentified": self.on, **({"images_masked": self.masked, "images_read_at_export": self.read}
                                           if self.on else {})}


def _copy_images(store: Store, items: list[Item], out: Path, folder_of: Callable[[Item], str],
                 progress: Progress | None, masking: _Masking) -> list[dict]:
    records = []
    for n, (item, relative) in enumerate(_unique_paths(items, folder_of, masking.on), 1):
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        record = _record(item, relative, masking.on)
        data = masking.image(item, record)
        if data is None:
            shutil.copyfile(store.image_path(item), out / relative)
        else:
            (out / relative).write_bytes(data)
            record["sha256"] = hashlib.sha256(data).hexdigest()
        records.append(record)
        _report(progress, n, len(items))
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


def _hf_records(settings, project_name: str, deidentify: bool = False, masked: str = "") -> Iterator[dict]:
    """Module-level with plain arguments: `datasets` pickles the generator to fingerprint it
    (and would split a list argument into shards). `masked`: a folder of de-identified images,
    one file per item id, made before (so OCR runs once, and here the counts are known)."""
    store = Store(settings)
    labels = store.project(project_name).label_names
    for item in store.iter_items(project_name):
        record = _record(item, "", deidentify)
        path = Path(masked, str(item.id)) if masked else None
        if path and path.exists():
            data = path.read_bytes()
            record["sha256"] = hashlib.sha256(data).hexdigest()
        else:      # the original bytes, not a re-encoding: the same SHA-256 comes back on import
            data = store.image_path(item).read_bytes()
        record["image"] = {"bytes": data, "path": None}
        record["label"] = labels.index(item.label) if item.label else -1
        yield record


def _write_hf(store: Store, project_name: str, items: list[Item], out: Path, labels: list[str],
              masking: _Masking, progress: Progress | None) -> None:
    import datasets

    features = datasets.Features({
        "image": datasets.Image(), "label": datasets.ClassLabel(names=labels),
        **{c: datasets.Value("string") for c in COLUMNS if c not in ("image", "label")}})
    with tempfile.TemporaryDirectory(dir=out.parent) as cache:
        masked = Path(cache, "masked")
        masked.mkdir()
        for n, item in enumerate(items if masking.on else (), 1):
            data = masking.image(item, _record(item, "", True))
            if data is not None:
                (masked / str(item.id)).write_bytes(data)
            _report(progress, n, len(items))
        dataset = datasets.Dataset.from_generator(
            _hf_records, features=features, cache_dir=cache,
            gen_kwargs={"settings": store.settings, "project_name": project_name, "deidentify": masking.on,
                        "masked": str(masked) if masking.on else ""})
        dataset.save_to_disk(str(out))


def _report(progress: Progress | None, n: int, total: int) -> None:
    if progress and (n % 10 == 0 or n == total):
        progress("exporting", n, total)


def export_project(store: Store, project_name: str, fmt: str, out: Path,
                   progress: Progress | None = None, deidentify: bool | None = None) -> dict:
    """Write every item of the project to the folder `out` (which must not exist or be empty).
    `deidentify`: redact text and mask images (see the module's notes); None: the workspace's setting."""
    if fmt not in FORMATS:
        raise FusionError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FusionError(f"{out} already exists and is not an empty folder; choose a new one")
    project = store.project(project_name)
    masking = _Masking(store, store.settings.redact_text if deidentify is None else deidentify)
    items = list(store.iter_items(project_name))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if fmt == "hf":
            shutil.rmtree(partial)
            _write_hf(store, project_name, items, partial, project.label_names, masking, progress)
        elif fmt == "imagefolder":
            records = _copy_images(store, items, partial, lambda item: item.label or "", progress, masking)
            _write_jsonl(partial / "metadata.jsonl", records, image_key="file_name")
        else:
            records = _copy_images(store, items, partial, lambda item: "images", progress, masking)
            (_write_csv if fmt == "csv" else _write_jsonl)(partial / f"items.{fmt}", records)
        if out.exists():
            out.rmdir()
        os.replace(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return {"project": project_name, "format": fmt, "items": len(items), "path": str(out), **masking.summary()}


def export_archive(store: Store, project_name: str, fmt: str, folder: Path, deidentify: bool | None = None,
                   progress: Progress | None = None) -> tuple[Path, dict]:
    """The export as one zip file in `folder`, for a download: (its path, export_project's summary)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as tmp:   # on the zip's own disk
        summary = export_project(store, project_name, fmt, Path(tmp) / "export", progress=progress, deidentify=deidentify)
        suffix = "-deidentified" if summary["deidentified"] else ""
        archive = shutil.make_archive(str(Path(tmp) / f"{project_name}-{fmt}{suffix}"), "zip", Path(tmp) / "export")
        return Path(shutil.move(archive, folder / Path(archive).name)), summary
