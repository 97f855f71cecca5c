"""Pre-labeling: the active model's prediction for every undecided item of a project, so the
review queue can order them by uncertainty. Runs as a background job of the worker.

Items read by OCR before (or imported with their text) are not read again; an item without
text is read by EasyOCR first and its reading kept. Predictions are batched through the cached
pretrained features (and the version's own encoders when it fine-tuned them).
"""
from __future__ import annotations

from fusion.core.progress import Progress, Report
from fusion.imaging.images import load_image
from fusion.ml.pipeline import compose_text, get_engine
from fusion.services.review import QUEUE_STATUSES, store_ocr
from fusion.ml.inference import item_predictions
from fusion.store.labeling import ItemFilter, Store

BATCH = 64


def prelabel_project(settings, store: Store, project_name: str, report: Report | None = None,
                     user: str = "model") -> dict:
    project = store.project(project_name)
    engine = get_engine(settings)
    version = project.active_model or "zero-shot"
    items = [i for i in store.iter_items(project_name) if i.status in QUEUE_STATUSES]
    unread = sum(i.ocr_text is None for i in items)
    done = read = 0
    if report:           # the page shows the total at once, not "0/…" for the whole first batch
        report(Progress("reading" if unread else "predicting", step=0, steps=unread or len(items)))
    for start in range(0, len(items), BATCH):
        batch = items[start:start + BATCH]
        for n, item in enumerate(batch):
            if item.ocr_text is None:
                ocr = engine.read_text(load_image(store.image_path(item)))
                batch[n] = store_ocr(store, project_name, item.id, ocr, user)
                read += 1
                if report:   # OCR takes seconds a page: say each one
                    report(Progress("reading", step=read, steps=unread))
        paths = [store.image_path(i) for i in batch]
        texts = [compose_text(i.ocr_text or "", i.caption) for i in batch]
        found = item_predictions(engine, project, paths, texts, project.directory / "features")
        for item, named in zip(batch, found):
            label = max(named["fused"], key=named["fused"].get)
            store.record_prediction(project_name, item.id, label, named["fused"][label], named["fused"], version,
                                    user=user, heads={"image": named["image"], "text": named["text"]},
                                    ood_score=named["ood_score"])
        done += len(batch)
        if report:
            report(Progress("predicting", step=done, steps=len(items)))
    return {"version": version, "predicted": done, "read_by_ocr": read,
            "undecided": store.list_items(project_name, ItemFilter(status=QUEUE_STATUSES), limit=0).total}
