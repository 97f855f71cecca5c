"""Scoring a model version on labeled data (`python -m fusion evaluate`, the Evaluate page): the
project's test split, or an external labeled CSV (`image,label[,caption][,ocr_text]`; images
without stored text are read with OCR).

Each head of the version (fused, image-only, text-only) and the zero-shot model are scored with
fusion.ml.evaluation.scores. A version that fine-tuned its encoders reads the items through them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from fusion.core.errors import FusionError
from fusion.imaging.images import check_image_file, load_image
from fusion.ml.evaluation import scores
from fusion.ml.features import cache_features, load_feature_set
from fusion.ml.inference import version_logits, zero_shot_logits
from fusion.ml.pipeline import compose_text, get_engine
from fusion.ml.registry import get_version
from fusion.ml.training_data import labeled_examples
from fusion.core.project import Project
from fusion.services.importing import csv_rows

Progress = Callable[[str, int, int], None]


def _external_items(settings, engine, project: Project, csv_path: Path, progress: Progress | None):
    """(paths, texts, labels, problems) of a labeled CSV; unreadable or unlabeled rows are problems."""
    problems: list = []
    rows = csv_rows(Path(csv_path), problems)
    paths, texts, labels = [], [], []
    for n, row in enumerate(rows, 1):
        if row.label not in project.labels:
            problems.append((row.where, f"label {row.label!r} is not one of {', '.join(project.labels)}"))
            continue
        try:
            check_image_file(row.image, settings)
        except FusionError as e:
            problems.append((row.where, str(e)))
            continue
        text = row.fields.get("ocr_text")
        if text is None:
            text = engine.read_text(load_image(row.image)).text
        paths.append(Path(row.image))
        texts.append(compose_text(text, row.fields.get("caption", "")))
        labels.append(row.label)
        if progress:
            progress("reading", n, len(rows))
    return paths, texts, labels, problems


def score_version(settings, store, project_name: str, version: str | None = None, data: Path | None = None,
                  progress: Progress | None = None) -> dict:
    """Scores of `version` (default: the active one; none active: zero-shot only) and of
    zero-shot, on the project's test split or on the labeled CSV `data`."""
    project = store.project(project_name)
    version = version or project.active_model
    if version is not None:
        get_version(store, project_name, version)            # a clear error for an unknown version
    engine = get_engine(settings)
    problems: list = []
    if data is None:
        examples = labeled_examples(store, project_name)
        rows = examples.split_index("test").tolist()
        paths = [examples.paths[i] for i in rows]
        texts = [examples.texts[i] for i in rows]
        labels = [examples.labels[i] for i in rows]
        source = "test split"
    else:
        paths, texts, labels, problems = _external_items(settings, engine, project, data, progress)
        source = str(data)
    if not paths:
        raise FusionError(f"nothing to score: no labeled items in the {source}")
    encoded = (lambda done, total: progress("encoding", done, total)) if progress else None
    files = cache_features(engine, project.directory / "features", paths, texts, encoded)
    features = load_feature_set(files, [project.label_names.index(label) for label in labels])
    targets = features.targets.numpy()
    result = {"project": project_name, "version": version, "data": source, "items": len(paths),
              "problems": [{"where": w, "reason": r} for w, r in problems],
              "zero_shot": scores(zero_shot_logits(engine, project, features, engine.device)["fused"]
                                  .softmax(-1).numpy(), targets, project.label_names)}
    if version is not None:
        logits = version_logits(engine, project, version, features, paths, texts, engine.device)
        result |= {head: scores(l.softmax(-1).numpy(), targets, project.label_names) for head, l in logits.items()}
    return result
