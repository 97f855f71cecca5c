"""Honest confidence: temperatures fitted on a validation split never claim more certainty than
its size supports (Laplace's rule of succession), and every ECE says how many items it rests on."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from fusion.ml.evaluation import TEMPERATURE_RANGE, expected_calibration_error, fit_temperature, scores
from fusion.ml.metrics import ECE_MIN_ITEMS, HeadScores
from fusion.ml.registry import get_version
from fusion.store.labeling import open_store

GRID_STEP = math.exp(0.05)     # fit_temperature's grid: a bound is within a step of its ends


def separable(n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits a model gets all right with wide margins: the true class 4-10 above the rest (+-1)."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, k, (n,), generator=g)
    logits = (torch.rand(n, k, generator=g) - 0.5) * 2
    logits[torch.arange(n), targets] += 4 + 6 * torch.rand(n, generator=g)
    return logits, targets


@pytest.mark.parametrize("n,k", [(68, 6), (20, 2), (500, 4)])
def test_a_split_the_model_gets_all_right_does_not_sharpen_it(n, k):
    logits, targets = separable(n, k)
    assert (logits.argmax(1) == targets).all()
    t = fit_temperature(logits, targets)
    lo, hi = TEMPERATURE_RANGE
    assert lo * GRID_STEP < t < hi / GRID_STEP, t                # interior, not the grid's bound
    confidence = (logits / t).softmax(-1).max(1).values.mean().item()
    laplace = (n + 1) / (n + 2)
    assert confidence <= laplace + 0.002, (t, confidence, laplace)
    assert confidence >= laplace - 0.05, (t, confidence, laplace)   # ...and not needlessly timid


def test_noisy_logits_recover_the_temperature_they_were_drawn_at():
    """Labels drawn from softmax(z / 2.5): the plain NLL optimum is near 2.5, and with 3000 items
    Laplace's smoothing moves the fit by well under 2% of it."""
    g = torch.Generator().manual_seed(1)
    n, k, true_t = 3000, 5, 2.5
    logits = 3 * torch.randn(n, k, generator=g)
    targets = torch.multinomial((logits / true_t).softmax(-1), 1, generator=g).squeeze(1)
    t = fit_temperature(logits, targets)
    grid = torch.linspace(math.log(1), math.log(6), 1001).exp()
    plain = float(grid[int(torch.stack([torch.nn.functional.cross_entropy(logits / s, targets)
                                        for s in grid]).argmin())])
    assert abs(plain - true_t) < 0.25, plain
    assert t == pytest.approx(plain, rel=0.02), (t, plain)


def test_logits_no_better_than_chance_end_at_the_widened_bound_with_a_warning():
    g = torch.Generator().manual_seed(2)
    logits, targets = torch.randn(200, 3, generator=g), torch.randint(0, 3, (200,), generator=g)
    wrong = logits.clone()
    wrong[torch.arange(200), targets] -= 3                       # confidently wrong everywhere
    with pytest.warns(RuntimeWarning, match="temperature not fitted"):
        t = fit_temperature(wrong, targets)
    assert t > 1000                                              # as near uniform as the search goes


def test_scores_carry_what_the_ece_rests_on():
    probs = np.array([[0.97, 0.03]] * 40 + [[0.6, 0.4]] * 32)
    targets = np.zeros(72, dtype=int)
    s = scores(probs, targets, ["a", "b"])
    assert s.ece == pytest.approx(expected_calibration_error(probs, targets), abs=1e-4)
    assert (s.ece_items, s.ece_bins, s.ece_enough_items) == (72, 2, False)
    assert [b.count for b in s.reliability] == [32, 40]
    assert s.describe_ece() == f"ECE {s.ece:.3f} (72 items, 2 bins; too few items to trust)"
    many = scores(np.tile(probs, (2, 1)), np.zeros(144, dtype=int), ["a", "b"])
    assert many.ece_enough_items and ECE_MIN_ITEMS <= 144
    assert many.describe_ece(prefix="") == f"{many.ece:.3f} (144 items, 2 bins)"
    # registry rows as JSON: the same back; rows older than the counts get them from their
    # reliability bins, else they are unknown
    assert HeadScores.from_json(s.to_json()) == s
    old = {k: v for k, v in s.to_json().items() if not k.startswith("ece_")}
    assert HeadScores.from_json(old) == s
    assert HeadScores.from_json({"ece": 0.0123}).describe_ece() == "ECE 0.012 (item count unknown)"
    assert HeadScores.from_json({}).describe_ece() == "ECE unknown"


def test_a_head_trained_on_a_separable_set_is_not_certain(settings, demo_project):
    """The issue's case end to end: the demo baseline, trained by the session's demo fixture
    (train_version with the default config, as the app does) on pages separable by construction
    (68 validation, 79 test items), gets its validation split all right. Its mean test confidence
    stays within Laplace's (n + 1) / (n + 2) for the validation split (0.986) and so below 0.99,
    and its ECE is no more than a perfectly calibrated model's with the same confidences shows by
    chance 19 times in 20 (simulated; at 79 items that is several hundredths, ECE_MIN_ITEMS's
    comment), or 0.05. The registry says the ECE rests on fewer items than it can support.
    Measured: T 4.34, mean confidence 0.971, ECE 0.029 (79 items, 3 bins) on one CPU; T 7.78,
    confidence 0.949, accuracy 0.987, ECE 0.053 (6 bins) on another, where chance alone gives a
    median 0.043 and a 95th percentile 0.068. Before, T sat at the grid's bound 0.08 with
    confidence 1.000 in one bin and ECE 0.000."""
    metrics = get_version(open_store(settings), demo_project.name, "v1").metrics
    fused = metrics.test["fused"]
    assert fused.ece_items is not None, "a FUSION_TEST_HOME built before honest calibration: delete it to rebuild the demo"
    n_val, n_test = metrics.counts["val"], metrics.counts["test"]
    stored = json.loads((demo_project.model_dir("v1") / "test_predictions.json").read_text())
    confidence = float(np.array(stored["probs"]["fused"]).max(1).mean())
    t = metrics.temperatures["fused"]
    print(f"fused T {t}, val {n_val} items, test {n_test} items, accuracy {fused.accuracy:.3f}, "
          f"mean confidence {confidence:.4f} (Laplace {(n_val + 1) / (n_val + 2):.4f}), {fused.describe_ece()}")
    assert fused.accuracy >= 0.95                               # separable: the head learned it
    assert TEMPERATURE_RANGE[0] * GRID_STEP < t < TEMPERATURE_RANGE[1] / GRID_STEP
    assert confidence <= (n_val + 1) / (n_val + 2) + 0.002 and confidence < 0.99
    probs = np.array(stored["probs"]["fused"])
    top, rng = probs.argmax(1), np.random.default_rng(0)
    by_chance = [expected_calibration_error(probs, np.where(rng.random(len(probs)) < probs.max(1), top,
                                                            (top + 1) % probs.shape[1])) for _ in range(2000)]
    assert fused.ece <= max(0.05, float(np.quantile(by_chance, 0.95))), np.quantile(by_chance, [0.5, 0.95])
    assert fused.ece_items == n_test and sum(b.count for b in fused.reliability) == n_test
    assert fused.ece_enough_items == (n_test >= ECE_MIN_ITEMS)
    assert fused.describe_ece().endswith("; too few items to trust)") == (n_test < ECE_MIN_ITEMS)


def test_the_pages_show_what_an_ece_rests_on(settings, demo_project):
    """Evaluate and Train show the demo's ECE with its item and bin counts and, under
    ECE_MIN_ITEMS items, say it is too few to trust; the reliability bars carry their counts."""
    from helpers import started

    fused = get_version(open_store(settings), demo_project.name, "v1").metrics.test["fused"]
    shown = fused.describe_ece(prefix="")
    app = started(demo_project)
    app.switch_page("pages/evaluate.py").run()
    assert not app.exception, app.exception
    headline = app.dataframe[0].value
    assert headline["ECE"].iloc[0] == shown and f"{fused.ece_items} items" in shown
    reliability = app.get("plotly_chart")[1].proto.spec
    assert fused.describe_ece() in reliability and all(f"n={b.count}" in reliability for b in fused.reliability)
    warned = any(f"fewer than {ECE_MIN_ITEMS} test items" in c.value for c in app.caption)
    assert warned == (not fused.ece_enough_items)

    app.switch_page("pages/train.py").run()
    assert not app.exception, app.exception
    versions = next(d.value for d in app.dataframe if "ECE" in d.value.columns)
    assert versions.set_index("version").loc["v1", "ECE"] == shown
