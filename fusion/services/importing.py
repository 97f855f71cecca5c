"""Importing images into a project: an ImageFolder, a flat folder, a CSV, a JSONL file or a saved
Hugging Face dataset.

A file that can't be read as a whole (not UTF-8, no header, binary, a line over the limit) is
refused before anything is written. Inside a readable file, each bad row (missing file, unknown
label, undecodable image) is reported with its line and reason and the good rows are kept. Rows
are committed in batches, each all-or-nothing; running the same import again adds only what is
missing, so an interrupted import is finished by running it again.
"""
from __future__ import annotations

import csv
import io
import json
import shutil
import stat
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fusion.core.errors import BadImage, FusionError
from fusion.imaging.images import ACCEPTED_TEXT, ImageFile, check_image_file, load_image
from fusion.store.labeling import NewItem, Store

MAX_LINE_BYTES = 1_000_000      # a caption or OCR text longer than this is not a caption
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".dcm", ".dicom"}
METADATA_FILES = ("metadata.jsonl", "metadata.csv")  # Hugging Face imagefolder convention
TEXT_FIELDS = ("caption", "ocr_text", "ocr_engine", "filename")
Progress = Callable[[str, int, int], None]


@dataclass
class Row:
    """One thing to import, before its image is read."""
    where: str                  # "labels.csv line 7", "cat/x.png": for messages and history
    image: Path | bytes
    filename: str
    label: str | None = None
    fields: dict = field(default_factory=dict)   # caption, ocr_text, ocr_engine


@dataclass
class ImportReport:
    total: int = 0
    added: int = 0
    already: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)   # (where, reason)

    def to_dict(self) -> dict:
        return {"total": self.total, "added": self.added, "already_in_project": self.already,
                "problems": [{"where": w, "reason": r} for w, r in self.problems]}


# ---- reading sources into rows ---------------------------------------------------------------

def _read_text_file(path: Path) -> str:
    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")  # Excel writes a BOM even on an empty sheet
    if not data.strip():
        raise FusionError(f"{path.name} is empty; expected a header line such as image,label,caption")
    if b"\x00" in data:
        raise FusionError(f"{path.name} is binary, not a text file; nothing was imported")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise FusionError(f"{path.name} is not UTF-8 (byte 0x{data[e.start]:02x} on line {line}); save it as "
                          "UTF-8 and import again; nothing was imported") from None
    for number, line in enumerate(text.splitlines(), 1):
        if len(line) > MAX_LINE_BYTES:
            raise FusionError(f"{path.name} line {number} is {len(line):,} characters long; the limit is "
                              f"{MAX_LINE_BYTES:,}; nothing was imported")
    return text


def _text_fields(record: dict) -> dict:
    """Caption as given (even ""); an empty OCR text means OCR was never run."""
    return {k: v for k in TEXT_FIELDS if isinstance(v := record.get(k), str) and (v or k == "caption")}


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path`, links followed, lies in `folder`: an import reads only the files it brought,
    never ../../etc/passwd, an absolute path or a link to elsewhere (another project's images)."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError, ValueError):   # a link loop, a NUL byte
        return False


def _contained(image: str, base: Path) -> Path:
    path = base / image   # an absolute `image` replaces base here, and is refused next
    if not _inside(path, base):
        raise ValueError(f"image path {image!r} is outside the folder it is listed in; paths are "
                         "relative to that folder and stay inside it")
    return path


def _row_from_record(record: dict, where: str, base: Path) -> Row:
    image = str(record.get("image") or record.get("file_name") or "").strip()
    if not image:
        raise ValueError("no image path")
    label = (record.get("label") or "").strip() or None
    fields = _text_fields(record)
    path = _contained(image, base)
    return Row(where, path, fields.pop("filename", None) or Path(image).name, label, fields)


def csv_rows(path: Path, problems: list) -> list[Row]:
    text = _read_text_file(path)
    csv.field_size_limit(MAX_LINE_BYTES)
    # strict: an unclosed quote is an error, not a caption that swallows the rest of the file
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows = []
    try:
        first = next(reader)
        header = [h.strip().lower() for h in first]
        if "image" not in header and "file_name" not in header:
            found = ", ".join(repr(h) for h in first[:6])
            raise FusionError(f"{path.name}: the first line must be a header with the columns "
                              f"image,label[,caption]; found {found}")
        while True:
            # line_num counts physical lines, so a caption with line breaks doesn't shift later rows;
            # a row is named by its first line.
            where = f"{path.name} line {reader.line_num + 1}"
            cells = next(reader, None)
            if cells is None:
                break
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                problems.append((where, f"expected {len(header)} fields ({', '.join(header)}), got {len(cells)}"))
                continue
            try:
                rows.append(_row_from_record(dict(zip(header, cells)), where, path.parent))
            except ValueError as e:
                problems.append((where, str(e)))
    except csv.Error as e:
        raise FusionError(f"{path.name} is not a valid CSV (line {reader.line_num}: {e}); "
                          "nothing was imported") from None
    return rows


def jsonl_rows(path: Path, problems: list, base: Path | None = None) -> list[Row]:
    rows = []
    for number, line in enumerate(_read_text_file(path).splitlines(), 1):
        where = f"{path.name} line {number}"
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            rows.append(_row_from_record(record, where, base or path.parent))
        except ValueError as e:
            problems.append((where, f"bad JSON line: {e}"))
    return rows


def folder_rows(root: Path, problems: list) -> list[Row]:
    """ImageFolder (label/file.png) and/or flat unlabeled files; metadata.jsonl/csv add captions."""
    metadata = {}
    for name in METADATA_FILES:
        if (root / name).is_file():
            read = jsonl_rows if name.endswith(".jsonl") else csv_rows
            metadata = {r.image: r for r in read(root / name, problems)}
            break
    rows = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        if relative.name in METADATA_FILES or any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            problems.append((str(relative), f"skipped: not an image file name ({ACCEPTED_TEXT})"))
            continue
        if len(relative.parts) > 2:
            problems.append((str(relative), "skipped: too deep; use label/file or a flat folder"))
            continue
        if not _inside(path, root):
            problems.append((str(relative), "skipped: a link to a file outside the folder"))
            continue
        meta = metadata.get(path)
        label = relative.parts[0] if len(relative.parts) == 2 else None
        rows.append(Row(str(relative), path, meta.filename if meta else path.name, label,
                        meta.fields if meta else {}))
    return rows


def hf_rows(root: Path, problems: list) -> list[Row]:
    """A dataset written by datasets.Dataset.save_to_disk (as `export --format hf` writes)."""
    import datasets

    try:
        dataset = datasets.load_from_disk(str(root))
    except Exception as e:
        raise FusionError(f"{root} is not a readable Hugging Face dataset ({e})") from None
    if isinstance(dataset, datasets.DatasetDict):
        dataset = datasets.concatenate_datasets(list(dataset.values()))
    if "image" not in dataset.column_names:
        raise FusionError(f"{root}: the dataset has no 'image' column (columns: {dataset.column_names})")
    names = getattr(dataset.features.get("label"), "names", None)
    dataset = dataset.cast_column("image", datasets.Image(decode=False))
    rows = []
    for index, record in enumerate(dataset):
        label = record.get("label")
        label = (names[label] if label is not None and label >= 0 else None) if names else (label or None)
        image, fields, where = record["image"], _text_fields(record), f"row {index}"
        try:   # the bytes, or a file inside the dataset's folder (never a path elsewhere)
            data = image.get("bytes") or (_contained(image["path"], root) if image.get("path") else b"")
        except ValueError as e:
            problems.append((where, str(e)))
            continue
        rows.append(Row(where, data, fields.pop("filename", None) or f"row-{index}.png", label, fields))
    return rows


def read_source(path: Path, problems: list) -> list[Row]:
    path = Path(path)
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return hf_rows(path, problems)
        return folder_rows(path, problems)
    if not path.is_file():
        raise FusionError(f"nothing to import at {path}: expected a folder, a .csv, a .jsonl or a saved dataset")
    if path.suffix.lower() == ".csv":
        return csv_rows(path, problems)
    if path.suffix.lower() == ".jsonl":
        return jsonl_rows(path, problems)
    raise FusionError(f"can't import {path.name}: use a folder (label/file.png), a .csv (image,label[,caption]), "
                      "a .jsonl or a Hugging Face dataset folder")


# ---- checking rows and writing them -------------------------------------------------------------

def _check(row: Row, settings, labels: dict) -> tuple[Row, ImageFile | None, str | None]:
    if row.label is not None and row.label not in labels:
        return row, None, f"unknown label {row.label!r}; the project has {', '.join(labels)}"
    if isinstance(row.image, Path) and not row.image.is_file():   # named as listed, not by the server's path
        return row, None, f"no such image file: {row.filename}"
    try:
        return row, check_image_file(row.image, settings), None
    except BadImage as e:
        return row, None, str(e)


def import_rows(store: Store, project_name: str, rows: list[Row], user: str, report: ImportReport,
                ocr: Callable | None = None, progress: Progress | None = None, batch: int = 200) -> ImportReport:
    labels = store.project(project_name).labels
    report.total += len(rows)
    seen: dict[str, str] = {}
    batches = [rows[start:start + batch] for start in range(0, len(rows), batch)]
    # Two threads decode (Pillow releases the GIL), one batch ahead of the one being written.
    with ThreadPoolExecutor(2) as pool:
        def submit(k: int) -> list:
            return [pool.submit(_check, r, store.settings, labels) for r in batches[k]] if k < len(batches) else []
        ahead = submit(0)
        for k in range(len(batches)):
            current, ahead = ahead, submit(k + 1)
            new_items = []
            for row, file, problem in (future.result() for future in current):
                if problem is None and file.sha256 in seen:
                    problem = f"the same image as {seen[file.sha256]}"
                if problem is not None:
                    report.problems.append((row.where, problem))
                    continue
                seen[file.sha256] = row.where
                new_items.append(_new_item(row, file, ocr))
            for _, outcome in store.add_items(project_name, new_items, user):
                report.added += outcome == "added"
                report.already += outcome != "added"
            if progress:
                progress("importing", min((k + 1) * batch, len(rows)), len(rows))
    store.optimize()  # the planner's statistics, for listing what just arrived
    return report


def _new_item(row: Row, file: ImageFile, ocr: Callable | None) -> NewItem:
    fields = dict(row.fields)
    if ocr is not None and "ocr_text" not in fields:
        from fusion.imaging.ocr import ENGINE   # here: an import without OCR never loads torch

        result = ocr(load_image(file.data))
        fields |= {"ocr_text": result.text, "ocr_engine": ENGINE, "ocr_words": [w.to_dict() for w in result.words],
                   "ocr_ms": result.ms, "ocr_angle": result.angle}
    return NewItem(file, row.filename, row.label, fields.get("caption", ""), fields.get("ocr_text"),
                   fields.get("ocr_words"), fields.get("ocr_engine"), ocr_ms=fields.get("ocr_ms"),
                   ocr_angle=fields.get("ocr_angle", 0), source=row.where[:255])


def import_path(store: Store, project_name: str, path: Path, user: str, ocr: Callable | None = None,
                progress: Progress | None = None) -> ImportReport:
    """Import everything readable at `path`; returns what was added and what was not, and why."""
    report = ImportReport()
    store.project(project_name)  # an unknown project fails before the files are read
    rows = read_source(Path(path), report.problems)
    return import_rows(store, project_name, rows, user, report, ocr, progress)



MAX_UNPACKED_BYTES = 20 * 2**30   # a zip bomb stops here


def unpack_upload(filename: str, data: bytes, dest: Path) -> Path:
    """Save an uploaded .zip (a folder of images, or a CSV with its images) or .csv under `dest`;
    returns the path to import: the zip's one top-level CSV if it has one, else its folder.
    A refused zip leaves nothing behind (dest is removed if this call made it)."""
    if not filename.lower().endswith((".csv", ".zip")):
        raise FusionError(f"{filename}: upload a .zip (a folder of images, or a CSV with its images) or a .csv")
    made = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    if filename.lower().endswith(".csv"):
        (dest / Path(filename).name).write_bytes(data)   # .name: "../../x.csv" lands in dest as x.csv
        return dest / Path(filename).name
    try:
        _unzip(filename, data, dest)
    except FusionError:
        if made:
            shutil.rmtree(dest, ignore_errors=True)
        raise
    entries = [p for p in dest.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir():   # zip of one folder: import the folder
        dest = entries[0]
    csvs = list(dest.glob("*.csv"))
    return csvs[0] if len(csvs) == 1 else dest


def _unzip(filename: str, data: bytes, dest: Path) -> None:
    import zipfile

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist() if not m.is_dir()]
        if sum(m.file_size for m in members) > MAX_UNPACKED_BYTES:
            raise FusionError(f"{filename} unpacks to more than {MAX_UNPACKED_BYTES // 2**30} GB")
        root = dest.resolve()
        targets = []
        for member in members:   # every name checked before anything is written
            target = (dest / member.filename).resolve()
            if root not in target.parents:   # "../x" or an absolute name: never write outside dest
                raise FusionError(f"{filename}: {member.filename!r} points outside the archive")
            if stat.S_ISLNK(member.external_attr >> 16):
                raise FusionError(f"{filename}: {member.filename!r} is a symbolic link; zip the files themselves")
            targets.append((member, target))
        for member, target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)   # streamed: one huge member never sits in memory
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:   # OSError: e.g. an invalid name
        raise FusionError(f"{filename} is not a readable zip ({e})") from None
    except (NotImplementedError, RuntimeError) as e:   # an unknown compression method; a password
        raise FusionError(f"{filename} can't be unpacked here ({e}); use a plain (deflate) zip") from None
