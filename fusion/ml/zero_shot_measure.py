"""A project's zero-shot, measured on its labeled items: what each prior carries, and the
accuracy a user sees change as they write the labels' descriptions.

Measuring fits the two priors' weights to the labeled train and validation items (two numbers,
nothing else learns;
fusion.ml.probe.weigh_zero_shot_votes) and writes <project>/zero_shot.json: the descriptions measured,
the votes, and each head's accuracy on every labeled item with the priors weighted and not. The app's and the
CLI's zero-shot model reads the votes while the descriptions are unchanged
(zeroshot.project_zero_shot_model). It runs as a job of the worker ("zero_shot") after the
descriptions change, and at `python -m fusion zero-shot NAME`.
"""
from __future__ import annotations

import json
import random
from datetime import datetime, timezone

import torch

from fusion.core.atomic import write_atomic
from fusion.core.progress import Progress, Report
from fusion.ml.features import cache_features, load_feature_set
from fusion.ml.finetune import HeadsOnFeatures
from fusion.ml.pipeline import get_engine
from fusion.ml.probe import weigh_zero_shot_votes, pooled_features
from fusion.ml.inference import HEADS, predict_logits
from fusion.ml.training_data import labeled_examples
from fusion.ml.zeroshot import MEASURED_FILE, TEXT_PRIOR, build_zero_shot_model
from fusion.ml.model import ModelConfig

MAX_ITEMS = 2000      # a seeded sample of a larger project: features of 2,000 pages take ~0.5 GB
BATCH = 256


def _accuracy(logits: dict[str, torch.Tensor], targets: torch.Tensor) -> dict[str, float]:
    return {h: round(float((logits[h].argmax(-1) == targets).float().mean()), 4) for h in HEADS}


def measure_zero_shot(settings, store, project_name: str, user: str,
                      report: Report | None = None) -> dict:
    project = store.project(project_name)
    engine = get_engine(settings)
    examples = labeled_examples(store, project_name)
    rows = list(range(len(examples.ids)))
    if len(rows) > MAX_ITEMS:
        rows = sorted(random.Random(0).sample(rows, MAX_ITEMS))
    result = {"descriptions": project.labels, "prior": TEXT_PRIOR, "items": len(rows), "labeled_items": len(examples.ids),
              "measured_by": user, "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    model = build_zero_shot_model(ModelConfig(project.label_names, project.labels, settings.fusion),
                                  engine.image_encoder, engine.text_encoder).to(engine.device)
    if rows:
        def progress(done, total):
            if report:
                report(Progress("encoding", step=done, steps=total))

        index = {name: k for k, name in enumerate(project.label_names)}
        files = cache_features(engine, project.directory / "features", [examples.paths[i] for i in rows],
                               [examples.texts[i] for i in rows], progress)
        features = load_feature_set(files, [index[examples.labels[i]] for i in rows])
        targets = features.targets
        result["accuracy_unweighted"] = _accuracy(predict_logits(HeadsOnFeatures(model), features, engine.device), targets)
        # Weights fitted on the train and validation items only: the test split scores versions.
        fit_on = features.subset(torch.tensor([n for n, i in enumerate(rows) if examples.splits[i] != "test"],
                                              dtype=torch.long))
        if len(fit_on):
            batches = (fit_on.subset(torch.arange(i, min(i + BATCH, len(fit_on)))).inputs(engine.device)
                       for i in range(0, len(fit_on), BATCH))
            weigh_zero_shot_votes(model, pooled_features(model, batches), fit_on.targets.to(engine.device))
            result["votes"] = [round(w, 5) for w in model.fusion_weights.tolist()]
        result["accuracy"] = _accuracy(predict_logits(HeadsOnFeatures(model), features, engine.device), targets)
    write_atomic(project.directory / MEASURED_FILE, lambda tmp: tmp.write_text(json.dumps(result, indent=2)))
    engine.forget_models()                     # the next zero-shot prediction reads the new weights
    return result


def measured(project) -> dict | None:
    """What the last measurement found (for the page), whatever descriptions it measured; None
    when it measured a text prior zero-shot no longer uses."""
    try:
        found = json.loads((project.directory / MEASURED_FILE).read_text())
    except (OSError, ValueError):
        return None
    return found if found.get("prior") == TEXT_PRIOR else None
