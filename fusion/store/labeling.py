"""The labeling store: projects, items and every human decision about them, with who/when/what.

Rules it keeps:
- an image is stored once per project (content-addressed by SHA-256) and its file is on disk
  exactly when its row is in the database (see fusion.store.blobs);
- every change appends a history row in the same transaction; history is never rewritten;
- a human edit names the item version it was made against, and is refused if the item changed
  since (optimistic locking): nobody's decision is overwritten silently.
"""
from __future__ import annotations

import math
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

from sqlalchemy import bindparam, case, func, insert, literal_column, or_, select, table, text, update
from sqlalchemy.orm import Session

from fusion.store.blobs import BlobStore
from fusion.store.database import database_url, open_database, shown_url
from fusion.core.errors import FusionError, UnknownProject
from fusion.imaging.images import ImageFile
from fusion.core.project import Project, check_labels, check_project_name
from fusion.store.schema import SPLITS, STATUSES, HistoryRow, ItemRow, OcrWordsRow, ProjectRow
from fusion.core.settings import Settings

Item = ItemRow  # what callers get: a detached snapshot of one item's current state
HUMAN_STATUSES = ("accepted", "corrected")
SEARCH_COUNT_CAP = 1000  # counting every match of a common word in 100k items costs more than the page
SORTS = {"updated": ItemRow.updated_at, "added": ItemRow.added_at, "confidence": ItemRow.pred_confidence,
         "filename": ItemRow.filename, "id": ItemRow.id, "entropy": ItemRow.pred_entropy,
         "margin": ItemRow.pred_margin, "disagreement": ItemRow.pred_disagreement, "ood": ItemRow.pred_ood,
         "label_quality": ItemRow.check_quality}
ADVISORY_LOCK_ADDS = 0x464C01   # PostgreSQL advisory lock (this, project id): adds to a project take turns


class StaleEdit(FusionError):
    """The item changed after the editor loaded it; their edit was not saved."""


def _stale(row: ItemRow) -> StaleEdit:
    return StaleEdit(f"item {row.id} was changed by {row.updated_by} at {row.updated_at:%Y-%m-%d %H:%M:%S} UTC "
                     f"after you opened it (now: {row.label or 'no label'}, {row.status}); your edit was not "
                     "saved. Reload the item and decide again.")


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def stored_text(text: str | None) -> str | None:
    """User text as stored: as typed (HTML, control characters, any length) except NUL bytes,
    which PostgreSQL refuses and which would make an exported CSV unreadable as text."""
    return text.replace("\x00", "") if isinstance(text, str) else text


def split_of(sha256: str) -> str:
    """A stable ~70/15/15 split from the content hash: the same image lands in the same split in
    every project and every import, so test items never leak into training."""
    bucket = int(sha256[:8], 16) % 100
    return SPLITS[0] if bucket < 70 else SPLITS[1] if bucket < 85 else SPLITS[2]


@dataclass
class NewItem:
    file: ImageFile
    filename: str
    label: str | None = None
    caption: str = ""
    ocr_text: str | None = None
    ocr_words: list | None = None
    ocr_engine: str | None = None
    ocr_ms: float | None = None   # how long EasyOCR took to read it
    ocr_angle: int = 0
    source: str | None = None   # where it came from, for the history: "labels.csv line 7"


@dataclass
class Page:
    items: list[Item]
    total: int            # items matching the filter, on all pages (searches: counted up to SEARCH_COUNT_CAP)
    total_is_capped: bool = False   # True: `total` or more match; show "1,000+"


@dataclass
class Shown:
    """The model suggestion a reviewer saw when deciding."""
    label: str | None
    confidence: float | None
    model_version: str | None


@dataclass
class ItemFilter:
    status: tuple[str, ...] = ()
    label: str | None = None
    split: str | None = None
    search: str = ""                 # in file name, caption and OCR text
    user: str | None = None          # who changed it last
    confidence: tuple[float, float] | None = None   # the latest prediction's, inclusive
    in_distribution: bool | None = None  # the latest prediction's OOD score at most 1 (True) or above (False)
    likely_mislabeled: bool = False  # only items whose label the latest check flags (fusion.ml.label_issues)
    ids: tuple[int, ...] | None = None   # only these items (a selection on the Dataset page's map)
    sort: str = "updated"
    descending: bool = True


class Store:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.db = open_database(database_url(settings))
        self.blobs = BlobStore(settings.images_dir)
        self.blobs.recover(self._has_blob_row)
        self._adopt_json_projects()
        self.optimize()

    # ---- projects -------------------------------------------------------------------------

    def _project(self, row: ProjectRow) -> Project:
        labels = {entry["name"]: entry.get("description", "") for entry in row.labels}
        return Project(row.name, labels, self.settings.project_dir(row.name), row.active_model)

    def _project_row(self, session: Session, name: str) -> ProjectRow:
        row = session.scalar(select(ProjectRow).where(ProjectRow.name == name))
        if row is None:
            known = ", ".join(self.project_names()) or "none yet"
            raise UnknownProject(f"no project {name!r} in {shown_url(self.db.url)} (projects: {known})")
        return row

    def create_project(self, name: str, labels: dict[str, str], user: str) -> Project:
        check_project_name(name)
        labels = check_labels(labels)
        with self.db.write() as session:
            if session.scalar(select(ProjectRow.id).where(ProjectRow.name == name)) is not None:
                raise FusionError(f"project {name!r} already exists")
            row = ProjectRow(name=name, labels=[{"name": k, "description": v} for k, v in labels.items()],
                             created_at=utcnow(), created_by=user)
            session.add(row)
        self.settings.project_dir(name).mkdir(parents=True, exist_ok=True)
        return self._project(row)

    def set_descriptions(self, name: str, descriptions: dict[str, str]) -> Project:
        """New descriptions for some of the project's labels (the zero-shot prompts read them)."""
        with self.db.write() as session:
            row = self._project_row(session, name)
            unknown = set(descriptions) - {e["name"] for e in row.labels}
            if unknown:
                raise FusionError(f"project {name!r} has no labels {sorted(unknown)}")
            row.labels = [{"name": e["name"], "description": " ".join(descriptions.get(e["name"], e["description"]).split())}
                          for e in row.labels]
        return self.project(name)

    def project_names(self) -> list[str]:
        with self.db.read() as session:
            return list(session.scalars(select(ProjectRow.name).order_by(ProjectRow.name)))

    def project(self, name: str) -> Project:
        with self.db.read() as session:
            return self._project(self._project_row(session, name))

    def project_info(self, name: str) -> dict:
        with self.db.read() as session:
            row = self._project_row(session, name)
            counts = dict(session.execute(select(ItemRow.status, func.count()).where(
                ItemRow.project_id == row.id).group_by(ItemRow.status)).all())
        return {"name": row.name, "labels": [e["name"] for e in row.labels], "created_at": row.created_at,
                "created_by": row.created_by, "active_model": row.active_model,
                "items": sum(counts.values()), "by_status": {s: counts.get(s, 0) for s in STATUSES}}

    def set_active_model(self, name: str, version: str | None) -> Project:
        project = self.project(name)
        if version is not None and not (project.model_dir(version) / "model.safetensors").is_file():
            raise FusionError(f"project {name!r} has no model version {version!r}")
        with self.db.write() as session:
            row = self._project_row(session, name)
            row.active_model = version
        return self._project(row)

    def _adopt_json_projects(self) -> None:
        """Workspaces made before the database kept each project in projects/<name>/project.json."""
        for path in sorted(self.settings.projects_dir.glob("*/project.json")):
            with self.db.write() as session:
                if session.scalar(select(ProjectRow.id).where(ProjectRow.name == path.parent.name)) is None:
                    data = json.loads(path.read_text())
                    session.add(ProjectRow(
                        name=data["name"], created_at=utcnow(), created_by="migrated from project.json",
                        labels=[{"name": k, "description": v} for k, v in data["labels"].items()],
                        active_model=data.get("active_model")))
            path.rename(path.with_suffix(".json.migrated"))

    # ---- items ----------------------------------------------------------------------------

    def image_path(self, item: Item) -> Path:
        return self.blobs.path(item.sha256, item.extension)

    def _has_blob_row(self, sha256: str) -> bool:
        with self.db.read() as session:
            return session.scalar(select(ItemRow.id).where(ItemRow.sha256 == sha256).limit(1)) is not None

    def add_items(self, project_name: str, new_items: list[NewItem], user: str) -> list[tuple[Item, str]]:
        """Add a batch in one transaction. Returns, per new item, (item, "added") or
        (existing item, "already in the project"). All or nothing: on error no row, no file."""
        labels = self.project(project_name).labels
        for new in new_items:
            if new.label is not None and new.label not in labels:
                raise FusionError(f"unknown label {new.label!r} for project {project_name!r}")
        with self.blobs.staging() as staging:
            # Files are written before the write lock is taken: other writers never wait on the disk.
            known = self._existing(project_name, [n.file.sha256 for n in new_items])
            staging.add([(n.file.sha256, n.file.extension, n.file.data) for n in new_items
                         if n.file.sha256 not in known])
            with self.db.write() as session:
                project = self._project_row(session, project_name)
                self._serialize_adds(session, project.id)
                existing = {row.sha256: row for row in session.scalars(select(ItemRow).where(
                    ItemRow.project_id == project.id, ItemRow.sha256.in_([n.file.sha256 for n in new_items])))}
                now, results, rows, fresh = utcnow(), [], [], []
                for new in new_items:
                    if new.file.sha256 in existing:
                        results.append((existing[new.file.sha256], "already in the project"))
                        continue
                    row = existing[new.file.sha256] = self._new_row(project.id, new, user, now)
                    rows.append(row)
                    fresh.append(new)
                    results.append((row, "added"))
                if rows:
                    session.add_all(rows)
                    session.flush()  # assigns ids
                    session.add_all(OcrWordsRow(item_id=row.id, words=new.ocr_words, ms=new.ocr_ms, angle=new.ocr_angle)
                                    for row, new in zip(rows, fresh) if new.ocr_words)
                    session.execute(insert(HistoryRow), [
                        dict(item_id=row.id, project_id=project.id, at=now, user=user, action="add", item_version=1,
                             new_label=row.label, new_status=row.status, new_caption=row.caption or None,
                             source=new.source)
                        for row, new in zip(rows, fresh)])
            staging.promote(row.sha256 for row in rows)
        return results

    @staticmethod
    def _serialize_adds(session: Session, project_id: int) -> None:
        """Adds to one project take turns, so the same file added by several people at once is
        added once and "already in the project" for the rest. SQLite's writers take turns anyway;
        PostgreSQL's would all find the file missing, then all but one fail on the unique index."""
        if session.bind.dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:kind, :project)"),
                            {"kind": ADVISORY_LOCK_ADDS, "project": project_id})

    def _existing(self, project_name: str, shas: list[str]) -> set[str]:
        with self.db.read() as session:
            project = self._project_row(session, project_name)
            return set(session.scalars(select(ItemRow.sha256).where(
                ItemRow.project_id == project.id, ItemRow.sha256.in_(shas))))

    @staticmethod
    def _new_row(project_id: int, new: NewItem, user: str, now: datetime) -> ItemRow:
        f = new.file
        return ItemRow(
            project_id=project_id, sha256=f.sha256, extension=f.extension, filename=stored_text(new.filename)[:255],
            size=len(f.data), width=f.width, height=f.height, split=split_of(f.sha256), added_at=now,
            added_by=user, ocr_text=stored_text(new.ocr_text), ocr_engine=new.ocr_engine,
            caption=stored_text(new.caption), label=new.label, status="accepted" if new.label else "unlabeled",
            version=1, updated_at=now, updated_by=user)

    def item(self, project_name: str, ref: str | int) -> Item:
        """An item by id, by a prefix of its SHA-256 (6+ characters) or by its file name."""
        with self.db.read() as session:
            project = self._project_row(session, project_name)
            query = select(ItemRow).where(ItemRow.project_id == project.id)
            ref = str(ref)
            rows = list(session.scalars(query.where(ItemRow.id == int(ref)))) if ref.isdigit() else []
            if not rows and len(ref) >= 6 and all(c in "0123456789abcdef" for c in ref.lower()):
                rows = list(session.scalars(query.where(ItemRow.sha256.startswith(ref.lower())).limit(2)))
            if not rows:
                rows = list(session.scalars(query.where(ItemRow.filename == ref).limit(2)))
        if not rows:
            raise FusionError(f"no item {ref!r} in project {project_name!r} (use an id, a SHA-256 prefix "
                              "or a file name)")
        if len(rows) > 1:
            raise FusionError(f"{ref!r} matches several items in {project_name!r}; use the item id")
        return rows[0]

    def list_items(self, project_name: str, where: ItemFilter = ItemFilter(), offset: int = 0,
                   limit: int = 50) -> Page:
        if where.sort not in SORTS:
            raise FusionError(f"unknown sort {where.sort!r}; use one of {', '.join(SORTS)}")
        with self.db.read() as session:
            project = self._project_row(session, project_name)
            conditions = [ItemRow.project_id == project.id]
            if where.status:
                conditions.append(ItemRow.status.in_(where.status))
            if where.label is not None:
                conditions.append(ItemRow.label == where.label)
            if where.split is not None:
                conditions.append(ItemRow.split == where.split)
            if where.user is not None:
                conditions.append(ItemRow.updated_by == where.user)
            if where.confidence is not None:
                conditions.append(ItemRow.pred_confidence.between(*where.confidence))
            if where.ids is not None:
                conditions.append(ItemRow.id.in_(where.ids))
            if where.likely_mislabeled:
                conditions.append(ItemRow.check_flagged.is_(True))
            if where.in_distribution is not None:
                conditions.append(ItemRow.pred_ood <= 1.0 if where.in_distribution else ItemRow.pred_ood > 1.0)
            matches = self._search_matches(where.search) if where.search else None
            if where.search and matches is None:
                conditions.append(self._search_like(where.search))
            counted = select(ItemRow.id).where(*conditions)
            if matches is not None:
                counted = counted.where(ItemRow.id.in_(matches)).limit(SEARCH_COUNT_CAP + 1)
            total = session.scalar(select(func.count()).select_from(counted.subquery()))
            capped = matches is not None and total > SEARCH_COUNT_CAP
            if matches is not None:
                # Few matches: fetch them by id and sort them. Many: walk the sort's index and keep
                # the matches ("+ 0" stops SQLite from fetching and sorting 90k matches by id).
                conditions.append((ItemRow.id + 0 if capped else ItemRow.id).in_(matches))
            column = SORTS[where.sort]
            order = (column.desc(), ItemRow.id.desc()) if where.descending else (column.asc(), ItemRow.id.asc())
            if session.bind.dialect.name != "sqlite":    # SQLite's order: no value first, as the smallest
                order = (order[0].nulls_last() if where.descending else order[0].nulls_first(), order[1])
            # The page's ids first (an index range, no row reads), then just those rows.
            ids = list(session.scalars(select(ItemRow.id).where(*conditions).order_by(*order)
                                       .offset(offset).limit(limit)))
            rows = {row.id: row for row in session.scalars(select(ItemRow).where(ItemRow.id.in_(ids)))}
        return Page([rows[i] for i in ids], SEARCH_COUNT_CAP if capped else total, capped)

    def _search_matches(self, query: str):
        """Ids of items with every word of the query in their file name, caption or OCR text (the
        last word may be the start of one: the reviewer may still be typing), from the database's
        full-text index (SQLite: FTS5, migration 0002; PostgreSQL: a GIN index, 0010). None where
        there is none (another database, or a query without words)."""
        dialect = self.db.engine.dialect.name
        if dialect == "sqlite" and (words := re.findall(r"\w+", query.lower())):
            match = " AND ".join([f'"{word}"' for word in words[:-1]] + [f'"{words[-1]}"*'])
            return select(literal_column("rowid")).select_from(table("items_search")).where(
                text("items_search MATCH :match").bindparams(match=match))
        if dialect == "postgresql" and (words := re.findall(r"[^\W_]+", query.lower())):
            match = " & ".join(words[:-1] + [f"{words[-1]}:*"])   # letters and digits only: nothing to quote
            return select(ItemRow.id).where(text("search_words @@ to_tsquery('simple', :match)").bindparams(match=match))
        return None

    @staticmethod
    def _search_like(query: str):
        pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return or_(*(c.ilike(pattern, escape="\\") for c in (ItemRow.filename, ItemRow.caption, ItemRow.ocr_text)))

    def optimize(self) -> None:
        """Refresh the planner's statistics, so it knows how many rows each filter keeps (bounded
        work: ~20 ms at 100k items on SQLite; PostgreSQL samples). Run when the store opens and
        after an import (PostgreSQL's autovacuum gets there too, but minutes after a big import:
        meanwhile a page of 50 took 30-190 ms instead of 14-52)."""
        dialect = self.db.engine.dialect.name
        if dialect in ("sqlite", "postgresql"):
            with self.db.write() as session:
                if dialect == "sqlite":
                    session.execute(text("PRAGMA analysis_limit=1000"))
                session.execute(text("ANALYZE" if dialect == "sqlite" else "ANALYZE items"))

    def editors(self, project_name: str) -> list[str]:
        """Everyone who last changed some item of the project (for the list's 'by' filter)."""
        with self.db.read() as session:
            project = self._project_row(session, project_name)
            return sorted(session.scalars(select(ItemRow.updated_by).where(
                ItemRow.project_id == project.id).distinct()))

    def iter_items(self, project_name: str, batch: int = 1000) -> Iterable[Item]:
        """Every item of a project, oldest first, in batches (for export and training)."""
        last_id = 0
        while True:
            with self.db.read() as session:
                project = self._project_row(session, project_name)
                rows = list(session.scalars(select(ItemRow).where(
                    ItemRow.project_id == project.id, ItemRow.id > last_id).order_by(ItemRow.id).limit(batch)))
            if not rows:
                return
            yield from rows
            last_id = rows[-1].id

    def labels_of(self, project_name: str, item_ids: list[int]) -> dict[int, str]:
        """The human label of each of these items that has one (one query per 500 ids)."""
        found: dict[int, str] = {}
        with self.db.read() as session:
            project_id = self._project_row(session, project_name).id
            for start in range(0, len(item_ids), 500):
                found |= dict(session.execute(select(ItemRow.id, ItemRow.label).where(
                    ItemRow.project_id == project_id, ItemRow.id.in_(item_ids[start:start + 500]),
                    ItemRow.label.is_not(None))).all())
        return found

    def items_by_id(self, project_name: str, item_ids: list[int]) -> list[Item]:
        """These items, in this order (ids not in the project are left out; one query per 500 ids)."""
        found: dict[int, Item] = {}
        with self.db.read() as session:
            project_id = self._project_row(session, project_name).id
            for start in range(0, len(item_ids), 500):
                found |= {row.id: row for row in session.scalars(select(ItemRow).where(
                    ItemRow.project_id == project_id, ItemRow.id.in_(item_ids[start:start + 500])))}
        return [found[i] for i in item_ids if i in found]

    def item_facts(self, project_name: str) -> dict[str, list]:
        """For the map of a project: every item's id, file name, label, status, predicted label and
        label check, as columns, in id order (one query, no row objects: 100,000 items in well under
        a second)."""
        columns = (ItemRow.id, ItemRow.filename, ItemRow.label, ItemRow.status, ItemRow.pred_label,
                   ItemRow.check_quality, ItemRow.check_flagged)
        with self.db.read() as session:
            project_id = self._project_row(session, project_name).id
            rows = session.execute(select(*columns).where(ItemRow.project_id == project_id).order_by(ItemRow.id)).all()
        return {c.key: list(values) for c, values in zip(columns, zip(*rows))} if rows else {c.key: [] for c in columns}

    def history(self, project_name: str, ref: str | int) -> list[HistoryRow]:
        item = self.item(project_name, ref)
        with self.db.read() as session:
            return list(session.scalars(select(HistoryRow).where(HistoryRow.item_id == item.id)
                                        .order_by(HistoryRow.id)))

    # ---- changes --------------------------------------------------------------------------

    def _change(self, project_name: str, item_id: int, user: str, action: str, expected_version: int | None,
                changes: Callable[[ItemRow], dict], history: Callable[[ItemRow], dict] = lambda row: {},
                human: bool = True, also: Callable[[Session], None] | None = None,
                session: Session | None = None) -> Item:
        """The one way an item changes: check the version, update, append history, one transaction
        (with `also`'s writes, if given), or a part of the caller's `session` (from `decision()`).
        Machine output (OCR, predictions) leaves version and updated_at/by alone: it never makes a
        reviewer's open edit stale (the history keeps what the reviewer was shown), and a stale
        edit's message names the last person who changed the item."""
        if session is None:
            with self.db.write() as session:
                return self._change(project_name, item_id, user, action, expected_version, changes, history, human,
                                    also, session)
        project = self._project_row(session, project_name)
        row = session.scalar(select(ItemRow).where(ItemRow.id == item_id, ItemRow.project_id == project.id))
        if row is None:
            raise FusionError(f"no item {item_id} in project {project_name!r}")
        if expected_version is not None and row.version != expected_version:
            raise _stale(row)
        old = {"label": row.label, "status": row.status, "caption": row.caption}
        now, version = utcnow(), row.version + human
        values = changes(row) | ({"version": version, "updated_at": now, "updated_by": user} if human else {})
        entry = history(row)
        # The WHERE on version makes the check hold even on a database without IMMEDIATE locks.
        result = session.execute(update(ItemRow).where(ItemRow.id == row.id, ItemRow.version == row.version)
                                 .values(**values).execution_options(synchronize_session=False))
        if result.rowcount != 1:
            raise StaleEdit(f"item {item_id} changed while saving; reload it and decide again")
        if also is not None:
            also(session)
        new = old | {k: values[k] for k in old if k in values}
        caption_changed = new["caption"] != old["caption"]
        session.add(HistoryRow(**dict(
            item_id=row.id, project_id=project.id, at=now, user=user, action=action,
            item_version=version, old_label=old["label"], new_label=new["label"],
            old_status=old["status"], new_status=new["status"],
            old_caption=old["caption"] if caption_changed else None,
            new_caption=new["caption"] if caption_changed else None) | entry))
        session.expire(row)
        return session.get(ItemRow, row.id)

    def refuse_if_stale(self, project_name: str, item_id: int, expected_version: int) -> None:
        """StaleEdit now if the item changed since `expected_version`, read without waiting for
        SQLite's write lock (the check inside the write still decides; this one saves the wait)."""
        row = self.item(project_name, item_id)
        if row.version != expected_version:
            raise _stale(row)

    def decision(self):
        """One transaction for the steps of one decision (caption, page text, label): pass it as
        `session=` to set_caption, set_page_text, set_label and skip, and all of them are saved
        or none (a stale version, an error or a killed process part-way leaves the item as it was)."""
        return self.db.write()

    def set_label(self, project_name: str, item_id: int, label: str, user: str, expected_version: int | None,
                  shown: Shown | None = None, session: Session | None = None) -> Item:
        """A reviewer's decision. `shown` is the suggestion on their screen (default: the item's latest
        prediction): the same label is an accept, another one a correction."""
        labels = self.project(project_name).labels
        if label not in labels:
            raise FusionError(f"unknown label {label!r}; project {project_name!r} has {', '.join(labels)}")

        def suggestion(row: ItemRow) -> Shown:
            return shown or Shown(row.pred_label, row.pred_confidence, row.pred_model)

        def action(row: ItemRow) -> str:
            s = suggestion(row)
            return "label" if s.label is None else "accept" if s.label == label else "correct"

        def changes(row: ItemRow) -> dict:
            # Decided while flagged: off the list, and not flagged again. A new label decided
            # otherwise is one no person weighed against a check: the next check may flag it.
            reviewed = ({"check_flagged": False, "check_reviewed_by": user} if row.check_flagged else
                        {"check_reviewed_by": None} if label != row.label else {})
            return {"label": label, "status": "corrected" if action(row) == "correct" else "accepted", **reviewed}

        def history(row: ItemRow) -> dict:
            s = suggestion(row)
            return {"action": action(row), "model_version": s.model_version, "shown_label": s.label,
                    "shown_confidence": s.confidence}

        return self._change(project_name, item_id, user, "label", expected_version, changes, history, session=session)

    def skip(self, project_name: str, item_id: int, user: str, expected_version: int | None,
             session: Session | None = None) -> Item:
        return self._change(project_name, item_id, user, "skip", expected_version,
                            lambda row: {"status": "skipped"}, session=session)

    def set_caption(self, project_name: str, item_id: int, caption: str, user: str,
                    expected_version: int | None, session: Session | None = None) -> Item:
        return self._change(project_name, item_id, user, "caption", expected_version,
                            lambda row: {"caption": stored_text(caption)}, session=session)

    def set_page_text(self, project_name: str, item_id: int, text: str, user: str, expected_version: int | None,
                      words: list | None = None, engine: str | None = None, session: Session | None = None) -> Item:
        """A reviewer's edit of the page text: it becomes the item's text (searched, exported, trained
        on), with the text before and after in its history row. The stored OCR words stay: they are
        what the engine read. `words` and `engine`: the reading the edit started from, where the
        stored text came from elsewhere (demo or imported text), so the page opens with it next time."""
        new_text = stored_text(text)

        def changes(row: ItemRow) -> dict:
            return {"ocr_text": new_text} | ({"ocr_engine": engine} if engine else {})

        def save_words(session: Session) -> None:
            session.merge(OcrWordsRow(item_id=item_id, words=words))

        return self._change(project_name, item_id, user, "text", expected_version, changes,
                            lambda row: {"old_text": row.ocr_text, "new_text": new_text},
                            also=save_words if words is not None else None, session=session)

    def set_ocr(self, project_name: str, item_id: int, text: str, words: list, engine: str, user: str,
                ms: float | None = None, angle: int = 0) -> Item:
        """Machine output: never refused as stale (it doesn't overwrite a human decision)."""
        return self._change(project_name, item_id, user, "ocr", None,
                            lambda row: {"ocr_text": stored_text(text), "ocr_engine": engine},
                            lambda row: {"source": engine}, human=False,
                            also=lambda session: session.merge(OcrWordsRow(item_id=item_id, words=words, ms=ms,
                                                                           angle=angle)))

    def ocr_words(self, item: Item) -> list:
        return self.ocr_reading(item)[0]

    def ocr_reading(self, item: Item) -> tuple[list, float | None, int]:
        """(words, milliseconds the reading took or None if not recorded, page angle)."""
        with self.db.read() as session:
            row = session.get(OcrWordsRow, item.id)
            return (row.words, row.ms, row.angle or 0) if row else ([], None, 0)

    def record_prediction(self, project_name: str, item_id: int, label: str, confidence: float,
                          probabilities: dict[str, float], model_version: str, user: str = "model",
                          heads: dict[str, dict[str, float]] | None = None, ood_score: float | None = None) -> Item:
        """The latest prediction, with what the review queue sorts by: the fused probabilities'
        entropy and margin, (given the image and text heads) how much the two disagree, and its
        OOD score (fusion.ml.ood)."""
        def changes(row: ItemRow) -> dict:
            values = {"pred_label": label, "pred_confidence": confidence, "pred_probs": probabilities,
                      "pred_model": model_version, "predicted_at": utcnow(), "pred_heads": heads, "pred_ood": ood_score,
                      **uncertainty(probabilities, heads)}
            if row.status == "unlabeled":
                values["status"] = "predicted"
            return values

        return self._change(project_name, item_id, user, "predict", None, changes,
                            lambda row: {"model_version": model_version, "shown_label": label,
                                         "shown_confidence": confidence}, human=False)

    def save_label_checks(self, project_name: str, checks: list[dict]) -> int:
        """Keep a check of each item's label (fusion.ml.label_issues: item_id, label, quality,
        flagged, suggested, heads), in one transaction. Machine output: versions stay as they are,
        and no history row is added. A check lands only where the item still has the label it
        checked (a decision made meanwhile wins); a label a person kept after it was flagged is
        not flagged again. Returns how many landed."""
        if not checks:
            return 0
        now = utcnow()
        with self.db.write() as session:
            project = self._project_row(session, project_name)
            statement = (update(ItemRow).where(ItemRow.project_id == project.id, ItemRow.id == bindparam("item"),
                                               ItemRow.label == bindparam("checked_label"))
                         .values(check_quality=bindparam("quality"), check_suggested=bindparam("suggested"),
                                 check_heads=bindparam("heads"), checked_at=now,
                                 check_flagged=case((ItemRow.check_reviewed_by.is_(None), bindparam("flagged")),
                                                    else_=False))
                         .execution_options(synchronize_session=False))
            session.connection().execute(statement, [
                {"item": c["item_id"], "checked_label": c["label"], "quality": c["quality"], "flagged": c["flagged"],
                 "suggested": c["suggested"], "heads": c["heads"]} for c in checks])
            # Counted, not the driver's rowcount: not every driver sums it over an executemany.
            return session.scalar(select(func.count()).where(ItemRow.project_id == project.id,
                                                             ItemRow.checked_at == now))


def uncertainty(probabilities: dict[str, float], heads: dict[str, dict[str, float]] | None = None) -> dict:
    p = sorted(probabilities.values(), reverse=True)
    values = {"pred_entropy": round(-sum(x * math.log(x) for x in p if x > 0), 6),
              "pred_margin": round(p[0] - (p[1] if len(p) > 1 else 0.0), 6), "pred_disagreement": None}
    if heads:
        image, text = heads["image"], heads["text"]
        values["pred_disagreement"] = round(0.5 * sum(abs(image[k] - text.get(k, 0.0)) for k in image), 6)
    return values


@lru_cache(maxsize=8)
def open_store(settings: Settings) -> Store:
    """One Store per process and workspace (it holds the connection pool)."""
    return Store(settings)
