"""The labeling database's tables. Changes go through a new migration in fusion/store/migrations/versions.

Times are UTC. `items` holds the current state of each item; `history` holds every change ever
made to it and is append-only (the database itself refuses UPDATE and DELETE on it).
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

STATUSES = ("unlabeled", "predicted", "accepted", "corrected", "skipped")
SPLITS = ("train", "val", "test")


class Base(DeclarativeBase):
    pass


class ProjectRow(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    labels: Mapped[list] = mapped_column(JSON)          # [{"name": ..., "description": ...}], in order
    created_at: Mapped[datetime] = mapped_column(DateTime)
    created_by: Mapped[str] = mapped_column(String(128))
    active_model: Mapped[str | None] = mapped_column(String(64))  # None: zero-shot


class ItemRow(Base):
    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("project_id", "sha256", name="uq_items_project_sha256"),  # one file, one item
        # The list's filters x sorts (see migration 0002); each page is an index range.
        Index("ix_items_status_updated", "project_id", "status", "updated_at"),
        Index("ix_items_status_confidence", "project_id", "status", "pred_confidence"),
        Index("ix_items_label_updated", "project_id", "label", "updated_at"),
        Index("ix_items_split_updated", "project_id", "split", "updated_at"),
        Index("ix_items_updated", "project_id", "updated_at"),
        Index("ix_items_added", "project_id", "added_at"),
        Index("ix_items_confidence", "project_id", "pred_confidence"),
        Index("ix_items_filename", "project_id", "filename"),
        Index("ix_items_updated_by", "project_id", "updated_by"),
        # The review queue's strategies (migration 0004): undecided items by each uncertainty.
        Index("ix_items_status_entropy", "project_id", "status", "pred_entropy"),
        Index("ix_items_status_margin", "project_id", "status", "pred_margin"),
        Index("ix_items_status_disagreement", "project_id", "status", "pred_disagreement"),
        Index("ix_items_ood", "project_id", "pred_ood"),                  # migration 0008
        Index("ix_items_check", "project_id", "check_flagged", "check_quality"),   # migration 0013
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    extension: Mapped[str] = mapped_column(String(8))     # ".png": the blob is images/ab/<sha256><ext>
    filename: Mapped[str] = mapped_column(String(255))    # as uploaded or imported
    size: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    split: Mapped[str] = mapped_column(String(8))         # from the hash: stable across imports
    added_at: Mapped[datetime] = mapped_column(DateTime)
    added_by: Mapped[str] = mapped_column(String(128))

    ocr_text: Mapped[str | None] = mapped_column(Text)    # None: OCR not run yet (words: OcrWordsRow)
    ocr_engine: Mapped[str | None] = mapped_column(String(64))  # "easyocr 1.7.2", or where the text came from
    caption: Mapped[str] = mapped_column(Text, default="")

    pred_label: Mapped[str | None] = mapped_column(String(128))
    pred_confidence: Mapped[float | None] = mapped_column(Float)
    pred_probs: Mapped[dict | None] = mapped_column(JSON)
    pred_model: Mapped[str | None] = mapped_column(String(64))
    pred_heads: Mapped[dict | None] = mapped_column(JSON)            # {"image": probs, "text": probs}
    pred_entropy: Mapped[float | None] = mapped_column(Float)        # of the fused probabilities, in nats
    pred_margin: Mapped[float | None] = mapped_column(Float)         # top-1 minus top-2 probability
    pred_disagreement: Mapped[float | None] = mapped_column(Float)   # total variation, image vs text head
    pred_ood: Mapped[float | None] = mapped_column(Float)            # fusion.ml.ood score; above 1: none of these
    predicted_at: Mapped[datetime | None] = mapped_column(DateTime)

    # The latest check of the label (fusion.ml.label_issues): out-of-fold, so by models that never saw it.
    check_quality: Mapped[float | None] = mapped_column(Float)     # the fused head's probability of the label
    check_flagged: Mapped[bool | None] = mapped_column(Boolean)    # likely wrong, until a person decides again
    check_suggested: Mapped[str | None] = mapped_column(String(128))  # the fused head's top label
    check_heads: Mapped[dict | None] = mapped_column(JSON)         # {"image": label, "text": label, "fused": label}
    checked_at: Mapped[datetime | None] = mapped_column(DateTime)
    check_reviewed_by: Mapped[str | None] = mapped_column(String(128))  # who decided on it once flagged

    label: Mapped[str | None] = mapped_column(String(128))  # the human label; None until someone decides
    status: Mapped[str] = mapped_column(String(16), default="unlabeled")
    version: Mapped[int] = mapped_column(Integer, default=1)  # optimistic locking: +1 on every change
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    updated_by: Mapped[str] = mapped_column(String(128))


class OcrWordsRow(Base):
    """Each OCR word's text, confidence and box: kilobytes per page, so kept out of `items`,
    whose rows stay small for listing 100k of them."""
    __tablename__ = "ocr_words"

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), primary_key=True)
    words: Mapped[list] = mapped_column(JSON)   # [{"text", "conf", "box": [x0, y0, x1, y1]}]
    ms: Mapped[float | None] = mapped_column(Float)      # how long the reading took (None: before 0009)
    angle: Mapped[int | None] = mapped_column(Integer)   # the page's rotation as read


class HistoryRow(Base):
    __tablename__ = "history"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    user: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(16))   # add, ocr, caption, text, predict, accept, correct, skip
    item_version: Mapped[int] = mapped_column(Integer)  # the item's version after this change
    old_label: Mapped[str | None] = mapped_column(String(128))
    new_label: Mapped[str | None] = mapped_column(String(128))
    old_status: Mapped[str | None] = mapped_column(String(16))
    new_status: Mapped[str | None] = mapped_column(String(16))
    old_caption: Mapped[str | None] = mapped_column(Text)   # set only when the caption changed
    new_caption: Mapped[str | None] = mapped_column(Text)
    old_text: Mapped[str | None] = mapped_column(Text)      # a reviewer's page-text edit ("text"; migration 0007)
    new_text: Mapped[str | None] = mapped_column(Text)
    model_version: Mapped[str | None] = mapped_column(String(64))   # the suggestion shown at the time
    shown_label: Mapped[str | None] = mapped_column(String(128))
    shown_confidence: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str | None] = mapped_column(String(255))  # e.g. the import file and line


JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


class JobRow(Base):
    """A unit of background work (training, pre-labeling) that a worker process runs, oldest first."""
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))            # "train"
    params: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    created_by: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime)
    worker_pid: Mapped[int | None] = mapped_column(Integer)
    worker_host: Mapped[str | None] = mapped_column(String(255))   # the machine the worker runs on
    device: Mapped[str | None] = mapped_column(String(128))
    progress: Mapped[dict | None] = mapped_column(JSON)      # step, epoch, loss, metrics, samples/s, ETA
    curve: Mapped[list | None] = mapped_column(JSON)         # one row per epoch: loss and val metrics
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    resume_of: Mapped[int | None] = mapped_column(Integer)   # the failed job whose checkpoint this continues
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict | None] = mapped_column(JSON)        # e.g. {"version": "v3"}


class ModelVersionRow(Base):
    """A trained model version: its files are <project>/models/<version>/ (safetensors)."""
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("project_id", "version", name="uq_model_versions_project_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    version: Mapped[str] = mapped_column(String(64))
    parent: Mapped[str | None] = mapped_column(String(64))    # the active version when training started
    created_at: Mapped[datetime] = mapped_column(DateTime)
    created_by: Mapped[str] = mapped_column(String(128))
    job_id: Mapped[int | None] = mapped_column(Integer)
    params: Mapped[dict] = mapped_column(JSON)                # mode, epochs, lr, ...
    data: Mapped[dict] = mapped_column(JSON)                  # snapshot: item ids, labels hash, counts
    metrics: Mapped[dict] = mapped_column(JSON)               # evaluation on the test split


class ModelEventRow(Base):
    """Who made which version active, when: promotions and rollbacks, append-only."""
    __tablename__ = "model_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    user: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(16))           # promote, rollback, auto-promote
    from_version: Mapped[str | None] = mapped_column(String(64))
    to_version: Mapped[str | None] = mapped_column(String(64))


ROLES = ("annotator", "reviewer", "admin")   # in order: each may do all the one before it may (fusion.services.accounts)


class UserRow(Base):
    """An account that signs in to the app when settings.auth is on (migration 0005)."""
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))                     # as typed when created
    name_key: Mapped[str] = mapped_column(String(64), unique=True)    # casefolded: "Rita" and "rita" are one
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))           # argon2id, salt and parameters inside
    disabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    created_by: Mapped[str] = mapped_column(String(128))
    password_changed_at: Mapped[datetime] = mapped_column(DateTime)   # sessions older than this end
    last_sign_in_at: Mapped[datetime | None] = mapped_column(DateTime)
    signed_out_at: Mapped[datetime | None] = mapped_column(DateTime)  # sessions begun before it end (0012)


class SignInAttemptRow(Base):
    """Every sign-in attempt, by the name tried (which need not exist): the rate limit counts these."""
    __tablename__ = "sign_in_attempts"
    __table_args__ = (Index("ix_sign_in_attempts_name_at", "name_key", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, index=True)
    name_key: Mapped[str] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(16))     # ok, wrong, locked, disabled
    address: Mapped[str | None] = mapped_column(String(64))   # the client's IP when known (shown, not trusted)


class AccountEventRow(Base):
    """Who added an account or changed its role, password or access, when: append-only."""
    __tablename__ = "account_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    by: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(64))        # the account changed
    action: Mapped[str] = mapped_column(String(16))      # add, role, disable, enable, password
    detail: Mapped[str | None] = mapped_column(String(255))
