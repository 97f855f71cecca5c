"""Likely label errors: out-of-fold probabilities of the three heads over a project's labeled
items, ranked by confident learning (cleanlab).

Each fold fits the heads as head-mode training starts them (fusion.ml.probe.fit_linear_heads on
the cached features of the other folds: the same linear heads, weighed on held-out logits), so
an item's probabilities come from a model that never saw its label. cleanlab then flags the items
whose given label the out-of-fold fused probabilities contradict, and scores every item's label
quality (self-confidence: the probability of its given label).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from fusion.core.errors import FusionError
from fusion.ml.features import READ_BATCH, cache_features, feature_batches
from fusion.ml.finetune import HeadsOnFeatures
from fusion.ml.inference import predict_logits
from fusion.ml.model import HEADS, ModelConfig
from fusion.ml.pipeline import get_engine
from fusion.ml.probe import PooledFeatures, balanced_class_weights, fit_linear_heads, pooled_features
from fusion.ml.training_data import labeled_examples
from fusion.ml.zeroshot import build_zero_shot_model

FOLDS = 5


@dataclass
class LabelIssue:
    item_id: int
    label: str                    # the label it has
    suggested: str                # the fused head's out-of-fold top label
    quality: float                # out-of-fold probability of its own label: low is suspect
    flagged: bool                 # cleanlab's find_label_issues says it is likely wrong
    heads: dict[str, str]         # each head's out-of-fold top label: "image", "text", "fused"

    def to_dict(self) -> dict:
        return asdict(self)


def out_of_fold_probabilities(engine, config, files: list[Path], targets: np.ndarray, folds: int = FOLDS,
                              seed: int = 0, progress=None) -> dict[str, np.ndarray]:
    """Each head's probabilities (N, K) for every item (its cached feature file and label index),
    from the fold that did not train on it. The pooled vectors and zero-shot priors the heads are
    fitted on are the same in every fold, so they are computed once; the regularisation is chosen
    by cross-validation in the first fold and reused by the others."""
    from sklearn.model_selection import StratifiedKFold

    smallest = np.bincount(targets, minlength=len(config.labels)).min()
    if smallest < 2:
        raise FusionError("finding label errors needs at least 2 labeled items in every class; label more first")
    zero_shot = build_zero_shot_model(config, engine.image_encoder, engine.text_encoder)
    pooled = pooled_features(zero_shot, (batch.inputs("cpu") for batch in feature_batches(files)))
    splitter = StratifiedKFold(n_splits=int(min(folds, smallest)), shuffle=True, random_state=seed)
    out = {h: np.zeros((len(targets), len(config.labels)), dtype=np.float32) for h in HEADS}
    chosen = None
    for fold, (train, held_out) in enumerate(splitter.split(np.zeros(len(targets)), targets)):
        if progress:
            progress("cross-validating", fold, splitter.n_splits)
        torch.manual_seed(seed)
        fusion = build_zero_shot_model(config, engine.image_encoder, engine.text_encoder)
        rows = torch.from_numpy(train)
        train_targets = torch.from_numpy(targets[train])
        chosen = fit_linear_heads(fusion, PooledFeatures(*(getattr(pooled, f.name)[rows] for f in fields(pooled))),
                                  train_targets, balanced_class_weights(train_targets, len(config.labels)),
                                  candidates=None if chosen is None else [chosen])
        for start, batch in zip(range(0, len(held_out), READ_BATCH), feature_batches(files, held_out)):
            logits = predict_logits(HeadsOnFeatures(fusion), batch, "cpu")
            for head in HEADS:
                out[head][held_out[start:start + READ_BATCH]] = logits[head].softmax(-1).numpy()
    return out


def rank_label_issues(item_ids: list[int], targets: np.ndarray, labels: list[str],
                      probabilities: dict[str, np.ndarray]) -> list[LabelIssue]:
    """Every item, most suspect first: flagged ones (cleanlab's find_label_issues on the fused
    probabilities), then the rest, each group by rising label quality."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    fused = probabilities["fused"]
    quality = get_label_quality_scores(targets, fused, method="self_confidence")
    flagged = find_label_issues(targets, fused, filter_by="prune_by_noise_rate")
    issues = [LabelIssue(item_id, labels[targets[n]], labels[int(fused[n].argmax())], float(quality[n]),
                         bool(flagged[n]), {h: labels[int(probabilities[h][n].argmax())] for h in HEADS})
              for n, item_id in enumerate(item_ids)]
    return sorted(issues, key=lambda issue: (not issue.flagged, issue.quality))


def labeled_features(settings, store, project, progress=None):
    """The project's labeled items with their label indices and cached feature files (encoded now
    where missing). -> (examples, targets (N,), files, engine)"""
    examples = labeled_examples(store, project.name)
    targets = np.array([project.label_names.index(label) for label in examples.labels], dtype=np.int64)
    engine = get_engine(settings)
    files = cache_features(engine, project.directory / "features", examples.paths, examples.texts,
                           (lambda done, total: progress("encoding", done, total)) if progress else None)
    return examples, targets, files, engine


def find_label_issues(settings, store, project_name: str, progress=None) -> dict:
    """Check every labeled item's label: ranked by how likely it is wrong, kept on the items (the
    Review queue's "likely mislabeled" order, the Dataset page's filter and column), and returned."""
    project = store.project(project_name)
    started = time.perf_counter()
    examples, targets, files, engine = labeled_features(settings, store, project, progress)
    encoded = time.perf_counter()
    probabilities = out_of_fold_probabilities(engine, ModelConfig(project.label_names, project.labels), files, targets,
                                              progress=progress)
    ranked = rank_label_issues(examples.ids, targets, project.label_names, probabilities)
    saved = store.save_label_checks(project_name, [i.to_dict() for i in ranked])
    return {"project": project_name, "items": len(ranked), "flagged": sum(i.flagged for i in ranked),
            "saved": saved, "encode_s": round(encoded - started, 1), "rank_s": round(time.perf_counter() - encoded, 1),
            "issues": [i.to_dict() for i in ranked]}
