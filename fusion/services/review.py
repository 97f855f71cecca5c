"""Reviewing items: what the Review page (and the CLI's `label`) do, as library calls.

An upload becomes an item in the store before anything else, so a reviewer's decision always has
a row (and a history) to land on. The queue serves items nobody has decided on yet, in the
order of the strategy the reviewer picks.
"""
from __future__ import annotations

import random

from fusion.core.errors import FusionError
from fusion.imaging.images import check_image_file
from fusion.imaging.ocr import ENGINE, OcrResult, Word
from fusion.ml.pipeline import Prediction
from fusion.store.labeling import ItemFilter, NewItem, Shown, Store, stored_text

QUEUE_STATUSES = ("unlabeled", "predicted")


def add_upload(store: Store, project_name: str, filename: str, data: bytes, user: str):
    """The item for these bytes: added now, or the one already in the project. BadImage if unreadable.
    Decoded in full (not the import's quicker check): it is shown and read right after anyway, and
    a crafted PNG with valid checksums but undecodable pixels must not become an item."""
    file = check_image_file(data, store.settings, full_decode=True)
    (item, _outcome), = store.add_items(project_name, [NewItem(file, filename, source="upload")], user)
    return item


# How the queue picks its next item: the items it serves and their order, or None for random.
# Never-predicted items have no uncertainty yet: SQLite puts them first in ascending orders and
# last in descending ones. Pre-labeling (fusion.services.prelabel) predicts them all. "Likely
# mislabeled" serves labeled items instead: those the latest label check flags (fusion.ml.label_issues),
# least likely label first, until a person decides on them again.
def _undecided(sort: str, descending: bool) -> ItemFilter:
    return ItemFilter(status=QUEUE_STATUSES, sort=sort, descending=descending)


STRATEGIES = {
    "least confident": _undecided("confidence", False),
    "most uncertain (entropy)": _undecided("entropy", True),
    "smallest margin": _undecided("margin", False),
    "image and text disagree": _undecided("disagreement", True),
    "random": None,
    "likely mislabeled": ItemFilter(likely_mislabeled=True, sort="label_quality", descending=False),
}


def queue_filter(strategy: str) -> ItemFilter:
    """The items the queue serves under `strategy` (random: the undecided ones)."""
    if strategy not in STRATEGIES:
        raise FusionError(f"unknown queue strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[strategy] or ItemFilter(status=QUEUE_STATUSES, sort="id")


def in_queue(item, strategy: str) -> bool:
    """Whether the queue under `strategy` still serves this item."""
    return bool(item.check_flagged) if STRATEGIES.get(strategy) is STRATEGIES["likely mislabeled"] \
        else item.status in QUEUE_STATUSES


def next_in_queue(store: Store, project_name: str, skip_ids: set[int] = frozenset(),
                  strategy: str = "least confident"):
    """The item that `strategy` puts first (skipping `skip_ids`), or None."""
    where = queue_filter(strategy)
    if STRATEGIES[strategy] is None:
        total = store.list_items(project_name, where, limit=0).total
        for _ in range(8):   # a few draws; skipped items are rare
            page = store.list_items(project_name, where, offset=random.randrange(total), limit=1) if total else None
            if page and page.items and page.items[0].id not in skip_ids:
                return page.items[0]
        where = STRATEGIES["least confident"]
    page = store.list_items(project_name, where, limit=len(skip_ids) + 1)
    return next((item for item in page.items if item.id not in skip_ids), None)


def stored_ocr(store: Store, item) -> OcrResult | None:
    """The item's OCR from an earlier read by EasyOCR, so a page is never read twice: its text as
    stored (a reviewer's edit, if any) with the words EasyOCR read."""
    if item.ocr_text is None or not (item.ocr_engine or "").startswith("easyocr"):
        return None
    words, ms, angle = store.ocr_reading(item)
    return OcrResult(item.ocr_text, [Word(w["text"], w["conf"], tuple(w["box"])) for w in words],
                     ms=ms or 0.0, angle=angle)


def store_ocr(store: Store, project_name: str, item_id: int, ocr: OcrResult, user: str):
    """Keep EasyOCR's reading of an item: text, words, how long it took, which way up."""
    return store.set_ocr(project_name, item_id, ocr.text, [w.to_dict() for w in ocr.words], ENGINE, user,
                         ms=ocr.ms, angle=ocr.angle)


def save_reading(store: Store, project_name: str, item, ocr: OcrResult, prediction: Prediction, user: str):
    """Keep what the machine said about an item: its OCR (if it had none) and the prediction."""
    if item.ocr_text is None:
        store_ocr(store, project_name, item.id, ocr, user)
    return store.record_prediction(project_name, item.id, prediction.label, prediction.confidence,
                                   prediction.probs, prediction.model_version, user="model",
                                   heads={"image": prediction.probs_image, "text": prediction.probs_text},
                                   ood_score=prediction.ood_score)


def decide(store: Store, project_name: str, item, opened_version: int, label: str | None, user: str,
           shown: Prediction, caption: str | None = None, page_text: OcrResult | None = None):
    """Accept or correct (label), or skip (label None), against the version the reviewer opened.
    A changed caption, then a changed page text (`page_text`: the reading the page showed, with the
    reviewer's edit as its text; None: not edited) are saved with it, each in its own history row,
    all in one transaction: StaleEdit if someone got there first, and then nothing is saved."""
    version = opened_version
    caption = stored_text(caption)   # as the store keeps it, so an unchanged caption is not saved again
    store.refuse_if_stale(project_name, item.id, opened_version)
    with store.decision() as session:
        if caption is not None and caption != item.caption:
            version = store.set_caption(project_name, item.id, caption, user, expected_version=version,
                                        session=session).version
        if page_text is not None and stored_text(page_text.text) != item.ocr_text:
            # The stored words stay where EasyOCR's reading is stored; otherwise (demo or imported text)
            # the reading the page showed is kept with the edit, so the page opens with both next time.
            read_before = (item.ocr_engine or "").startswith("easyocr")
            version = store.set_page_text(
                project_name, item.id, page_text.text, user, expected_version=version,
                words=None if read_before else [w.to_dict() for w in page_text.words],
                engine=None if read_before else ENGINE, session=session).version
        if label is None:
            return store.skip(project_name, item.id, user, expected_version=version, session=session)
        suggestion = Shown(shown.label, shown.confidence, shown.model_version)
        return store.set_label(project_name, item.id, label, user, expected_version=version, shown=suggestion,
                               session=session)
