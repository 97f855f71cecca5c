"""Training the fusion heads on cached features ("head" mode: encoders frozen).

Joint loss over the three heads, class weights for imbalanced labels, early stopping on the
validation macro-F1 of the fused head, fixed seeds. The model starts as the zero-shot model
(residual heads at zero), and the best validation epoch is kept, so it never ends worse on
validation than where it started.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score

from .errors import FusionError
from .features import FeatureSet, cache_features, load_feature_set
from .model import FusionModel, ModelConfig
from .project import Project
from .zeroshot import build_zero_shot_model

HEADS = ("fused", "image", "text")


@dataclass
class TrainConfig:
    epochs: int = 40
    lr: float = 2e-3
    batch_size: int = 32
    weight_decay: float = 1e-2
    patience: int = 8       # epochs without a better val macro-F1 before stopping
    seed: int = 0


@torch.no_grad()
def predict_heads(model: FusionModel, data: FeatureSet, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Class probabilities of each head, (N, K) each."""
    model.eval()
    parts = {h: [] for h in HEADS}
    for i in range(0, len(data), batch_size):
        out = model(data.patches[i:i + batch_size], data.tokens[i:i + batch_size], data.mask[i:i + batch_size])
        for h in HEADS:
            parts[h].append(getattr(out, h).softmax(-1))
    return {h: torch.cat(p) for h, p in parts.items()}


def evaluate(model: FusionModel, data: FeatureSet) -> dict[str, dict[str, float]]:
    """Accuracy and macro-F1 of each head."""
    y = data.targets.numpy()
    result = {}
    for head, probs in predict_heads(model, data).items():
        pred = probs.argmax(-1).numpy()
        result[head] = {
            "accuracy": round(float(accuracy_score(y, pred)), 4),
            "macro_f1": round(float(f1_score(y, pred, average="macro", labels=np.arange(probs.shape[1]), zero_division=0)), 4),
        }
    return result


def train_heads(model: FusionModel, train: FeatureSet, val: FeatureSet, config: TrainConfig = TrainConfig(),
                progress: Callable[[dict], None] | None = None) -> tuple[FusionModel, list[dict]]:
    torch.manual_seed(config.seed)
    k = len(model.config.labels)
    counts = torch.bincount(train.targets, minlength=k).float()
    class_weights = counts.sum() / (k * counts.clamp(min=1))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)

    best_f1 = evaluate(model, val)["fused"]["macro_f1"]  # the zero-shot starting point
    best_state, since_best, history = copy.deepcopy(model.state_dict()), 0, []
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(len(train), generator=generator)
        total = 0.0
        for i in range(0, len(train), config.batch_size):
            batch = train.subset(order[i:i + config.batch_size])
            loss = model.loss(model(batch.patches, batch.tokens, batch.mask), batch.targets, class_weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        metrics = evaluate(model, val)
        row = {"epoch": epoch, "loss": round(total / len(train), 4), "val": metrics,
               "seconds": round(time.perf_counter() - t0, 3)}
        history.append(row)
        if progress:
            progress(row)
        if metrics["fused"]["macro_f1"] > best_f1:
            best_f1, best_state, since_best = metrics["fused"]["macro_f1"], copy.deepcopy(model.state_dict()), 0
        else:
            since_best += 1
            if since_best >= config.patience:
                break
    model.load_state_dict(best_state)
    return model.eval(), history


@dataclass
class Examples:
    """A project's human-labeled items, as training reads them."""
    paths: list[Path]
    texts: list[str]
    labels: list[str]
    splits: list[str]


def labeled_examples(store, project_name: str) -> Examples:
    """Items a person labeled (accepted or corrected), with their stored text: no OCR at training."""
    from .pipeline import compose_text
    from .store import HUMAN_STATUSES

    examples = Examples([], [], [], [])
    for item in store.iter_items(project_name):
        if item.status in HUMAN_STATUSES and item.label is not None:
            examples.paths.append(store.image_path(item))
            examples.texts.append(compose_text(item.ocr_text or "", item.caption))
            examples.labels.append(item.label)
            examples.splits.append(item.split)
    return examples


def next_version(project: Project) -> str:
    existing = [int(p.name[1:]) for p in (project.directory / "models").glob("v*") if p.name[1:].isdigit()]
    return f"v{max(existing, default=0) + 1}"


def train_project_model(engine, project: Project, paths: list[Path], texts: list[str], labels: list[str],
                        splits: list[str], strategy: str | None = None, config: TrainConfig = TrainConfig(),
                        progress: Callable[[str, int, int], None] | None = None) -> tuple[str, dict]:
    """Cache features, train the heads from the zero-shot start, evaluate on the test split and
    save a new model version (not yet active). Returns (version, metrics)."""
    t0 = time.perf_counter()
    report = (lambda done, total: progress("encoding", done, total)) if progress else None
    files = cache_features(engine, project.directory / "features", paths, texts, report)
    encode_seconds = time.perf_counter() - t0
    index = {name: i for i, name in enumerate(project.label_names)}
    data = load_feature_set(files, [index[label] for label in labels])
    split = {s: torch.tensor([i for i, v in enumerate(splits) if v == s]) for s in ("train", "val", "test")}
    if any(len(v) == 0 for v in split.values()):
        raise FusionError(f"training needs items in each of train/val/test, got { {k: len(v) for k, v in split.items()} }")

    version = next_version(project)
    model_config = ModelConfig(project.label_names, project.labels, strategy or engine.settings.fusion, version=version)
    model = build_zero_shot_model(model_config, engine.image_encoder, engine.text_encoder)
    zero_shot = evaluate(model, data.subset(split["test"]))
    t1 = time.perf_counter()
    epochs = (lambda row: progress("training", row["epoch"], config.epochs)) if progress else None
    model, history = train_heads(model.requires_grad_(True).train(), data.subset(split["train"]),
                                 data.subset(split["val"]), config, epochs)
    model.imagenet_fc.requires_grad_(False)
    metrics = {
        "test": evaluate(model, data.subset(split["test"])),
        "zero_shot_test": zero_shot,
        "counts": {k: len(v) for k, v in split.items()},
        "encode_seconds": round(encode_seconds, 2),
        "train_seconds": round(time.perf_counter() - t1, 2),
        "epochs_run": len(history),
        "history": history,
    }
    model.save(project.model_dir(version))
    (project.model_dir(version) / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return version, metrics
