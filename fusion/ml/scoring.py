"""Scoring a model version on labeled data: the project's test split, or an external labeled CSV
(`image,label[,caption][,ocr_text]`; images without stored text are read with OCR).

Each head of the version (fused, image-only, text-only) and the zero-shot model are scored with
evaluation.scores. A version that fine-tuned its encoders reads the items through them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from fusion.ml.abstain import abstained
from fusion.core.errors import FusionError
from fusion.ml.features import FeatureSet, cache_features, load_feature_set
from fusion.ml.finetune import EndToEnd, HeadsOnFeatures
from fusion.ml.encoders import load_encoders
from fusion.ml.evaluation import scores
from fusion.ml.model import FusionModel
from fusion.ml.ood import fields as ood_fields
from fusion.ml.train import HEADS
from fusion.core.project import Project
from fusion.ml.training_data import labeled_examples, pixel_set
from fusion.ml.zeroshot import project_zero_shot_model

Progress = Callable[[str, int, int], None]


def version_outputs(engine, project: Project, version: str, features: FeatureSet, paths: list[Path],
                    texts: list[str], device: str) -> dict:
    """train.predict_outputs of `version` on these items (features: their pretrained-encoder features)."""
    from fusion.ml.train import predict_outputs

    directory = project.model_dir(version)
    fusion = FusionModel.load(directory, device)
    if fusion.config.finetuned_encoders:
        image_encoder, text_encoder = load_encoders(directory, engine.image_encoder, engine.text_encoder, device)
        data = pixel_set(paths, texts, features.targets.tolist(), text_encoder)
        return predict_outputs(EndToEnd(image_encoder, text_encoder, fusion).to(device), data, device, "full")
    return predict_outputs(HeadsOnFeatures(fusion), features, device)


def version_logits(engine, project: Project, version: str, features: FeatureSet, paths: list[Path],
                   texts: list[str], device: str) -> dict[str, torch.Tensor]:
    """Each head's logits of `version` on these items."""
    outputs = version_outputs(engine, project, version, features, paths, texts, device)
    return {h: outputs[h] for h in HEADS}


def zero_shot_outputs(engine, project: Project, features: FeatureSet, device: str) -> dict:
    from fusion.ml.train import predict_outputs

    model = project_zero_shot_model(project, engine.settings.fusion, engine.image_encoder, engine.text_encoder).to(device)
    return predict_outputs(HeadsOnFeatures(model), features, device)


def zero_shot_logits(engine, project: Project, features: FeatureSet, device: str) -> dict[str, torch.Tensor]:
    outputs = zero_shot_outputs(engine, project, features, device)
    return {h: outputs[h] for h in HEADS}


def item_predictions(engine, project: Project, paths: list[Path], texts: list[str], cache_dir: Path) -> list[dict]:
    """Per item, as the Review page sees it: each head's probability of every label ("fused",
    "image", "text"), the heads that abstained and the OOD score, from the active version
    (zero-shot when none is active), batched through pretrained features cached in `cache_dir`."""
    features = load_feature_set(cache_features(engine, cache_dir, paths, texts), [0] * len(paths))
    outputs = (version_outputs(engine, project, project.active_model, features, paths, texts, engine.device)
               if project.active_model else zero_shot_outputs(engine, project, features, engine.device))
    probs = {head: outputs[head].softmax(-1).tolist() for head in HEADS}
    ood = outputs["ood"]
    return [{**{head: dict(zip(project.label_names, p[k])) for head, p in probs.items()},
             "abstained": abstained(bool(outputs["text_present"][k]), bool(outputs["image_present"][k])),
             **ood_fields(None if ood is None else ood[k])}
            for k in range(len(paths))]


def _external_items(settings, engine, project: Project, csv_path: Path, progress: Progress | None):
    """(paths, texts, labels, problems) of a labeled CSV; unreadable or unlabeled rows are problems."""
    from fusion.imaging.images import check_image_file, load_image
    from fusion.services.importing import csv_rows
    from fusion.ml.pipeline import compose_text

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
    from fusion.ml.pipeline import get_engine

    project = store.project(project_name)
    version = version or project.active_model
    if version is not None:
        from fusion.ml.registry import get_version

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
