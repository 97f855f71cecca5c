"""Scores of a classifier's probabilities against the true labels, and temperature scaling.

`scores` is what the registry stores for every head of every version: accuracy, macro-F1,
per-class precision/recall/F1, the confusion matrix and the expected calibration error.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

ECE_BINS = 15


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == targets
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def reliability(probs: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Per confidence bin: its range, item count, mean confidence and accuracy (for a diagram)."""
    confidence, correct = probs.max(1), probs.argmax(1) == targets
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            rows.append({"lo": round(float(lo), 4), "hi": round(float(hi), 4), "count": int(in_bin.sum()),
                         "confidence": round(float(confidence[in_bin].mean()), 4),
                         "accuracy": round(float(correct[in_bin].mean()), 4)})
    return rows


def scores(probs: np.ndarray, targets: np.ndarray, labels: list[str]) -> dict:
    """probs (N, K), targets (N,) label indices."""
    k = len(labels)
    pred = probs.argmax(1)
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, pred, labels=np.arange(k), zero_division=0)
    return {
        "accuracy": round(float(accuracy_score(targets, pred)), 4),
        # over the labels that occur (in truth or prediction): an absent label has no F1 to average
        "macro_f1": round(float(f1_score(targets, pred, average="macro", zero_division=0)), 4),
        "ece": round(expected_calibration_error(probs, targets), 4),
        "per_class": {name: {"precision": round(float(p), 4), "recall": round(float(r), 4),
                             "f1": round(float(f), 4), "support": int(s)}
                      for name, p, r, f, s in zip(labels, precision, recall, f1, support)},
        "confusion": confusion_matrix(targets, pred, labels=np.arange(k)).tolist(),  # rows: true, cols: predicted
        "reliability": reliability(probs, targets),
    }


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The T > 0 minimising the NLL of softmax(logits / T) (Guo et al. 2017), on held-out data.
    A 1-D search over log T: NLL is smooth and unimodal there, and this never diverges."""
    logits, targets = logits.detach().float(), targets.detach()
    grid = torch.linspace(-2.5, 2.5, 101).exp()           # T from 0.08 to 12
    nll = torch.stack([torch.nn.functional.cross_entropy(logits / t, targets) for t in grid])
    best = int(nll.argmin())
    lo, hi = grid[max(best - 1, 0)].log(), grid[min(best + 1, len(grid) - 1)].log()
    fine = torch.linspace(float(lo), float(hi), 41).exp()  # refine between the neighbours
    nll = torch.stack([torch.nn.functional.cross_entropy(logits / t, targets) for t in fine])
    return round(float(fine[int(nll.argmin())]), 4)
