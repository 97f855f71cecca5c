"""Linear probing of the heads before any gradient steps (LP-FT: Kumar et al. 2022, "Fine-Tuning
can Distort Pretrained Features and Underperform Out-of-Distribution").

On pooled features of the training set:
1. the image-only and text-only heads' linear parts (residual layer and the weight of the
   zero-shot prior, which counts as one more feature) are fitted to the optimum of a convex
   objective, class-weighted cross-entropy + L2, by full-batch L-BFGS, as a logistic
   regression would be. Each head's L2 strength, and how much its prior may keep its vote (its
   weight penalised like any feature's, or all but switched off), are chosen by 3-fold
   cross-validation on the training items (out-of-fold cross-entropy): on 90
   real pages the zero-shot text prior fitted the training pages but misled on new ones
   (text head 0.956 with it, 0.982 without), while with one or two labeled pages a class the
   prior is most of what there is;
2. the fused head's weights of the two (fusion_weights) are fitted by stacking: on the heads'
   out-of-fold logits (cross-fitted), so a head that fits its training items better than it
   predicts new ones does not get more of the vote than it has earned.
Training then fine-tunes from there, keeping only what lowers the validation loss.

Why (measured on 90 real pages, step 7): trained from zero with Adam, the text head moved
~0.03 logits a step against a zero-shot prior spread over ~3 logits, and early stopping ended
runs after ~20 steps: the text head stayed near zero-shot (0.46) where a logistic regression on
the same features scored 1.0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from fusion.ml.encoders import mean_pool
from fusion.ml.model import FusionModel

# Penalty per training item on the squared weights of standardised features (unit length on
# average): 0.5 is scikit-learn's default C = 1. Each head picks its own by cross-validation.
L2_CHOICES = (0.005, 0.05, 0.5)
DEFAULT_L2 = 0.5      # where cross-validation can't run (a class with one training item)
PRIOR_PENALTIES = (1.0, 1e4)   # times L2 on a prior's weight: a feature like any other, or all but off
MAX_ITERATIONS = 300
FOLDS = 3             # at most; fewer when a class has fewer training items
CV_ITEMS = 2000       # cross-validation on a seeded sample of a larger training set


def balanced_class_weights(targets: torch.Tensor, k: int) -> torch.Tensor:
    """(K,) weights that give every class the same total weight (a missing class weighs 1)."""
    counts = torch.bincount(targets, minlength=k).float()
    return counts.sum() / (k * counts.clamp(min=1))


def _lbfgs(params: list[torch.Tensor], objective) -> None:
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=MAX_ITERATIONS, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)


def _spread(logits: torch.Tensor) -> torch.Tensor:
    """Root-mean-square length of the centred rows (N, K): a prior's scale, as a feature's."""
    return (logits - logits.mean(0)).norm(dim=1).pow(2).mean().sqrt().clamp(min=1e-6)


@dataclass
class PooledFeatures:
    """A training set as the linear parts see it (all on the model's device)."""
    image: torch.Tensor          # (N, 1280) pooled image features
    text: torch.Tensor           # (N, 384) pooled text features
    image_prior: torch.Tensor    # (N, K) zero-shot image logits
    text_prior: torch.Tensor     # (N, K) zero-shot text logits


@torch.no_grad()
def pooled_features(fusion: FusionModel, batches) -> PooledFeatures:
    """From (patches, tokens, mask, image_present, lines) batches: only pooled vectors and priors
    are kept, so a large training set never holds its token states all at once."""
    parts = []
    for patches, tokens, mask, _, lines in batches:
        image = patches.float().mean(1)
        parts.append((image, mean_pool(tokens.float(), mask), fusion.image_prior(image),
                      fusion.text_prior(tokens.float(), mask, None if lines is None else lines.float())))
    return PooledFeatures(*(torch.cat(column) for column in zip(*parts)))


class _Heads:
    """The image and text heads' linear parts over standardised features, computed once."""

    def __init__(self, fusion: FusionModel, features: PooledFeatures, targets: torch.Tensor, class_weights):
        self.fusion, self.targets, self.class_weights = fusion, targets, class_weights
        with torch.no_grad():
            self.image_z, self.text_z = fusion.standardised(features.image, features.text)
        self.priors = (features.image_prior, features.text_prior)
        self.prior_scales = torch.stack([_spread(p) for p in self.priors])
        self.params = [fusion.prior_weights] + [p for h in (fusion.image_head, fusion.text_head) for p in h.parameters()]

    def logits(self, rows=slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.fusion
        w_image, w_text = f.prior_weights
        return (w_image * self.priors[0][rows] + f.image_head(self.image_z[rows]),
                w_text * self.priors[1][rows] + f.text_head(self.text_z[rows]))

    def fit(self, rows: torch.Tensor, setting: torch.Tensor) -> None:
        """setting (2 heads, 2): each head's L2 and its prior's penalty (times that L2)."""
        f, targets = self.fusion, self.targets[rows]
        _, wi, wt = f.config.loss_weights
        l2, prior = setting[:, 0] / len(targets), setting[:, 1]

        def objective() -> torch.Tensor:
            image_logits, text_logits = self.logits(rows)
            squares = torch.stack([(f.image_head.weight ** 2).sum(), (f.text_head.weight ** 2).sum()])
            return (wi * F.cross_entropy(image_logits, targets, weight=self.class_weights)
                    + wt * F.cross_entropy(text_logits, targets, weight=self.class_weights)
                    + (l2 * (squares + prior * (f.prior_weights * self.prior_scales) ** 2)).sum())

        _lbfgs(self.params, objective)

    def out_of_fold(self, rows: torch.Tensor, folds: torch.Tensor, setting: torch.Tensor):
        """Each of `rows`' image and text logits from heads fitted without its fold."""
        saved = [p.detach().clone() for p in self.params]
        image, text = torch.empty_like(self.priors[0][rows]), torch.empty_like(self.priors[1][rows])
        for fold in folds.unique():
            held = (folds == fold).nonzero().squeeze(1)
            self.fit(rows[folds != fold], setting)
            with torch.no_grad():
                image[held], text[held] = self.logits(rows[held])
                for p, value in zip(self.params, saved):
                    p.copy_(value)
        return image, text


def stratified_folds(targets: torch.Tensor) -> torch.Tensor | None:
    """A stratified fold number per item; None when a class has fewer than two items."""
    counts = torch.bincount(targets)
    folds = min(FOLDS, int(counts[counts > 0].min()))
    if folds < 2:
        return None
    generator = torch.Generator().manual_seed(0)
    fold_of = torch.empty(len(targets), dtype=torch.long)
    for label in targets.unique():
        members = (targets == label).nonzero().squeeze(1).cpu()
        members = members[torch.randperm(len(members), generator=generator)]
        fold_of[members] = torch.arange(len(members)) % folds
    return fold_of.to(targets.device)


def _settings(device) -> list[torch.Tensor]:
    """Every (L2, prior penalty) candidate, the same for both heads: (2, 2) each."""
    return [torch.tensor([[l2, prior]] * 2, device=device) for l2 in L2_CHOICES for prior in PRIOR_PENALTIES]


def priors_off(device) -> list[torch.Tensor]:
    """The candidates with both priors all but switched off: for pages the zero-shot chose and
    labeled, on which cross-validation would find the priors right because they picked them."""
    return [torch.tensor([[l2, PRIOR_PENALTIES[-1]]] * 2, device=device) for l2 in L2_CHOICES]


def fit_linear_heads(fusion: FusionModel, features: PooledFeatures, targets: torch.Tensor,
                     class_weights: torch.Tensor | None = None,
                     candidates: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Set the standardisation to these features, then fit image_head, text_head, prior_weights and
    fusion_weights in place. targets (N,) on the model's device. Each head's (L2, prior penalty)
    is chosen among `candidates` (default: every setting) by cross-validation; returns the chosen
    ones, (2, 2), for fits of the same kind of data to reuse as their only candidate."""
    fusion.standardise(features.image, features.text)
    was_training = fusion.training
    fusion.eval()                                     # no dropout: a deterministic objective
    heads = _Heads(fusion, features, targets, class_weights)
    rows = torch.arange(len(targets), device=targets.device)
    if len(rows) > CV_ITEMS:
        rows = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))[:CV_ITEMS].to(rows.device)]
    folds = stratified_folds(targets[rows])
    chosen = torch.tensor([[DEFAULT_L2, PRIOR_PENALTIES[0]]] * 2, device=targets.device)
    if folds is not None:
        candidates = _settings(targets.device) if candidates is None else candidates
        held_out = [heads.out_of_fold(rows, folds, c) for c in candidates]
        loss = torch.tensor([[F.cross_entropy(logits, targets[rows], weight=class_weights) for logits in pair]
                             for pair in held_out])                             # (candidates, 2 heads)
        best = loss.argmin(0).tolist()                                           # per head
        chosen = torch.stack([candidates[best[h]][h] for h in range(2)])
        image_oof, text_oof = held_out[best[0]][0], held_out[best[1]][1]
    heads.fit(rows.new_tensor(range(len(targets))), chosen)
    if folds is not None:
        # Stacking on held-out logits; penalised, since separable folds have no finite optimum.
        scales = torch.stack([_spread(image_oof), _spread(text_oof)])
        _lbfgs([fusion.fusion_weights], lambda: F.cross_entropy(
            fusion.fusion_weights[0] * image_oof + fusion.fusion_weights[1] * text_oof, targets[rows],
            weight=class_weights) + DEFAULT_L2 / len(rows) * ((fusion.fusion_weights * scales) ** 2).sum())
    fusion.train(was_training)
    return chosen


ANGLES = 21   # the image prior's share of the fused zero-shot's vote, from none to all, in steps


def weigh_zero_shot_votes(fusion: FusionModel, features: PooledFeatures, targets: torch.Tensor) -> None:
    """The zero-shot model's two priors weighted in the fused opinion by what they carry on a
    project's labeled items. Only fusion_weights move (two numbers): their ratio is the one of ANGLES mixes (all image ...
    all text) that classifies the items best (ties: lower cross-entropy), so the fused zero-shot
    does at least as well on them as the better prior alone; their scale is then fitted to the
    cross-entropy, so its confidence is calibrated. (Fitted to the cross-entropy alone, the ratio
    gave the text prior a vote that cost accuracy: fused 0.48 against the image prior's 0.58 on
    90 real pages.) The image-only and text-only opinions stay as they are."""
    image, text = features.image_prior, features.text_prior
    angles = torch.linspace(0, torch.pi / 2, ANGLES, device=image.device)
    best = None
    for angle in angles:
        mixed = torch.cos(angle) * image + torch.sin(angle) * text
        key = (-float((mixed.argmax(-1) == targets).float().mean()), float(F.cross_entropy(mixed, targets)))
        if best is None or key < best[0]:
            best = (key, angle)
    direction = torch.stack([torch.cos(best[1]), torch.sin(best[1])])
    mixed = direction[0] * image + direction[1] * text
    scale = torch.ones((), device=image.device, requires_grad=True)
    _lbfgs([scale], lambda: F.cross_entropy(scale * mixed, targets) + DEFAULT_L2 / len(targets) * (scale * _spread(mixed)) ** 2)
    with torch.no_grad():
        fusion.fusion_weights.copy_(scale.clamp(min=0.0) * direction)


def logistic_probes(image: np.ndarray, text: np.ndarray, targets: np.ndarray, train: np.ndarray,
                    test: np.ndarray) -> dict[str, float] | None:
    """The baseline trained heads are held to: test accuracy of scikit-learn logistic regressions
    (defaults) on the pooled image, pooled text and concatenated features (N, D) of the training
    items. None when a class has fewer than two training items."""
    from sklearn.linear_model import LogisticRegression

    counts = np.bincount(targets[train])
    if len(np.unique(targets[train])) < 2 or counts[counts > 0].min() < 2:
        return None
    found = {}
    for name, x in (("image", image), ("text", text), ("concat", np.concatenate([image, text], 1))):
        probe = LogisticRegression(max_iter=5000).fit(x[train], targets[train])
        found[name] = round(float(probe.score(x[test], targets[test])), 4)
    return found
