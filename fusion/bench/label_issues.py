"""`python -m fusion bench label-issues --json`: the demo project with a known share of its labels
flipped (seeded), ranked by fusion.ml.label_issues: how many of the flipped items are among the
top-ranked ones (as many as were flipped), how many cleanlab flags, and the time."""
from __future__ import annotations

import time

import numpy as np

from fusion.core.settings import Settings

FLIPPED_SHARE = 0.10


def bench_label_issues(settings: Settings, share: float = FLIPPED_SHARE, seed: int = 0) -> dict:
    from fusion.ml.features import cache_features, load_feature_set
    from fusion.ml.label_issues import out_of_fold_probabilities, rank_label_issues
    from fusion.ml.model import ModelConfig
    from fusion.ml.pipeline import get_engine
    from fusion.ml.training_data import labeled_examples
    from fusion.store.labeling import open_store

    store = open_store(settings)
    project = store.project(settings.demo_project)
    examples = labeled_examples(store, project.name)
    labels = project.label_names
    truth = np.array([labels.index(label) for label in examples.labels])
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(truth), int(round(share * len(truth))), replace=False)
    noisy = truth.copy()
    for n in flipped:           # another label, at random
        noisy[n] = rng.choice([k for k in range(len(labels)) if k != truth[n]])
    engine = get_engine(settings)
    files = cache_features(engine, project.directory / "features", examples.paths, examples.texts)
    features = load_feature_set(files, noisy.tolist())
    start = time.perf_counter()
    ranked = rank_label_issues(examples.ids, noisy, labels,
                               out_of_fold_probabilities(engine, ModelConfig(labels, project.labels), features))
    seconds = time.perf_counter() - start
    wrong = {examples.ids[n] for n in flipped}
    top = {issue.item_id for issue in ranked[:len(wrong)]}
    flagged = {issue.item_id for issue in ranked if issue.flagged}
    return {"project": project.name, "items": len(truth), "flipped": len(wrong), "seed": seed,
            "top_ranked": {"items": len(top), "precision": round(len(top & wrong) / max(len(top), 1), 3),
                           "recall": round(len(top & wrong) / max(len(wrong), 1), 3)},
            "flagged": {"items": len(flagged), "precision": round(len(flagged & wrong) / max(len(flagged), 1), 3),
                        "recall": round(len(flagged & wrong) / max(len(wrong), 1), 3)},
            "seconds": round(seconds, 1), "device": engine.device_name}
