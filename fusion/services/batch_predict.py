"""Pre-labeling a folder from the command line: `predict-folder NAME FOLDER --out results.csv`.

One row per image: the fused label and confidence, each head's probability of every label, the
model version and the OCR text's length; an unreadable file gets its error in the row instead
of stopping the run. The CSV is written to a temp file and renamed when complete.

Each image is read by OCR one at a time (EasyOCR takes one page at a time), then the encoders
and heads run on batches of BATCH pages, as pre-labeling does: on a GPU the encoders see whole
batches. Features go to a throwaway cache, not the project's.
"""
from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Callable

from fusion.core.errors import FusionError
from fusion.imaging.images import load_upload
from fusion.services.importing import IMAGE_SUFFIXES
from fusion.ml.pipeline import compose_text, get_engine
from fusion.ml.inference import item_predictions
from fusion.ml.model import HEADS

BATCH = 32


def predict_folder(settings, store, project_name: str, folder: Path, out: Path,
                   progress: Callable[[str, int, int], None] | None = None) -> dict:
    project = store.project(project_name)
    folder = Path(folder)
    if not folder.is_dir():
        raise FusionError(f"{folder} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FusionError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    engine = get_engine(settings)
    version = project.active_model or "zero-shot"
    columns = ["file", "label", "confidence"] + [f"{head}:{label}" for head in HEADS for label in project.labels]
    columns += ["ood_score", "in_distribution", "abstained", "model_version", "text_chars", "error"]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    failed = 0
    with open(tmp, "w", newline="", encoding="utf-8") as f, tempfile.TemporaryDirectory() as cache:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for start in range(0, len(files), BATCH):
            rows, readable, texts = [], [], []
            for path in files[start:start + BATCH]:
                rows.append({"file": str(path.relative_to(folder))})
                try:
                    text = engine.read_text(load_upload(path, settings)).text
                except FusionError as e:
                    rows[-1]["error"], failed = str(e), failed + 1
                    continue
                rows[-1] |= {"model_version": version, "text_chars": len(text)}
                readable.append((rows[-1], path))
                texts.append(compose_text(text, ""))
                if progress:
                    progress("reading", start + len(rows), len(files))
            if readable:
                found = item_predictions(engine, project, [p for _, p in readable], texts, Path(cache))
                for (row, _), probs in zip(readable, found):
                    label = max(probs["fused"], key=probs["fused"].get)
                    row |= {"label": label, "confidence": round(probs["fused"][label], 6), "ood_score": probs["ood_score"],
                            "in_distribution": None if probs["ood_score"] is None else probs["ood_score"] <= 1.0,
                            "abstained": ",".join(probs["abstained"])}
                    row |= {f"{head}:{k}": probs[head][k] for head in HEADS for k in project.labels}
            writer.writerows(rows)
            if progress:
                progress("predicting", start + len(rows), len(files))
    os.replace(tmp, out)
    return {"project": project_name, "model_version": version, "images": len(files),
            "failed": failed, "out": str(out)}
