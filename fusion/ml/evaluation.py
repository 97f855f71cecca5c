"""Scores of a classifier's probabilities against the true labels, and temperature scaling.

`scores` is what the registry stores for every head of every version (fusion.ml.metrics.HeadScores):
accuracy, macro-F1, per-class precision/recall/F1, the confusion matrix and the expected
calibration error with what it rests on (items, occupied bins, each bin's count).
`fit_temperature` calibrates a head on the validation split without claiming more certainty
than that split's size supports.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from fusion.ml.metrics import ECE_MIN_ITEMS, ClassScores, HeadScores, ReliabilityBin

ECE_BINS = 15
TEMPERATURE_RANGE = (0.05, 20.0)     # fit_temperature's first grid
TEMPERATURE_LIMITS = (1e-4, 1e4)     # how far it widens the grid when the best T is at an end


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


def reliability(probs: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> list[ReliabilityBin]:
    """Per occupied confidence bin: its range, item count, mean confidence and accuracy (for a diagram)."""
    confidence, correct = probs.max(1), probs.argmax(1) == targets
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            rows.append(ReliabilityBin(lo=round(float(lo), 4), hi=round(float(hi), 4), count=int(in_bin.sum()),
                                       confidence=round(float(confidence[in_bin].mean()), 4),
                                       accuracy=round(float(correct[in_bin].mean()), 4)))
    return rows


def scores(probs: np.ndarray, targets: np.ndarray, labels: list[str]) -> HeadScores:
    """probs (N, K), targets (N,) label indices."""
    k = len(labels)
    pred = probs.argmax(1)
    bins = reliability(probs, targets)
    items = sum(b.count for b in bins)
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, pred, labels=np.arange(k), zero_division=0)
    return HeadScores(
        accuracy=round(float(accuracy_score(targets, pred)), 4),
        # over the labels that occur (in truth or prediction): an absent label has no F1 to average
        macro_f1=round(float(f1_score(targets, pred, average="macro", zero_division=0)), 4),
        ece=round(expected_calibration_error(probs, targets), 4),
        ece_items=items, ece_bins=len(bins), ece_enough_items=items >= ECE_MIN_ITEMS,
        per_class={name: ClassScores(precision=round(float(p), 4), recall=round(float(r), 4), f1=round(float(f), 4),
                                     support=int(n))
                   for name, p, r, f, n in zip(labels, precision, recall, f1, support)},
        confusion=confusion_matrix(targets, pred, labels=np.arange(k)).tolist(),
        reliability=bins)


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The T > 0 minimising the NLL of softmax(logits / T) on held-out data (Guo et al. 2017),
    against targets smoothed by Laplace's rule of succession.

    Plain NLL rewards a split the model gets all right with ever sharper probabilities: its
    optimum is T -> 0 (every confidence 1.000), which a finite grid turns into "T at the grid's
    bound" and the test split into an ECE of 0 that no one should believe. n validation items
    cannot support more certainty than Laplace's rule gives after n successes in n trials,
    (n + 1) / (n + 2). So the target of item i is (1 - eps) * onehot(y_i) + eps / K with
    eps = K / ((K - 1) (n + 2)): the true class gets exactly (n + 1) / (n + 2), each other class
    1 / ((K - 1) (n + 2)). When every item is right, the fitted top-class confidence is then at
    most about (n + 1) / (n + 2) (exactly so for one item: the optimum matches the target's
    expected logit, and softmax puts the missing mass on the nearest rivals); when the model
    makes real mistakes eps is small beside them and T stays near the plain NLL optimum.

    A 1-D search over log T (the loss is smooth and unimodal there, and a grid never diverges):
    T from 0.05 to 20, then refined between the best point's neighbours. With smoothing the
    optimum is interior; if the best point is still at an end (logits of a tiny scale, or ones
    no better than uniform on this split, where the loss falls all the way to T -> inf) the grid
    is widened that way up to T in [1e-4, 1e4], and a bound that is still best is returned
    with a warning instead of pretending it was fitted."""
    logits, targets = logits.detach().float(), targets.detach().long()
    n, k = logits.shape
    if n == 0 or k < 2:
        return 1.0                                       # nothing to fit: leave the head as trained
    eps = k / ((k - 1) * (n + 2))

    def loss(log_t: torch.Tensor) -> torch.Tensor:       # (G,) log temperatures -> (G,) smoothed NLL
        return torch.stack([torch.nn.functional.cross_entropy(logits / t, targets, label_smoothing=eps)
                            for t in log_t.exp()])

    lo, hi = math.log(TEMPERATURE_RANGE[0]), math.log(TEMPERATURE_RANGE[1])
    while True:
        grid = torch.linspace(lo, hi, int(round((hi - lo) / 0.05)) + 1)   # steps of 5% in T
        best = int(loss(grid).argmin())
        if 0 < best < len(grid) - 1:
            break
        if best == 0 and lo > math.log(TEMPERATURE_LIMITS[0]):
            lo = max(lo - 3.0, math.log(TEMPERATURE_LIMITS[0]))
        elif best == len(grid) - 1 and hi < math.log(TEMPERATURE_LIMITS[1]):
            hi = min(hi + 3.0, math.log(TEMPERATURE_LIMITS[1]))
        else:
            t = float(grid[best].exp())
            warnings.warn(f"temperature not fitted: the validation loss is lowest at T = {t:.4g}, the end of "
                          f"the search ({'logits of a tiny scale' if best == 0 else 'logits no better than uniform'}"
                          f" on these {n} items)", RuntimeWarning, stacklevel=2)
            return float(f"{t:.4g}")
    fine = torch.linspace(float(grid[best - 1]), float(grid[best + 1]), 41)   # refine between the neighbours
    return float(f"{float(fine[int(loss(fine).argmin())].exp()):.4g}")
