"""`python -m fusion bench learning --data FOLDER --json`: how FusionLab learns from real pages.

FOLDER has the layout of shared/eval/ocr: `index.jsonl`, one page a line, with `image` (relative
to the folder), `gt_text` (the reference transcription) and `doc_type` (the class; pages without
one are left out). For each text source (the project's own OCR, read here and cached in the
workspace, and the reference text), over seeded stratified half/half splits:
- zero-shot (label names only, or with --descriptions): each head, with one vote each for the
  two priors and with their votes weighed on the training half's labels (`zero_shot_measured`);
  and each of them adapted to the training half's pages, whose labels it does not read
  (`zero_shot_adapted`, `zero_shot_measured_adapted`: fusion.ml.zero_shot_adapt; the measured one
  checked and calibrated on the training half's labels, as a project's labeled items do);
- trained in head mode through training's own `fit` (the training half split 85/15 into train and
  validation): each head; and the heads as fine-tuning starts from them (`probed_only`);
- beside them, logistic regressions (scikit-learn, defaults) on the very same frozen features:
  pooled image, pooled text, and both concatenated, fitted on the head's training items
  (`probe`) and on the whole training half (`probe_whole_half`);
- a few-shot curve: k labeled pages per class drawn from the training half (the validation split
  is the k pages themselves below 5), tested on the same test half; trained as a project trains,
  with the half's other pages that the adapted zero-shot (no labels) labels, as training picks
  them (fusion.ml.zero_shot_adapt.pseudo_labels: the adapted zero-shot and a probe, cross-validated,
  checked on the k pages, the probe fitted to the training ones; `curve`), and on the k pages
  alone (`curve_labels_only`);
- with --partial-epochs E: `partial` mode (top encoder blocks trained too) on seed 0's split.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from fusion.core.errors import FusionError
from fusion.core.settings import Settings
from fusion.ml.model import HEADS

SHOTS = (1, 2, 5, 10)
VALIDATION_SHARE = 0.15


def _pages(folder: Path) -> list[dict]:
    index = folder / "index.jsonl"
    if not index.is_file():
        raise FusionError(f"{folder} has no index.jsonl (one page a line: image, gt_text, doc_type)")
    rows = [json.loads(line) for line in index.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("doc_type")]
    if len({r["doc_type"] for r in rows}) < 2:
        raise FusionError(f"{index} needs pages of at least 2 doc_type classes")
    return rows


def _ocr_texts(engine, home: Path, paths: list[Path]) -> list[str]:
    """The project's OCR of each page, cached by the file's hash and the reading's engine and scale
    (reading 90 pages takes minutes)."""
    from fusion.imaging.images import load_image
    from fusion.imaging.ocr import ENGINE

    cache = home / "bench-learning" / "ocr"
    cache.mkdir(parents=True, exist_ok=True)
    texts = []
    for path in paths:
        key = hashlib.sha256(path.read_bytes() + f"{ENGINE} {engine.settings.ocr_max_side}".encode()).hexdigest()
        stored = cache / f"{key}.json"
        if not stored.is_file():
            stored.write_text(json.dumps({"text": engine.read_text(load_image(path)).text}))
        texts.append(json.loads(stored.read_text())["text"])
    return texts


def _split(targets: np.ndarray, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stratified: `share` of each class (at least one item) to the second part."""
    first, second = [], []
    for label in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == label))
        n = max(1, round(share * len(members)))
        second += members[:n].tolist()
        first += members[n:].tolist()
    return np.array(sorted(first)), np.array(sorted(second))


def _accuracy(logits: dict[str, torch.Tensor], targets: np.ndarray) -> dict[str, float]:
    return {h: float((logits[h].argmax(-1).numpy() == targets).mean()) for h in HEADS}


def _probed_heads(engine, config, features, train: np.ndarray):
    """The heads as fine-tuning starts from them: probed on the training items (fusion.ml.probe)."""
    from fusion.ml.finetune import HeadsOnFeatures
    from fusion.ml.probe import fit_linear_heads, pooled_features
    from fusion.ml.probe import balanced_class_weights
    from fusion.ml.zeroshot import build_zero_shot_model

    fusion = build_zero_shot_model(config, engine.image_encoder, engine.text_encoder)
    subset = features.subset(torch.tensor(train))
    fit_linear_heads(fusion, pooled_features(fusion, [subset.inputs("cpu")]), subset.targets,
                     balanced_class_weights(subset.targets, len(config.labels)))
    return HeadsOnFeatures(fusion)


def _train_heads(engine, config, features, train: np.ndarray, val: np.ndarray, seed: int,
                 zero_shot_labeled: bool = False):
    """Head mode, as train_version runs it: the zero-shot model, then training's own fit."""
    from fusion.ml.finetune import HeadsOnFeatures
    from fusion.ml.train import TrainConfig, fit
    from fusion.ml.zeroshot import build_zero_shot_model

    torch.manual_seed(seed)
    fusion = build_zero_shot_model(config, engine.image_encoder, engine.text_encoder)
    fusion.requires_grad_(True).imagenet_fc.requires_grad_(False)
    trainable = HeadsOnFeatures(fusion)
    fit(trainable, features.subset(torch.tensor(train)), features.subset(torch.tensor(val)),
        TrainConfig(mode="head", seed=seed, device="cpu"), "cpu", zero_shot_labeled=zero_shot_labeled)
    return trainable


def _measured_zero_shot(engine, config, labeled):
    """The zero-shot model with its priors' votes weighed on labeled pages, as a project's
    zero-shot measurement does (fusion.ml.zero_shot_measure)."""
    from fusion.ml.probe import pooled_features, weigh_zero_shot_votes
    from fusion.ml.zeroshot import build_zero_shot_model

    model = build_zero_shot_model(config, engine.image_encoder, engine.text_encoder)
    weigh_zero_shot_votes(model, pooled_features(model, [labeled.inputs("cpu")]), labeled.targets)
    return model


def _adapted(model, pages, labeled=None):
    """`model` adapted to `pages` (their labels unread), as a project's measurement does; `model`
    itself where adaptation declined."""
    from fusion.ml.zero_shot_adapt import adapted_zero_shot

    return adapted_zero_shot(model, pages, labeled).model or model


def _partial_mode(engine, config, paths: list[Path], texts: list[str], targets: np.ndarray, epochs: int) -> dict:
    """`partial` mode (the top encoder blocks train too) on seed 0's split, through training's
    own fit: the CPU costs ~20 s an epoch here, so one split and few epochs."""
    from fusion.ml.finetune import EndToEnd, encoders_for_training
    from fusion.ml.inference import predict_logits
    from fusion.ml.train import TrainConfig, fit
    from fusion.ml.training_data import pixel_set
    from fusion.ml.zeroshot import build_zero_shot_model

    rng = np.random.default_rng(0)
    pool, test = _split(targets, 0.5, rng)
    train, val = _split(targets[pool], VALIDATION_SHARE, rng)
    data = pixel_set(paths, texts, targets.tolist(), engine.text_encoder)
    torch.manual_seed(0)
    fusion = build_zero_shot_model(config, engine.image_encoder, engine.text_encoder)
    fusion.requires_grad_(True).imagenet_fc.requires_grad_(False)
    image_encoder, text_encoder = encoders_for_training("partial", engine.image_encoder, engine.text_encoder)
    trainable = EndToEnd(image_encoder, text_encoder, fusion)
    history = fit(trainable, data.subset(torch.tensor(pool[train])), data.subset(torch.tensor(pool[val])),
                  TrainConfig(mode="partial", epochs=epochs, device="cpu"), "cpu")
    found = _accuracy(predict_logits(trainable, data.subset(torch.tensor(test)), "cpu", "partial"), targets[test])
    return {"seed": 0, "epochs": len(history), **found}


def _probes(features, train: np.ndarray, test: np.ndarray) -> dict[str, float]:
    from fusion.ml.encoders import mean_pool
    from fusion.ml.probe import logistic_probes

    return logistic_probes(features.patches.mean(1).numpy(), mean_pool(features.tokens, features.mask).numpy(),
                           features.targets.numpy(), train, test)


def _mean(values: list[dict]) -> dict:
    return {k: round(statistics.fmean(v[k] for v in values), 4) for k in values[0]}


def _one_source(engine, config, features, seeds: int, shots: tuple[int, ...]) -> dict:
    from fusion.ml.finetune import HeadsOnFeatures
    from fusion.ml.inference import predict_logits
    from fusion.ml.zero_shot_adapt import probe_accuracy, probe_opinion, pseudo_labels
    from fusion.ml.zeroshot import build_zero_shot_model

    targets = features.targets.numpy()
    zero_shot = build_zero_shot_model(config, engine.image_encoder, engine.text_encoder)
    runs = {"zero_shot": [], "zero_shot_measured": [], "zero_shot_adapted": [], "zero_shot_measured_adapted": [],
            "head": [], "probed_only": [], "probe": [], "probe_whole_half": []}
    curve, labels_only = {k: [] for k in shots}, {k: [] for k in shots}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        pool, test = _split(targets, 0.5, rng)
        test_set, pool_set = features.subset(torch.tensor(test)), features.subset(torch.tensor(pool))
        measured = _measured_zero_shot(engine, config, pool_set)
        adapted = _adapted(zero_shot, pool_set)
        for name, model in (("zero_shot", zero_shot), ("zero_shot_measured", measured), ("zero_shot_adapted", adapted),
                            ("zero_shot_measured_adapted", _adapted(measured, pool_set, pool_set))):
            runs[name].append(_accuracy(predict_logits(HeadsOnFeatures(model), test_set, "cpu"), targets[test]))
        opinion = None if adapted is zero_shot else predict_logits(HeadsOnFeatures(adapted), features, "cpu")["fused"].softmax(-1)
        train, val = _split(targets[pool], VALIDATION_SHARE, rng)
        trained = _train_heads(engine, config, features, pool[train], pool[val], seed)
        runs["head"].append(_accuracy(predict_logits(trained, test_set, "cpu"), targets[test]))
        probed = _probed_heads(engine, config, features, pool[train])
        runs["probed_only"].append(_accuracy(predict_logits(probed, test_set, "cpu"), targets[test]))
        runs["probe"].append(_probes(features, pool[train], test))     # the same items as the head
        runs["probe_whole_half"].append(_probes(features, pool, test))  # and its validation items too
        for k in shots:
            chosen = np.concatenate([rng.permutation(pool[targets[pool] == label])[:k] for label in np.unique(targets)])
            fit_on, check_on = (chosen, chosen) if k < 5 else tuple(chosen[i] for i in _split(targets[chosen], VALIDATION_SHARE, rng))
            shot = _train_heads(engine, config, features, fit_on, check_on, seed)
            labels_only[k].append(_accuracy(predict_logits(shot, test_set, "cpu"), targets[test]))
            rest = np.setdiff1d(pool, chosen)          # as fusion.ml.zero_shot_adapt.pseudo_labeled_pages
            rows, pseudo = (torch.empty(0, dtype=torch.long),) * 2
            if opinion is not None:
                checked = float((opinion[torch.tensor(chosen)].argmax(-1).numpy() == targets[chosen]).mean())
                rows, pseudo = pseudo_labels(opinion[torch.tensor(rest)], probe_opinion(
                    zero_shot, features.subset(torch.tensor(fit_on)), features.subset(torch.tensor(rest))), checked,
                    probe_accuracy(zero_shot, features.subset(torch.tensor(chosen))))
            extra, guessed = rest[rows.numpy()], features.targets.clone()
            guessed[torch.tensor(extra, dtype=torch.long)] = pseudo
            shot = _train_heads(engine, config, dataclasses.replace(features, targets=guessed),
                                np.concatenate([fit_on, extra]), check_on, seed, zero_shot_labeled=len(extra) > 0)
            curve[k].append(_accuracy(predict_logits(shot, test_set, "cpu"), targets[test]))
    result = {name: _mean(values) for name, values in runs.items()}
    for name, points in (("curve", curve), ("curve_labels_only", labels_only)):
        result[name] = [{"k": k, **_mean(values)} for k, values in points.items() if values]
    result["per_seed"] = runs
    return result


def bench_learning(settings: Settings, data: Path, seeds: int = 5, sources: tuple[str, ...] = ("ocr", "reference"),
                   shots: tuple[int, ...] = SHOTS, descriptions: dict[str, str] | None = None,
                   partial_epochs: int = 0) -> dict:
    from fusion.ml.features import cache_features, load_feature_set
    from fusion.ml.model import ModelConfig
    from fusion.ml.pipeline import get_engine

    data = Path(data)
    pages = _pages(data)
    labels = sorted({p["doc_type"] for p in pages})
    paths = [data / p["image"] for p in pages]
    targets = [labels.index(p["doc_type"]) for p in pages]
    engine = get_engine(settings)
    result = {"data": str(data), "pages": len(pages), "labels": labels, "seeds": seeds,
              "descriptions": descriptions or {}, "device": engine.device_name}
    for source in sources:
        texts = _ocr_texts(engine, settings.home, paths) if source == "ocr" else [p.get("gt_text") or "" for p in pages]
        files = cache_features(engine, settings.home / "bench-learning" / "features", paths, texts)
        features = load_feature_set(files, targets)
        config = ModelConfig(labels, descriptions or {})
        result[source] = _one_source(engine, config, features, seeds, shots)
        if partial_epochs:
            result[source]["partial"] = _partial_mode(engine, config, paths, texts, np.array(targets), partial_epochs)
    return result
