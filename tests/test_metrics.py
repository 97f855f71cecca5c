"""The typed records of training (fusion.ml.metrics) and progress (fusion.core.progress): they
read back what they write, in the JSON shape the registry and job rows kept before they were typed,
and rows saved earlier read back with unknown fields left unknown. No demo build needed."""
from __future__ import annotations

import json

import numpy as np

from fusion.core.progress import Progress, stage_progress
from fusion.ml.evaluation import scores
from fusion.ml.metrics import EpochRecord, HeadScores, VersionMetrics
from fusion.ml.registry import beats_active

LABELS = ["form", "receipt", "invoice"]


def head(accuracy: float) -> HeadScores:
    """Scores of a head that gets `accuracy` of 100 items right, each with confidence 0.8."""
    right = int(accuracy * 100)
    targets = np.arange(100) % 3
    guesses = np.where(np.arange(100) < right, targets, (targets + 1) % 3)
    probs = np.full((100, 3), 0.1)
    probs[np.arange(100), guesses] = 0.8
    return scores(probs, targets, LABELS)


def version_metrics() -> VersionMetrics:
    epoch = EpochRecord(epoch=1, loss=0.9, val_loss=0.8, seconds=1.5, samples_per_s=40.0,
                        val={h: HeadScores(accuracy=0.5, macro_f1=0.4) for h in ("fused", "image", "text")})
    return VersionMetrics(test={"fused": head(0.9), "image": head(0.7), "text": head(0.8)},
                          zero_shot_test={"fused": head(0.5)}, counts={"train": 70, "val": 15, "test": 100},
                          parent_version="v1", parent_test={"fused": head(0.85)}, probe_test={"concat": 0.9},
                          temperatures={"fused": 1.3}, epochs_run=1, history=[epoch], device="cpu", world_size=1,
                          seconds={"prepare": 1.0, "train": 2.0})


def test_version_metrics_read_back_what_they_write_in_the_registrys_json_shape():
    metrics = version_metrics()
    stored = json.loads(json.dumps(metrics.to_json()))
    assert VersionMetrics.from_json(stored) == metrics
    assert stored["parent_test"]["version"] == "v1" and stored["parent_test"]["fused"]["accuracy"] == 0.85
    assert stored["test"]["fused"]["per_class"]["receipt"]["support"] == 33
    assert stored["history"][0]["val"]["fused"] == {"accuracy": 0.5, "macro_f1": 0.4}
    assert metrics.score("fused", "accuracy") == 0.9 and metrics.score("missing") is None


def test_a_row_saved_before_the_types_reads_back_with_unknowns_left_unknown():
    old = {"test": {"fused": {"accuracy": 0.9, "macro_f1": 0.88, "ece": 0.05,
                              "reliability": [{"lo": 0.8, "hi": 0.8667, "count": 72, "confidence": 0.83,
                                               "accuracy": 0.9}]}},
           "zero_shot_test": {"fused": {"accuracy": 0.4, "macro_f1": 0.3}}}
    metrics = VersionMetrics.from_json(old)
    fused = metrics.test["fused"]
    assert (fused.ece_items, fused.ece_bins, fused.ece_enough_items) == (72, 1, False)   # from its bins
    assert metrics.zero_shot_test["fused"].ece_items is None and metrics.parent_test is None
    assert metrics.ood is None and metrics.history == [] and metrics.counts == {}
    assert fused.describe_ece() == "ECE 0.050 (72 items, 1 bin; too few items to trust)"
    assert VersionMetrics.from_json(None).test == {}


def test_auto_promotion_compares_with_the_parent_or_else_zero_shot():
    metrics = version_metrics()                      # fused 0.9 against the parent's 0.85
    assert beats_active(metrics)
    worse = VersionMetrics(test={"fused": head(0.8)}, zero_shot_test={"fused": head(0.5)},
                           parent_version="v1", parent_test={"fused": head(0.85)})
    assert not beats_active(worse)
    first = VersionMetrics(test={"fused": head(0.8)}, zero_shot_test={"fused": head(0.5)})
    assert beats_active(first)


def test_progress_keeps_what_was_said_and_drops_the_epoch_record_from_its_json():
    record = version_metrics().history[0]
    p = Progress("epoch", epoch=2, epochs=10, step=8, steps=8, loss=0.5, ended_epoch=record)
    assert p.to_json() == {"stage": "epoch", "step": 8, "steps": 8, "epoch": 2, "epochs": 10, "loss": 0.5}
    assert Progress.from_json(p.to_json()) == p                  # the epoch record is not compared
    assert Progress.from_json(None) is None and Progress.from_json({}) is None
    assert Progress.from_json({"stage": "training", "unknown_field": 1}) == Progress("training")
    assert Progress("encoding", step=3, steps=4).fraction() == 0.75
    assert Progress("encoding", step=9, steps=4).fraction() == 1.0 and Progress("preparing").fraction() is None
    seen = []
    stage_progress(seen.append)("importing", 5, 20)
    assert seen == [Progress("importing", step=5, steps=20)]
