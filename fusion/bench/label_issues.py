"""`python -m fusion bench label-issues --json`: the demo project with a known share of its labels
flipped (seeded), ranked by fusion.ml.label_issues: how many of the flipped items are among the
top-ranked ones (as many as were flipped), how many cleanlab flags, and the time."""
from __future__ import annotations

import time

import numpy as np

from fusion.core.settings import Settings

FLIPPED_SHARE = 0.10


def bench_label_issues(settings: Settings, share: float = FLIPPED_SHARE, seed: int = 0) -> dict:
    from fusion.ml.label_issues import labeled_features, out_of_fold_probabilities, rank_label_issues
    from fusion.ml.model import ModelConfig
    from fusion.store.labeling import open_store

    store = open_store(settings)
    project = store.project(settings.demo_project)
    examples, truth, files, engine = labeled_features(settings, store, project)
    labels = project.label_names
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(truth), int(round(share * len(truth))), replace=False)
    noisy = truth.copy()
    for n in flipped:           # another label, at random
        noisy[n] = rng.choice([k for k in range(len(labels)) if k != truth[n]])
    start = time.perf_counter()
    ranked = rank_label_issues(examples.ids, noisy, labels,
                               out_of_fold_probabilities(engine, ModelConfig(labels, project.labels), files, noisy))
    seconds = time.perf_counter() - start
    wrong = {examples.ids[n] for n in flipped}
    top = {issue.item_id for issue in ranked[:len(wrong)]}
    flagged = {issue.item_id for issue in ranked if issue.flagged}
    return {"project": project.name, "items": len(truth), "flipped": len(wrong), "seed": seed,
            "top_ranked": {"items": len(top), **_found(top, wrong)},
            "flagged": {"items": len(flagged), **_found(flagged, wrong)},
            "seconds": round(seconds, 1), "device": engine.device_name}


def _found(chosen: set, wrong: set) -> dict:
    return {"precision": round(len(chosen & wrong) / max(len(chosen), 1), 3),
            "recall": round(len(chosen & wrong) / max(len(wrong), 1), 3)}
