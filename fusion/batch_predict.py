"""Pre-labeling a folder from the command line: `predict-folder NAME FOLDER --out results.csv`.

One row per image: the fused label and confidence, each head's probability of every label, the
model version and the OCR text's length; an unreadable file gets its error in the row instead
of stopping the run. The CSV is written to a temp file and renamed when complete.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Callable

from .errors import FusionError
from .images import load_upload
from .importing import IMAGE_SUFFIXES
from .pipeline import get_engine

HEADS = (("fused", "probs"), ("image", "probs_image"), ("text", "probs_text"))


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
    columns = ["file", "label", "confidence"] + [f"{head}:{label}" for head, _ in HEADS for label in project.labels]
    columns += ["model_version", "text_chars", "error"]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    failed = 0
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for n, path in enumerate(files, 1):
            row = {"file": str(path.relative_to(folder))}
            try:
                p = engine.predict(load_upload(path, settings), project)
                row |= {"label": p.label, "confidence": round(p.confidence, 6), "model_version": p.model_version,
                        "text_chars": len(p.ocr_text)}
                row |= {f"{head}:{label}": getattr(p, field)[label] for head, field in HEADS for label in project.labels}
            except FusionError as e:
                row["error"], failed = str(e), failed + 1
            writer.writerow(row)
            if progress:
                progress("predicting", n, len(files))
    os.replace(tmp, out)
    return {"project": project_name, "model_version": project.active_model or "zero-shot", "images": len(files),
            "failed": failed, "out": str(out)}
