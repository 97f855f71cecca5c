"""Training a new model version from a project's human-labeled items.

One entry point, `train_version`, for the CLI, the worker and `torchrun` (DistributedDataParallel
when WORLD_SIZE > 1: gloo on CPU, NCCL on GPUs). The model starts as the zero-shot model
(residual heads at zero); the joint loss trains fused, image-only and text-only heads, with
class weights; early stopping keeps the epoch with the best validation macro-F1, so a version
never ends worse on validation than where it started. Temperatures fitted on the validation
split calibrate each head. Seeds are fixed per epoch, so a run resumed from its checkpoint
takes the same path as one that was never interrupted.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import distributed as dist
from torch import nn
from torch.nn import functional as F

from fusion.ml import ood
from fusion.ml.checkpoints import load_checkpoint, save_checkpoint, trained_parameters
from fusion.core.errors import FusionError
from fusion.core.progress import Progress, Report
from fusion.ml.evaluation import fit_temperature, scores
from fusion.ml.features import FeatureSet, cache_features, load_feature_set
from fusion.ml.finetune import (MODES, EndToEnd, HeadsOnFeatures, encoders_for_training, l2sp_penalty, merge_lora,
                       parameter_groups, pretrained_anchor)
from fusion.ml.encoders import mean_pool, save_encoders
from fusion.ml.inference import HEADS, autocast, predict_logits, version_logits
from fusion.ml.metrics import EpochRecord, HeadScores, Heads, VersionMetrics
from fusion.ml.model import FusionModel, ModelConfig
from fusion.ml.probe import (PooledFeatures, balanced_class_weights, fit_linear_heads, logistic_probes, pooled_features,
                             priors_off)
from fusion.ml.training_data import Examples, labeled_examples, pixel_set, readable_pages
from fusion.ml.zero_shot_adapt import pseudo_labeled_pages
from fusion.ml.zeroshot import build_zero_shot_model, project_zero_shot_model
from fusion.ml import registry
from fusion.ml.pipeline import get_engine

SIGNIFICANCE = 2.0        # standard errors by which fine-tuning must beat the probed start on validation
MIN_VALIDATION = 30       # validation items below which the probed start is kept
MIN_STEPS_PER_EPOCH = 8   # small projects: an epoch repeats its items up to this many batches
REPORT_EVERY_S = 1.0          # progress rows (and cancel checks) at most this often


@dataclass
class TrainConfig:
    mode: str = "head"
    epochs: int = 40
    lr: float = 2e-3          # the heads'; trained encoder weights use lr * ENCODER_LR_SCALE
    batch_size: int = 32
    device: str = "auto"      # auto: CUDA when present
    weight_decay: float = 1e-2
    patience: int = 8         # epochs without a lower validation loss before stopping
    seed: int = 0
    l2sp: float = 0.0         # > 0: pull trained encoder weights toward the pretrained ones
    lora: bool = False        # train MiniLM through LoRA adapters instead of its weights
    strategy: str | None = None  # fusion strategy; None: the settings' default
    pseudo_labels: bool = True   # also train on the pages no one labeled that the project's adapted
                                 # zero-shot finds likeliest to be each label (fusion.ml.zero_shot_adapt)

    def __post_init__(self):
        problems = []
        if self.mode not in MODES:
            problems.append(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not 1 <= self.epochs <= 1000:
            problems.append(f"epochs must be 1-1000, got {self.epochs}")
        if not 0 < self.lr <= 1:
            problems.append(f"learning rate must be in (0, 1], got {self.lr}")
        if not 1 <= self.batch_size <= 4096:
            problems.append(f"batch size must be 1-4096, got {self.batch_size}")
        if self.l2sp < 0:
            problems.append(f"l2sp must be >= 0, got {self.l2sp}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            problems.append(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if problems:
            raise FusionError("; ".join(problems))

    def job_params(self, auto_promote: bool = False) -> dict:
        """A training job's parameters: this config, and whether to promote a better result."""
        return asdict(self) | {"auto_promote": auto_promote}

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def resolve_device(device: str) -> str:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise FusionError("device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return device


def _macro_f1(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return round(float(f1_score(targets.numpy(), logits.argmax(-1).numpy(), average="macro", zero_division=0)), 4)


def quick_scores(logits: dict[str, torch.Tensor], targets: torch.Tensor) -> Heads:
    """Accuracy and macro-F1 of each head: what an epoch reports."""
    return {h: HeadScores(accuracy=round(float((l.argmax(-1) == targets).float().mean()), 4),
                          macro_f1=_macro_f1(l, targets)) for h, l in logits.items()}


# -- the loop ------------------------------------------------------------------------------
def _gpu_memory(device: str) -> dict[str, float]:
    if not device.startswith("cuda"):
        return {}
    return {"gpu_memory_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2),
            "gpu_total_gb": round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)}


def _pooled(trainable, data, device: str, mode: str, batch_size: int = 256) -> PooledFeatures:
    """The pooled features of a split as the model's encoders see them now."""
    trainable.eval()

    def batches():
        for i in range(0, len(data), batch_size):
            with autocast(device, mode), torch.no_grad():
                yield trainable.encode(*data.subset(torch.arange(i, min(i + batch_size, len(data)))).inputs(device))

    return pooled_features(trainable.fusion, batches())


def _probe(trainable, train, device: str, mode: str, class_weights: torch.Tensor, zero_shot_labeled: bool) -> None:
    """Start from probed heads (fusion.ml.probe), fitted to the training set as the encoders see it
    at the start; with the priors' votes off when zero-shot labeled some of its pages (see fit)."""
    features = _pooled(trainable, train, device, mode)
    fit_linear_heads(trainable.fusion, features, train.targets.to(device), class_weights,
                     priors_off(device) if zero_shot_labeled else None)


def _fit_ood(trainable, train, val, device: str, mode: str) -> dict:
    """The OOD score's bank and threshold (fusion.ml.ood), from the trained model's own features."""
    fusion = trainable.fusion
    with torch.no_grad():
        train_z, val_z = (fusion.standardised(f.image.float(), f.text.float())
                          for f in (_pooled(trainable, split, device, mode) for split in (train, val)))
    return ood.fit(fusion, *train_z, *val_z)


def _val_loss(trainable, val, device: str, mode: str, class_weights: torch.Tensor) -> tuple[float, torch.Tensor, Heads]:
    """The joint loss on the validation split (what early stopping watches), each item's share of
    it (N,), and each head's scores."""
    logits = predict_logits(trainable, val, device, mode)
    weights = class_weights.cpu()[val.targets]
    wf, wi, wt = trainable.fusion.config.loss_weights
    items = sum(w * F.cross_entropy(logits[h], val.targets, reduction="none")
                for w, h in zip((wf, wi, wt), HEADS)) * weights / weights.mean()
    return round(float(items.mean()), 5), items, quick_scores(logits, val.targets)


def _clearly_lower(items: torch.Tensor, start: torch.Tensor) -> bool:
    """Whether per-item validation losses are lower than at the start by more than their noise:
    at least MIN_VALIDATION items, and a mean paired difference over SIGNIFICANCE standard errors.
    On a validation split of a few pages a lower loss says little about new pages: fine-tuning
    kept on 3 validation pages (all three clearly lower) took a fused head probed to 1.0 on the
    test pages down to 0.87, and on 7 real pages fused 1.0 to 0.987 and text 0.969 to 0.964."""
    gain = start - items
    if len(gain) < MIN_VALIDATION:
        return False
    return float(gain.mean()) > SIGNIFICANCE * float(gain.std()) / math.sqrt(len(gain))


def fit(trainable, train, val, config: TrainConfig, device: str, report: Report | None = None,
        checkpoint: Path | None = None, resume: Path | None = None, zero_shot_labeled: bool = False) -> list[EpochRecord]:
    """Train `trainable` in place; leaves it at its best validation epoch. Returns one row per epoch.

    It starts from probed heads (fusion.ml.probe). Early stopping watches the joint validation loss,
    not a macro-F1 (on a small validation split F1 saturates, or jumps by one item, long before
    the heads have learned what they can), and in head mode an epoch replaces the probed start
    only when its loss is clearly lower (_clearly_lower). An epoch is at least
    MIN_STEPS_PER_EPOCH optimizer steps (passes over a small set repeat), so a project of 40 pages
    trains for as many steps as one of 300.

    zero_shot_labeled: some of `train` are pseudo-labeled pages (fusion.ml.zero_shot_adapt). The
    priors' votes are then switched off, as adaptation switches them off: an opinion built on the
    priors chose those pages, so cross-validated on them the priors look right and keep their vote,
    and on new pages the raw priors mislead (bench learning, 90 real pages, OCR, descriptions: k = 1
    few-shot 0.947 with them, 0.987 without, against 0.978 for the adapted zero-shot it starts from)."""
    rank, world = distributed()
    class_weights = balanced_class_weights(train.targets, len(trainable.fusion.config.labels)).to(device)
    _probe(trainable, train, device, config.mode, class_weights, zero_shot_labeled)
    if config.mode == "head":
        # Over frozen features the probed heads are already at their optimum: Adam could only
        # overfit them. Fine-tuning trains what fuses them (fused residual, votes, gate, attention).
        for part in (trainable.fusion.image_head, trainable.fusion.text_head, trainable.fusion.prior_weights):
            part.requires_grad_(False)
    anchor = pretrained_anchor(trainable) if config.l2sp > 0 else None
    model = trainable
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(trainable, device_ids=[device] if device.startswith("cuda") else None)
    optimizer = torch.optim.AdamW(parameter_groups(trainable, config.lr, config.weight_decay))

    start, since_best, history = 1, 0, []
    best_loss, start_items, _ = _val_loss(trainable, val, device, config.mode, class_weights)
    best = {n: p.detach().clone() for n, p in trained_parameters(trainable).items()}
    if resume is not None:
        best, meta = load_checkpoint(resume, trainable, optimizer)
        start, since_best, best_loss = meta["epoch"] + 1, meta["since_best"], meta["best_loss"]
        history = [EpochRecord.from_json(r) for r in meta["history"]]

    epoch_size = max(len(train), MIN_STEPS_PER_EPOCH * config.batch_size)
    steps = math.ceil(epoch_size / config.batch_size)
    started = time.perf_counter()
    for epoch in range(start, config.epochs + 1):
        if since_best >= config.patience:
            break
        t0 = time.perf_counter()
        torch.manual_seed(config.seed * 10_007 + epoch)   # same order and dropout on every rank, and on resume
        order = torch.cat([torch.randperm(len(train)) for _ in range(math.ceil(epoch_size / len(train)))])
        total, seen = _train_epoch(
            model, trainable, train, order, steps, config, device, class_weights, anchor, optimizer,
            lambda step, total, seen: report and report(_progress(config, device, epoch, step, steps, total, seen, t0,
                                                                  epoch_size)))
        seconds = time.perf_counter() - t0
        val_loss, val_items, val_scores = _val_loss(trainable, val, device, config.mode, class_weights)
        row = EpochRecord(epoch=epoch, loss=round(total / max(seen, 1), 4), val_loss=val_loss, val=val_scores,
                          seconds=round(seconds, 3), samples_per_s=round(seen / seconds, 1))
        history.append(row)
        # Over frozen features the probed start is only replaced on clear evidence; when the
        # encoders train (partial, full) a lower validation loss is enough, as before.
        if val_loss < best_loss and (config.mode != "head" or _clearly_lower(val_items, start_items)):
            best_loss, since_best = val_loss, 0
            best = {n: p.detach().clone() for n, p in trained_parameters(trainable).items()}
        else:
            since_best += 1
        if rank == 0 and checkpoint is not None:
            save_checkpoint(checkpoint, trainable, optimizer, best,
                            {"epoch": epoch, "since_best": since_best, "best_loss": best_loss,
                             "history": [r.to_json() for r in history]})
        if report:
            report(_epoch_ended(config, row, steps, best_loss, (time.perf_counter() - started) / (epoch - start + 1)))
    with torch.no_grad():
        params = trained_parameters(trainable)
        for n, v in best.items():
            params[n].copy_(v)
    return history


def _train_epoch(model, trainable, train, order, steps: int, config: TrainConfig, device: str, class_weights, anchor,
                 optimizer, progress) -> tuple[float, int]:
    """`steps` batches taken from `order` in turn; each rank trains on its share of every batch.
    Calls progress(step, total loss, items seen) on the first step and then at most every
    REPORT_EVERY_S; returns (total loss, items seen)."""
    rank, world = distributed()
    trainable.train()
    total, seen, last_report = 0.0, 0, 0.0
    for step in range(steps):
        index = order[step * config.batch_size:(step + 1) * config.batch_size]
        if len(index) < world:
            continue                                  # every rank needs a share of the batch
        batch = train.subset(index[rank::world])
        with autocast(device, config.mode):
            out = model(*batch.inputs(device))
            loss = trainable.fusion.loss(out, batch.targets.to(device), class_weights)
            if anchor is not None:
                loss = loss + config.l2sp * l2sp_penalty(trainable, anchor)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(index)
        seen += len(index)
        if time.perf_counter() - last_report >= REPORT_EVERY_S:
            last_report = time.perf_counter()
            progress(step, total, seen)
    return total, seen


def _epoch_ended(config: TrainConfig, row: EpochRecord, steps: int, best_loss: float, epoch_seconds: float) -> Progress:
    """A training job's progress at an epoch's end, with the epoch's record for its curve."""
    return Progress("epoch", epoch=row.epoch, epochs=config.epochs, step=steps, steps=steps, loss=row.loss,
                    val_loss=row.val_loss, best_val_loss=best_loss, val_macro_f1=row.val["fused"].macro_f1,
                    samples_per_s=row.samples_per_s, eta_s=round(epoch_seconds * (config.epochs - row.epoch), 1),
                    ended_epoch=row)


def _progress(config: TrainConfig, device: str, epoch: int, step: int, steps: int, total: float, seen: int,
              epoch_started: float, epoch_size: int) -> Progress:
    """A training job's progress within an epoch: step, loss so far, speed and time left."""
    rate = seen / (time.perf_counter() - epoch_started)
    remaining = (config.epochs - epoch + 1) * epoch_size - seen
    return Progress("training", epoch=epoch, epochs=config.epochs, step=step + 1, steps=steps,
                    loss=round(total / seen, 4), samples_per_s=round(rate, 1), eta_s=round(remaining / rate, 1),
                    **_gpu_memory(device))


# -- a model version -----------------------------------------------------------------------
def _encode(engine, project, examples: Examples, index: torch.Tensor, targets: list[int],
            report: Report | None) -> FeatureSet:
    def progress(done, total):
        if report:
            report(Progress("encoding", step=done, steps=total))
    rows = index.tolist()
    files = cache_features(engine, project.directory / "features", [examples.paths[i] for i in rows],
                           [examples.texts[i] for i in rows], progress)
    return load_feature_set(files, [targets[i] for i in rows])


def _calibrate(trainable, val, device: str, mode: str) -> tuple[float, float, float]:
    """Temperatures of the three heads on the validation split (the model must start at 1)."""
    logits = predict_logits(trainable, val, device, mode)
    return tuple(fit_temperature(logits[h], val.targets) for h in HEADS)


def _scores(logits: dict[str, torch.Tensor], targets: torch.Tensor, labels: list[str]) -> Heads:
    return {h: scores(l.softmax(-1).numpy(), targets.numpy(), labels) for h, l in logits.items()}


def _training_data(engine, project, examples, targets: list[int], test_index: torch.Tensor, mode: str,
                   device: str, report: Report | None):
    """(what training reads: cached features in head mode, decoded pixels and token ids
    otherwise; the test split's features through the pretrained encoders, which the zero-shot
    and head-only models read)."""
    rank, world = distributed()
    if rank > 0 and world > 1:
        dist.barrier()                                   # rank 0 fills the feature cache first
    if mode == "head":
        data = _encode(engine, project, examples, torch.arange(len(targets)), targets, report)
        test_features = data.subset(test_index)
    else:
        test_features = _encode(engine, project, examples, test_index, targets, report)
        if report:
            report(Progress("decoding", step=0, steps=len(targets)))
        data = pixel_set(examples.paths, examples.texts, targets, engine.text_encoder).on_gpu_if_it_fits(device)
    if rank == 0 and world > 1:
        dist.barrier()
    return data, test_features


def _trainable(engine, fusion: FusionModel, config: TrainConfig, device: str) -> nn.Module:
    """What the mode trains: the heads on cached features, or the encoders too (encoders_for_training)."""
    if config.mode == "head":
        return HeadsOnFeatures(fusion).to(device)
    image_encoder, text_encoder = encoders_for_training(config.mode, engine.image_encoder, engine.text_encoder,
                                                        config.lora)
    return EndToEnd(image_encoder, text_encoder, fusion, channels_last=device.startswith("cuda")).to(device)


def train_version(settings, store, project_name: str, config: TrainConfig, user: str,
                  report: Report | None = None, job_id: int | None = None,
                  checkpoint: Path | None = None, resume: Path | None = None) -> tuple[str | None, VersionMetrics]:
    """Train, calibrate, evaluate on the test split and register a new model version (not made
    active: see registry.promote). Returns (version, metrics); version is None on ranks > 0."""
    rank, world = distributed()
    device = resolve_device(config.device)
    project = store.project(project_name)
    examples = labeled_examples(store, project_name)
    examples.check_splits()
    engine = get_engine(dataclasses.replace(settings, device=device))
    t0 = time.perf_counter()
    if config.pseudo_labels:
        examples = examples.plus_pseudo_labeled(pseudo_labeled_pages(
            engine, project, readable_pages(store, project_name, unlabeled_only=True)[0], examples, device))
    index = {name: i for i, name in enumerate(project.label_names)}
    targets = [index[label] for label in examples.labels]
    split = {s: examples.split_index(s) for s in ("train", "val", "test")}
    data, test_features = _training_data(engine, project, examples, targets, split["test"], config.mode, device, report)
    prepare_seconds = time.perf_counter() - t0

    model_config = ModelConfig(project.label_names, project.labels, config.strategy or settings.fusion,
                               finetuned_encoders=config.mode != "head")
    zero_shot = project_zero_shot_model(project, model_config.strategy, engine.image_encoder,
                                        engine.text_encoder).to(device)
    zero_shot_test = _scores(predict_logits(HeadsOnFeatures(zero_shot), test_features, device), test_features.targets,
                             project.label_names)
    torch.manual_seed(config.seed)                        # the heads' initial weights
    fusion = build_zero_shot_model(model_config, engine.image_encoder, engine.text_encoder)
    fusion.requires_grad_(True).imagenet_fc.requires_grad_(False)
    trainable = _trainable(engine, fusion, config, device)

    t1 = time.perf_counter()
    history = fit(trainable, data.subset(split["train"]), data.subset(split["val"]), config, device, report,
                  checkpoint, resume, zero_shot_labeled=examples.pseudo_labeled > 0)
    train_seconds = time.perf_counter() - t1
    if config.mode != "head" and config.lora:
        merge_lora(trainable.text_encoder)
    fusion.config.temperatures = _calibrate(trainable, data.subset(split["val"]), device, config.mode)
    ood_fit = _fit_ood(trainable, data.subset(split["train"]), data.subset(split["val"]), device, config.mode)
    test = data.subset(split["test"])
    test_logits = predict_logits(trainable, test, device, config.mode)
    parent = project.active_model    # its scores on the same test items (rank 0 only: it registers)
    metrics = VersionMetrics(
        test=_scores(test_logits, test.targets, project.label_names), zero_shot_test=zero_shot_test,
        probe_test=_probe_scores(data, test_features, split) if config.mode == "head" else None,
        parent_version=parent, parent_test=None if rank > 0 else _parent_scores(
            engine, project, parent, test_features, examples, split["test"], device),
        temperatures=dict(zip(HEADS, fusion.config.temperatures)), ood=ood_fit,
        counts=examples.counts(), epochs_run=len(history), history=history,
        device=engine.device_name, world_size=world,
        seconds={"prepare": round(prepare_seconds, 2), "train": round(train_seconds, 2)})
    if rank > 0:
        return None, metrics
    version = registry.save_version(store, project, fusion.cpu(), _version_files(config, trainable, examples, split,
                                                                                 project, test_logits),
                                    parent=parent, user=user, job_id=job_id, params=asdict(config),
                                    data=examples.snapshot(), metrics=metrics)
    return version, metrics


def _version_files(config: TrainConfig, trainable, examples: Examples, split: dict[str, torch.Tensor], project,
                   test_logits: dict[str, torch.Tensor]) -> Callable[[Path], None]:
    """What a version's folder holds beside the fusion model: the fine-tuned encoders (partial
    and full modes) and each test item's probabilities, which the Evaluate page's error gallery
    and comparisons read."""
    def write(directory: Path) -> None:
        if config.mode != "head":
            save_encoders(directory, trainable.image_encoder, trainable.text_encoder)
        (directory / "test_predictions.json").write_text(json.dumps({
            "item_ids": [examples.ids[i] for i in split["test"].tolist()], "labels": project.label_names,
            "probs": {h: [[round(x, 5) for x in row] for row in l.softmax(-1).tolist()] for h, l in test_logits.items()},
        }))
    return write


def _probe_scores(data: FeatureSet, test: FeatureSet, split: dict[str, torch.Tensor]) -> dict[str, float] | None:
    """Test accuracy of logistic regressions on the same frozen features (train split), beside
    the trained heads; None when a class has fewer than two training items."""
    train = data.subset(split["train"])
    both = [torch.cat([train.patches.mean(1), test.patches.mean(1)]).numpy(),
            torch.cat([mean_pool(train.tokens, train.mask), mean_pool(test.tokens, test.mask)]).numpy()]
    targets = torch.cat([train.targets, test.targets]).numpy()
    n = len(train)
    return logistic_probes(*both, targets, np.arange(n), np.arange(n, len(targets)))


def _parent_scores(engine, project, parent: str | None, test_features: FeatureSet, examples: Examples,
                   test_index: torch.Tensor, device: str) -> Heads | None:
    """The active version's scores on the same test items, for auto-promotion and comparison."""
    if parent is None:
        return None
    rows = test_index.tolist()
    try:
        logits = version_logits(engine, project, parent, test_features, [examples.paths[i] for i in rows],
                                [examples.texts[i] for i in rows], device)
    except (FileNotFoundError, FusionError):
        return None                                       # a version whose files are gone
    return _scores(logits, test_features.targets, project.label_names)
