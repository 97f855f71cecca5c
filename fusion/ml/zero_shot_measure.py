"""A project's zero-shot, measured on its labeled items and adapted to its pages: what each prior
carries, and the accuracy a user sees change as they write the labels' descriptions.

Measuring fits the two priors' weights to the labeled train and validation items (two numbers,
nothing else learns; fusion.ml.probe.weigh_zero_shot_votes), then adapts that model to the
project's pages outside the test split (fusion.ml.zero_shot_adapt), and writes
<project>/zero_shot.json: the descriptions measured, the votes, what adaptation read and found,
and each head's accuracy on every labeled item with the priors weighted and not, and adapted.
The adapted model goes to <project>/zero_shot_adapted/<time>/. The app's and the CLI's zero-shot
model reads them while the descriptions are unchanged (zeroshot.project_zero_shot_model). It
runs as a job of the worker ("zero_shot") after the descriptions change, from the Train page,
and at `python -m fusion zero-shot NAME`.
"""
from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone

import torch

from fusion.core.atomic import write_atomic
from fusion.core.progress import Progress, Report
from fusion.ml.features import cache_features, load_feature_set
from fusion.ml.finetune import HeadsOnFeatures
from fusion.ml.pipeline import get_engine
from fusion.ml.probe import weigh_zero_shot_votes, pooled_features
from fusion.ml.inference import HEADS, predict_logits
from fusion.ml.training_data import labeled_examples, readable_pages, sampled_rows
from fusion.ml.zero_shot_adapt import adapted_zero_shot, feature_batches
from fusion.ml.zeroshot import ADAPTED_DIR, MEASURED_FILE, TEXT_PRIOR, build_zero_shot_model
from fusion.ml.model import ModelConfig


def _accuracy(logits: dict[str, torch.Tensor], targets: torch.Tensor) -> dict[str, float]:
    return {h: round(float((logits[h].argmax(-1) == targets).float().mean()), 4) for h in HEADS}


def _save_adapted(project, model) -> str:
    """The adapted model in a folder of its own (the one before it is kept, for a reader that
    read the old measurement just before); returns the folder's name."""
    folder = project.directory / ADAPTED_DIR
    name = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    model.save(folder / name)
    return name


def _remove_older_adapted(project, keep: set[str]) -> None:
    folder = project.directory / ADAPTED_DIR
    older = sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in keep) if folder.is_dir() else []
    for path in older[:-1]:
        shutil.rmtree(path, ignore_errors=True)


def measure_zero_shot(settings, store, project_name: str, user: str,
                      report: Report | None = None) -> dict:
    project = store.project(project_name)
    engine = get_engine(settings)
    examples = labeled_examples(store, project_name)
    rows = sampled_rows(len(examples.ids))
    result = {"descriptions": project.labels, "prior": TEXT_PRIOR, "items": len(rows), "labeled_items": len(examples.ids),
              "measured_by": user, "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    model = build_zero_shot_model(ModelConfig(project.label_names, project.labels, settings.fusion),
                                  engine.image_encoder, engine.text_encoder).to(engine.device)

    def progress(stage):
        return lambda done, total: report and report(Progress(stage, step=done, steps=total))

    features = fit_on = None
    if rows:
        index = {name: k for k, name in enumerate(project.label_names)}
        files = cache_features(engine, project.directory / "features", [examples.paths[i] for i in rows],
                               [examples.texts[i] for i in rows], progress("encoding"))
        features = load_feature_set(files, [index[examples.labels[i]] for i in rows])
        result["accuracy_unweighted"] = _accuracy(predict_logits(HeadsOnFeatures(model), features, engine.device),
                                                  features.targets)
        # Weights fitted on the train and validation items only: the test split scores versions.
        fit_on = features.subset(torch.tensor([n for n, i in enumerate(rows) if examples.splits[i] != "test"],
                                              dtype=torch.long))
        if len(fit_on):
            weigh_zero_shot_votes(model, pooled_features(model, feature_batches(fit_on, engine.device)), fit_on.targets.to(engine.device))
            result["votes"] = [round(w, 5) for w in model.fusion_weights.tolist()]
        result["accuracy"] = _accuracy(predict_logits(HeadsOnFeatures(model), features, engine.device), features.targets)

    readable, unread = readable_pages(store, project_name)
    rows = sampled_rows(len(readable.ids))
    paths, texts = [readable.paths[i] for i in rows], [readable.texts[i] for i in rows]
    pages = load_feature_set(cache_features(engine, project.directory / "features", paths, texts,
                                            progress("reading pages")), [0] * len(paths)) if paths else []
    adaptation = adapted_zero_shot(model, pages, fit_on, engine.device)
    result["adaptation"] = {**adaptation.to_json(), "unread_pages": unread}
    if adaptation.model is not None:
        result["adapted_model"] = _save_adapted(project, adaptation.model)
        if features is not None:
            result["accuracy_adapted"] = _accuracy(
                predict_logits(HeadsOnFeatures(adaptation.model), features, engine.device), features.targets)
    write_atomic(project.directory / MEASURED_FILE, lambda tmp: tmp.write_text(json.dumps(result, indent=2)))
    _remove_older_adapted(project, {result.get("adapted_model")})
    engine.forget_models()                     # the next zero-shot prediction reads the new model
    return result


def measured(project) -> dict | None:
    """What the last measurement found (for the page), whatever descriptions it measured; None
    when it measured a text prior zero-shot no longer uses."""
    try:
        found = json.loads((project.directory / MEASURED_FILE).read_text())
    except (OSError, ValueError):
        return None
    return found if found.get("prior") == TEXT_PRIOR else None
