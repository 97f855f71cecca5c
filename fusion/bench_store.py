"""`python -m fusion bench store --json`: the labeling store at scale, in a throwaway workspace.

- 100,000 items (rows written in bulk, with realistic captions/OCR text and a mix of statuses;
  their image files are not written, since listing and saving never read them);
- listing one filtered, sorted page of 50 (several filters, first and deep pages);
- saving one correction (set_label with optimistic locking + its history row, committed with
  synchronous=FULL, i.e. durable on disk);
- importing real image files without OCR, end to end (read, decode, hash, stage, commit, promote).
"""
from __future__ import annotations

import io
import random
import struct
import tempfile
import time
import zlib
from pathlib import Path

from sqlalchemy import func, select

from .bench import timed
from .schema import STATUSES, HistoryRow, ItemRow, ProjectRow
from .settings import Settings, load_settings
from .store import ItemFilter, Store, split_of, utcnow

LABELS = {f"class-{i}": "" for i in range(8)}
WORDS = "patient chest ecg rhythm sinus lab glucose report form chart normal review follow up note".split()


def fill(store: Store, project: str, n: int, seed: int = 0) -> None:
    """n item rows (+ one history row each), as if imported and partly predicted and reviewed."""
    rng = random.Random(seed)
    with store.db.write() as session:
        project_id = session.scalar(select(ProjectRow.id).where(ProjectRow.name == project))
    labels = store.project(project).label_names
    for start in range(0, n, 10_000):
        rows = []
        for i in range(start, min(n, start + 10_000)):
            sha = f"{rng.getrandbits(256):064x}"
            status = rng.choices(STATUSES, weights=[30, 40, 15, 10, 5])[0]
            predicted = status != "unlabeled"
            label = rng.choice(labels) if status in ("accepted", "corrected") else None
            now = utcnow()
            rows.append(dict(
                project_id=project_id, sha256=sha, extension=".png", filename=f"scan-{i:06d}.png", size=120_000,
                width=1240, height=1754, split=split_of(sha), added_at=now, added_by="bench",
                ocr_text=" ".join(rng.choices(WORDS, k=40)), caption=" ".join(rng.choices(WORDS, k=6)),
                pred_label=rng.choice(labels) if predicted else None,
                pred_confidence=rng.random() if predicted else None, pred_model="v1" if predicted else None,
                label=label, status=status, version=1, updated_at=now, updated_by="bench"))
        with store.db.write() as session:
            connection = session.connection()   # Core executemany: the ORM's per-row work costs minutes
            first = (connection.scalar(select(func.max(ItemRow.id))) or 0) + 1
            connection.execute(ItemRow.__table__.insert(), rows)
            ids = range(first, first + len(rows))  # one writer, one transaction: consecutive ids
            connection.execute(HistoryRow.__table__.insert(), [
                dict(item_id=item_id, project_id=project_id, at=row["added_at"], user="bench", action="add",
                     item_version=1, new_label=row["label"], new_status=row["status"])
                for item_id, row in zip(ids, rows)])


def _unique_copy(data: bytes, fmt: str, i: int) -> bytes:
    """The same page with a comment that makes its bytes (and SHA-256) unique: no re-encoding."""
    note = f"copy {i}".encode()
    if fmt == "PNG":  # a tEXt chunk just before IEND
        body = b"tEXt" + b"Comment\x00" + note
        chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
        return data[:-12] + chunk + data[-12:]
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(note) + 2) + note + data[2:]  # JPEG COM segment


def _image_folder(root: Path, n: int, fmt: str) -> Path:
    """n distinct demo document pages (872x1040, as scanned forms, tables and charts come)."""
    from .demo_data import render_item

    pages = []
    for k in range(8):
        out = io.BytesIO()
        render_item(k, seed=11)[0].save(out, format=fmt, quality=90)
        pages.append(out.getvalue())
    for i in range(n):
        label = list(LABELS)[i % len(LABELS)]
        (root / label).mkdir(parents=True, exist_ok=True)
        (root / label / f"{i:05d}.{fmt.lower()}").write_bytes(_unique_copy(pages[i % 8], fmt, i))
    return root


def bench_import(settings: Settings, n: int, fmt: str) -> dict:
    from .importing import import_path

    with tempfile.TemporaryDirectory(dir=settings.home) as tmp:
        folder = _image_folder(Path(tmp) / "incoming", n, fmt)
        mb = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6
        store = Store(load_settings(home=Path(tmp) / "workspace"))
        store.create_project("import", LABELS, user="bench")
        t = time.perf_counter()
        report = import_path(store, "import", folder, user="bench")
        seconds = time.perf_counter() - t
        store.db.engine.dispose()
    assert report.added == n, report.to_dict()
    return {"images": n, "format": f"872x1040 {fmt} document pages", "mb": round(mb, 1),
            "seconds": round(seconds, 2), "images_per_s": round(n / seconds, 1)}


def bench_store(settings: Settings, items: int = 100_000) -> dict:
    settings.home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.home) as tmp:
        store = Store(load_settings(home=Path(tmp)))
        store.create_project("bench", LABELS, user="bench")
        t = time.perf_counter()
        fill(store, "bench", items)
        store.optimize()  # as every import ends
        fill_seconds = time.perf_counter() - t

        queries = {
            "predicted_by_confidence_first_page": (ItemFilter(status=("predicted",), sort="confidence",
                                                              descending=False), 0),
            "predicted_by_confidence_page_200": (ItemFilter(status=("predicted",), sort="confidence",
                                                            descending=False), 50 * 200),
            "label_by_updated": (ItemFilter(label="class-3"), 0),
            "test_split_by_filename": (ItemFilter(split="test", sort="filename", descending=False), 0),
            "search_one_file_name": (ItemFilter(search="scan-004217"), 0),
            # worst case: the bench's 15-word vocabulary puts both words in ~88% of all items
            "search_common_words_by_updated": (ItemFilter(search="glucose report"), 0),
            "everything_by_updated_page_1000": (ItemFilter(), 50 * 1000),
        }
        listing = {name: timed(lambda w=where, o=offset: store.list_items("bench", w, offset=o, limit=50), 20)
                   for name, (where, offset) in queries.items()}

        rng = random.Random(1)
        shown = [store.item("bench", rng.randint(1, items)) for _ in range(200)]  # what reviewers have open
        labels = list(LABELS)

        def correct() -> None:
            item = shown.pop()
            store.set_label("bench", item.id, rng.choice(labels), "bench", expected_version=item.version)
        save = timed(correct, 200)
        store.db.engine.dispose()

    imports = [bench_import(settings, 1000, "PNG"), bench_import(settings, 1000, "JPEG")]
    worst_list = max(v["median_ms"] for v in listing.values())
    return {
        "items": items, "fill_seconds": round(fill_seconds, 1),
        "list_page_of_50": listing, "list_page_worst_median_ms": worst_list,
        "save_correction": save,
        "import_without_ocr": imports,
        "targets": {"list_page_worst_median_ms": 200, "save_correction_median_ms": 20, "import_images_per_s": 200},
    }
