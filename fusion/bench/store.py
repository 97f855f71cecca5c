"""`python -m fusion bench store --json`: the labeling store at scale, in a throwaway workspace.

- 100,000 items (rows written in bulk, with realistic captions/OCR text and a mix of statuses;
  their image files are not written, since listing and saving never read them);
- listing one filtered, sorted page of 50 (several filters, first and deep pages);
- saving one correction (set_label with optimistic locking + its history row, committed with
  synchronous=FULL, i.e. durable on disk);
- importing real image files without OCR, end to end (read, decode, hash, stage, commit, promote);
- 8 reviewers at once: writer processes deciding (caption and label, through review.decide as
  the Review page does), 5% of them on a screen opened before the item last changed, checked
  against the history afterwards: nothing lost, no unexpected error.
The listing, saving and writers run on SQLite and on PostgreSQL (a throwaway cluster:
fusion.store.throwaway_postgres, where Debian's server is installed); the import on SQLite.
"""
from __future__ import annotations

import io
import random
import statistics
import struct
import tempfile
import time
import zlib
from typing import Callable
from pathlib import Path

from sqlalchemy import func, select

from fusion.bench.timing import timed
from fusion.core.errors import FusionError
from fusion.store.schema import STATUSES, HistoryRow, ItemRow, ProjectRow
from fusion.core.settings import Settings, load_settings
from fusion.store.labeling import ItemFilter, StaleEdit, Store, split_of, utcnow

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
    from fusion.demo.documents import render_item

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
    from fusion.services.importing import import_path

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


def _listing_and_saving(home: Path, url: str, items: int) -> dict:
    store = Store(load_settings(home=home, database_url=url))
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
    shown = [store.item("bench", i) for i in rng.sample(range(1, items + 1), 200)]  # what reviewers have open, 200 different items
    labels = list(LABELS)

    def correct() -> None:
        item = shown.pop()
        store.set_label("bench", item.id, rng.choice(labels), "bench", expected_version=item.version)
    save = timed(correct, 200)
    store.db.engine.dispose()
    return {"items": items, "fill_seconds": round(fill_seconds, 1), "list_page_of_50": listing,
            "list_page_worst_median_ms": max(v["median_ms"] for v in listing.values()), "save_correction": save}


def _reviewer(home: Path, url: str, writer: int, decisions: int, items: int, conflicts: float, start, results) -> None:
    """One writer process: `decisions` decisions on random items, as the Review page makes them."""
    from fusion.ml.pipeline import Prediction
    from fusion.services.review import decide

    store = Store(load_settings(home=home, database_url=url))
    rng, labels, out = random.Random(writer), list(LABELS), []
    start.wait()
    for i in range(decisions):
        item = store.item("writers", rng.randint(1, items))
        stale = rng.random() < conflicts            # a screen opened before the item last changed
        shown = Prediction(item.pred_label or labels[0], 0.5, {}, {}, {}, "", "", "v1", None, {})
        t = time.perf_counter()
        try:
            decide(store, "writers", item, item.version - 1 if stale else item.version, rng.choice(labels),
                   f"w{writer}", shown, caption=f"checked by w{writer}, decision {i}")
            outcome = "saved"
        except StaleEdit:
            outcome = "refused as meant" if stale else "refused: another writer got there first"
        except Exception as e:                       # what the bench is about: there should be none
            outcome = f"error: {type(e).__name__}: {e}"[:200]
        out.append(((time.perf_counter() - t) * 1000, outcome))
    results.put((writer, out))


def bench_writers(home: Path, url: str, writers: int = 8, decisions: int = 200, items: int = 2000,
                  conflicts: float = 0.05) -> dict:
    """`writers` processes deciding at once; decisions/s, latency, refusals, and what the history
    holds afterwards (a saved decision without its history row would be lost)."""
    import multiprocessing

    store = Store(load_settings(home=home, database_url=url))
    store.create_project("writers", LABELS, user="bench")
    fill(store, "writers", items)
    store.db.engine.dispose()                   # no connection crosses the fork
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(writers + 1), context.Queue()
    processes = [context.Process(target=_reviewer, args=(home, url, w, decisions, items, conflicts, start, results))
                 for w in range(writers)]
    for p in processes:
        p.start()
    start.wait()
    t = time.perf_counter()
    done = dict(results.get(timeout=600) for _ in processes)
    wall = time.perf_counter() - t
    for p in processes:
        p.join(60)
    with store.db.read() as session:
        in_history = dict(session.execute(select(HistoryRow.user, func.count()).where(
            HistoryRow.action.in_(("accept", "correct", "label"))).group_by(HistoryRow.user)).all())
    store.db.engine.dispose()
    times = sorted(ms for out in done.values() for ms, _ in out)
    outcomes = [o for out in done.values() for _, o in out]
    saved = {w: sum(o == "saved" for _, o in out) for w, out in done.items()}
    return {
        "writers": writers, "decisions_each": decisions, "items": items, "deliberate_conflicts": conflicts,
        "decisions_per_s": round(len(times) / wall, 1),
        "latency_ms": {"p50": round(statistics.median(times), 1), "p99": round(times[int(0.99 * (len(times) - 1))], 1),
                       "max": round(times[-1], 1)},
        "saved": sum(saved.values()),
        "refused_as_meant": outcomes.count("refused as meant"),
        "refused_another_got_there_first": outcomes.count("refused: another writer got there first"),
        "lost": sum(max(0, n - in_history.get(f"w{w}", 0)) for w, n in saved.items()),
        "unexpected_errors": sorted({o for o in outcomes if o.startswith("error")}),
    }


def _on(home: Path, url: Callable[[], str], items: int) -> dict:
    """Listing, saving and 8 writers on one database (`url()`: a fresh one each time)."""
    with tempfile.TemporaryDirectory(dir=home) as tmp:
        figures = _listing_and_saving(Path(tmp) / "list", url(), items)
        figures["writers"] = bench_writers(Path(tmp) / "write", url())
    return figures


def bench_store(settings: Settings, items: int = 100_000) -> dict:
    from fusion.store.throwaway_postgres import PostgresCluster

    settings.home.mkdir(parents=True, exist_ok=True)
    result = {"items": items, "sqlite": _on(settings.home, lambda: "", items)}
    try:
        cluster = PostgresCluster().start()
    except FusionError as e:     # no PostgreSQL server installed here
        result["postgresql"] = {"skipped": str(e)}
    else:
        try:
            result["postgresql"] = _on(settings.home, cluster.new_database, items)
        finally:
            cluster.stop()
    result["import_without_ocr"] = [bench_import(settings, 1000, "PNG"), bench_import(settings, 1000, "JPEG")]
    result["targets"] = {"list_page_worst_median_ms": 200, "save_correction_median_ms": 20, "import_images_per_s": 200,
                         "writers_p99_ms": 100}
    return result
