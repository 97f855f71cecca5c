"""What the Evaluate page shows about a model version, from what training stored: its
per-test-item probabilities (models/<version>/test_predictions.json) and its registry row."""
from __future__ import annotations

import json
from dataclasses import dataclass

from fusion.core.project import Project
from fusion.ml.metrics import HeadScores, Heads
from fusion.ml.registry import ModelVersion
from fusion.ml.model import HEADS


@dataclass
class TestPrediction:
    item_id: int
    truth: str
    predicted: str
    confidence: float
    probs: dict[str, dict[str, float]]     # head -> label -> probability


def test_predictions(store, project: Project, version: str) -> list[TestPrediction]:
    """Each test item's probabilities from every head, with its current label as the truth."""
    path = project.model_dir(version) / "test_predictions.json"
    if not path.is_file():
        return []
    stored = json.loads(path.read_text())
    labels = stored["labels"]
    truth = store.labels_of(project.name, stored["item_ids"])
    found = []
    for n, item_id in enumerate(stored["item_ids"]):
        if item_id not in truth:
            continue
        probs = {h: dict(zip(labels, stored["probs"][h][n])) for h in HEADS}
        predicted = max(probs["fused"], key=probs["fused"].get)
        found.append(TestPrediction(item_id, truth[item_id], predicted, probs["fused"][predicted], probs))
    return found


def in_cell(predictions: list[TestPrediction], truth: str, predicted: str) -> list[TestPrediction]:
    return [p for p in predictions if p.truth == truth and p.predicted == predicted]


def errors(predictions: list[TestPrediction]) -> list[TestPrediction]:
    """Misclassified test items, the most confidently wrong first."""
    return sorted((p for p in predictions if p.truth != p.predicted), key=lambda p: -p.confidence)


def changed(a: list[TestPrediction], b: list[TestPrediction]) -> list[tuple[TestPrediction, TestPrediction]]:
    """Test items both versions predicted, whose fused prediction differs."""
    other = {p.item_id: p for p in b}
    return [(p, other[p.item_id]) for p in a if p.item_id in other and other[p.item_id].predicted != p.predicted]


def scores_on_shared(a: list[TestPrediction], b: list[TestPrediction], heads) -> tuple[int, Heads, Heads]:
    """Two versions' test predictions scored on the items both predicted (their test splits
    differ once labels change): (how many, each head's accuracy and macro-F1 for a, the same for b)."""
    from sklearn.metrics import accuracy_score, f1_score

    shared = {p.item_id for p in a} & {p.item_id for p in b}

    def scores(predictions: list[TestPrediction]) -> Heads:
        mine = sorted((p for p in predictions if p.item_id in shared), key=lambda p: p.item_id)
        truth = [p.truth for p in mine]
        out = {}
        for head in heads:
            guess = [max(p.probs[head], key=p.probs[head].get) for p in mine]
            out[head] = HeadScores(accuracy=accuracy_score(truth, guess) if mine else None,
                                   macro_f1=f1_score(truth, guess, average="macro", zero_division=0) if mine else None)
        return out
    return len(shared), scores(a), scores(b)


ZERO_SHOT, TRAINED, PROBE = "zero-shot", "trained (fused)", "logistic probe (image + text)"


def learning_curve(found: list[ModelVersion]) -> list[dict]:
    """Test accuracy against the number of labeled training items: zero-shot (no labels: the
    newest version's test split), then each version's fused head and, for head-mode versions
    with at least two training items a class, a logistic regression on the same features."""
    points = []
    for v in found:
        items = v.metrics.counts.get("train")
        if items is None:
            continue
        points.append({"series": TRAINED, "version": v.version, "train_items": items,
                       "accuracy": v.score("fused", "accuracy"), "mode": v.params.get("mode")})
        probe = (v.metrics.probe_test or {}).get("concat")
        if probe is not None:
            points.append({"series": PROBE, "version": v.version, "train_items": items, "accuracy": probe,
                           "mode": "head"})
    newest = max(found, key=lambda v: v.created_at, default=None)
    zero = newest.metrics.zero_shot_test.get("fused", HeadScores()).accuracy if newest else None
    if zero is not None:
        points.append({"series": ZERO_SHOT, "version": "zero-shot", "train_items": 0, "accuracy": zero, "mode": None})
    return sorted(points, key=lambda p: (p["series"], p["train_items"]))
