"""Zero-shot adapted to a project's own pages, with no one's labels (self-training).

The zero-shot model reads the project's pages; for each label, the pages it finds likeliest to be
that label, SHARE of an even share of the pages, become that label's examples (as UPL, Huang et
al. 2022, does with CLIP's zero-shot; a page among two labels' likeliest is left out), and the
image and text heads are fitted to them as linear probes (fusion.ml.probe.fit_linear_heads)
with the priors switched off: the priors made those labels, and kept as features they would only
say them again. No label a person gave is read; the test split's pages are never read either, so
its scores stay honest.

Why: the zero-shot priors read a page through label prompts (MiniLM) and ImageNet classes, while
the pages of a project are easily told apart by the encoders' own features (a logistic regression
on them scores 0.95-1.0 on 90 real pages). Pages the priors are surest of carry those features to
the rest. Measured on shared/eval/ocr's 90 pages (the project's OCR, one description a label,
5 seeded halves, adapted on one half, tested on the other): fused 0.68 -> 0.95 from one vote
each, with no label at all; 0.77 -> 0.96 with the priors' votes measured. Taking each label's
likeliest pages, not the surest of those zero-shot gives each label, matters: zero-shot gave
the forms fewer than 8 of 45 pages, and adapted from those it learned nothing (0.68 -> 0.68).
With the label names alone (no descriptions) it gains little: 0.56 -> 0.60.

A project with fewer than MIN_EXAMPLES / SHARE pages a label leaves the model as it was. Where
the project has labeled items outside its test split, they check the adapted model (it is kept
only if it scores at least as well on them as zero-shot as it was) and calibrate its confidence
(a temperature a head); without them its confidence is the probe's, not calibrated, and the
Train page says so.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from fusion.ml.features import FeatureSet, cache_features, load_feature_set
from fusion.ml.finetune import HeadsOnFeatures
from fusion.ml.inference import predict_logits
from fusion.ml.evaluation import fit_temperature
from fusion.ml.model import HEADS, FusionModel, ModelConfig
from fusion.ml.probe import balanced_class_weights, fit_linear_heads, pooled_features, priors_off, stratified_folds
from fusion.ml.training_data import Examples, sampled_rows
from fusion.ml.zeroshot import build_zero_shot_model, current_measurement, project_zero_shot_model

SHARE = 0.5        # of an even share of the pages, each label's likeliest: its examples
MIN_EXAMPLES = 4   # a label's examples at least
BATCH = 256


@dataclass
class Adaptation:
    model: FusionModel | None      # None: not adapted (why says why)
    pages: int                     # pages read
    per_label: dict[str, int] = field(default_factory=dict)   # each label's examples
    why: str = ""
    calibrated_on: int = 0         # labeled items its temperatures were fitted on

    def to_json(self) -> dict:
        return {"pages": self.pages, "per_label": self.per_label, "adapted": self.model is not None,
                "why": self.why, "calibrated_on": self.calibrated_on}


def likeliest_pages(probs: torch.Tensor, share: float = SHARE) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, labels): for each label, the round(share * N / K) rows of probs (N, K) likeliest to
    be it; a row among the likeliest of two labels is left out."""
    n = max(1, round(share * len(probs) / probs.shape[1]))
    top = probs.topk(min(n, len(probs)), dim=0).indices.T                       # (K, n)
    chosen = torch.zeros(probs.shape, dtype=torch.bool)
    chosen[top, torch.arange(probs.shape[1]).unsqueeze(1)] = True
    rows = (chosen.sum(1) == 1).nonzero().squeeze(1)
    return rows, chosen[rows].float().argmax(1)


def adapt_to_pages(model: FusionModel, pages: FeatureSet, device: str = "cpu") -> Adaptation:
    """A copy of the zero-shot `model` with its heads fitted to the pages it finds likeliest to be
    each label (their targets are not read); `model` itself is left as it is."""
    names = model.config.labels
    needed = round(MIN_EXAMPLES / SHARE) * len(names)
    if len(pages) < needed:
        return Adaptation(None, len(pages), why=f"it has {len(pages)} pages outside the test split whose text is "
                          f"read; adapting to {len(names)} labels needs {needed}")
    probs = predict_logits(HeadsOnFeatures(model), pages, device)["fused"].softmax(-1)
    rows, targets = likeliest_pages(probs)
    per_label = {name: int((targets == k).sum()) for k, name in enumerate(names)}
    short = [name for name, n in per_label.items() if n < 2]
    if short:
        return Adaptation(None, len(pages), per_label,
                          f"zero-shot's likeliest pages of {', '.join(short)} are as likely another label's")
    adapted = copy.deepcopy(model).to(device)
    _fit(adapted, pages.subset(rows), targets.to(device), device, priors_off(device))
    return Adaptation(adapted.eval(), len(pages), per_label)


def feature_batches(items: FeatureSet, device: str):
    """The items' inputs BATCH at a time, for pooled_features (a large set never on the device whole)."""
    return (items.subset(torch.arange(i, min(i + BATCH, len(items)))).inputs(device) for i in range(0, len(items), BATCH))


def _fit(model: FusionModel, items: FeatureSet, targets: torch.Tensor, device: str, candidates=None) -> None:
    fit_linear_heads(model, pooled_features(model, feature_batches(items, device)), targets,
                     balanced_class_weights(targets, len(model.config.labels)), candidates)


def probe_opinion(zero_shot: FusionModel, labeled: FeatureSet, pages: FeatureSet, device: str = "cpu") -> torch.Tensor:
    """(N, K) fused probabilities of `pages` by a copy of `zero_shot` probed on `labeled` alone."""
    probe = copy.deepcopy(zero_shot).to(device)
    _fit(probe, labeled, labeled.targets.to(device), device)
    return predict_logits(HeadsOnFeatures(probe.eval()), pages, device)["fused"].softmax(-1)


def probe_accuracy(zero_shot: FusionModel, labeled: FeatureSet, device: str = "cpu") -> float:
    """How often a probe of people's labels is right on a labeled item it was not fitted to:
    out-of-fold over `labeled` (probe_opinion on the other folds). With a single item of some
    label no fold can hold one out, and the probe counts as a guess: 1 / K."""
    folds = stratified_folds(labeled.targets)
    if folds is None:
        return 1 / len(zero_shot.config.labels)
    right = 0
    for fold in folds.unique():
        held, kept = (folds == fold).nonzero().squeeze(1), (folds != fold).nonzero().squeeze(1)
        guess = probe_opinion(zero_shot, labeled.subset(kept), labeled.subset(held), device).argmax(-1)
        right += int((guess.cpu() == labeled.targets[held]).sum())
    return right / len(labeled)


def pseudo_labels(adapted: torch.Tensor, probe: torch.Tensor, adapted_right: float,
                  probe_right: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, labels) of the candidate pages training takes, from the adapted zero-shot's (N, K)
    probabilities and a probe of people's labels: each label's likeliest pages (likeliest_pages),
    less those the probe gives another label, unless the adapted zero-shot was right on people's
    labels more often than the probe (the accuracies given): where they disagree, the one shown
    more often right decides.

    Why (bench learning, 90 real pages): the likeliest pages are only as right as the zero-shot:
    all right with descriptions, 61% right with label names alone (OCR), and there training on
    them all pulled k = 5 from 0.98 (people's labels alone) to 0.78; where the probe agrees they
    were 77%, 91% and 100% right at k = 1, 2, 5. With descriptions the probe of one or two pages
    a label is the one more often wrong, and dropping what it disputed cost up to 0.09."""
    rows, labels = likeliest_pages(adapted)
    if adapted_right > probe_right:
        return rows, labels
    agree = probe[rows].argmax(-1) == labels
    return rows[agree], labels[agree]


def _fused_accuracy(model: FusionModel, items: FeatureSet, device: str) -> float:
    logits = predict_logits(HeadsOnFeatures(model), items, device)["fused"]
    return float((logits.argmax(-1) == items.targets).float().mean())


def adapted_zero_shot(model: FusionModel, pages: FeatureSet, labeled: FeatureSet | None,
                      device: str = "cpu") -> Adaptation:
    """adapt_to_pages, then checked and calibrated on `labeled` (a project's labeled items outside
    its test split) where there are any."""
    adaptation = adapt_to_pages(model, pages, device)
    if adaptation.model is None or labeled is None or not len(labeled):
        return adaptation
    before, after = _fused_accuracy(model, labeled, device), _fused_accuracy(adaptation.model, labeled, device)
    if after < before:
        adaptation.why = (f"adapted, it scored {after:.1%} on the {len(labeled)} labeled items, against "
                          f"{before:.1%} as it was")
        adaptation.model = None
        return adaptation
    logits = predict_logits(HeadsOnFeatures(adaptation.model), labeled, device)
    adaptation.model.config.temperatures = tuple(fit_temperature(logits[h], labeled.targets) for h in HEADS)
    adaptation.calibrated_on = len(labeled)
    return adaptation


def pseudo_labeled_pages(engine, project, pages: Examples, labeled: Examples, device: str) -> Examples:
    """Of `pages` (ones no one labeled), those training adds to people's `labeled` items, labeled
    by the project's adapted zero-shot (pseudo_labels: it and a probe checked on the labeled train
    and validation items, the probe fitted to the train items). None where the project's zero-shot is not adapted.
    With one to two labeled pages a label this lifted few-shot heads from 0.79 / 0.89 to 0.96 /
    0.97 on the real pages (k = 1, 2; bench learning, OCR, descriptions), above the adapted
    zero-shot's 0.95."""
    chosen = Examples([], [], [], [], [])
    if not pages.ids or not current_measurement(project).get("adapted_model"):
        return chosen
    rows = sampled_rows(len(pages.ids))
    candidates = _features(engine, project, [pages.paths[i] for i in rows], [pages.texts[i] for i in rows], [0] * len(rows))
    people = [i for i in sampled_rows(len(labeled.ids)) if labeled.splits[i] != "test"]
    index = {name: k for k, name in enumerate(project.label_names)}
    checked = _features(engine, project, [labeled.paths[i] for i in people], [labeled.texts[i] for i in people],
                        [index[labeled.labels[i]] for i in people])
    adapted = project_zero_shot_model(project, engine.settings.fusion, engine.image_encoder, engine.text_encoder)
    zero_shot = build_zero_shot_model(ModelConfig(project.label_names, project.labels, engine.settings.fusion),
                                      engine.image_encoder, engine.text_encoder)
    train = checked.subset(torch.tensor([n for n, i in enumerate(people) if labeled.splits[i] == "train"],
                                        dtype=torch.long))
    opinion = predict_logits(HeadsOnFeatures(adapted.to(device)), candidates, device)["fused"].softmax(-1)
    for row, label in zip(*pseudo_labels(opinion, probe_opinion(zero_shot, train, candidates, device),
                                         _fused_accuracy(adapted, checked, device),
                                         probe_accuracy(zero_shot, checked, device))):
        i = rows[int(row)]
        chosen.ids.append(pages.ids[i])
        chosen.paths.append(pages.paths[i])
        chosen.texts.append(pages.texts[i])
        chosen.labels.append(project.label_names[int(label)])
        chosen.splits.append("train")
    return chosen


def _features(engine, project, paths: list, texts: list[str], targets: list[int]) -> FeatureSet:
    return load_feature_set(cache_features(engine, project.directory / "features", paths, texts), targets)
