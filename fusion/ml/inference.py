"""Batches through a model: each head's outputs for a set of items, from a trained version, the
zero-shot model or whatever is being trained. Training, evaluation, pre-labeling and batch
prediction all read items this way.
"""
from __future__ import annotations

from pathlib import Path

import torch

from fusion.core.project import Project
from fusion.ml.abstain import abstained
from fusion.ml.encoders import load_encoders
from fusion.ml.features import FeatureSet, cache_features, load_feature_set
from fusion.ml.finetune import EndToEnd, HeadsOnFeatures
from fusion.ml.model import FusionModel, HEADS
from fusion.ml.ood import fields as ood_fields
from fusion.ml.training_data import pixel_set
from fusion.ml.zeroshot import project_zero_shot_model



def autocast(device: str, mode: str):
    """bf16 on a GPU where encoders run; the heads alone stay fp32."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda") and mode != "head")


@torch.no_grad()
def predict_outputs(trainable, data, device: str, mode: str = "head", batch_size: int = 256) -> dict:
    """Each head's logits (N, K), which heads had something to read ("text_present",
    "image_present": (N,) bool) and the OOD scores ("ood": (N, 3), None without a bank); on the CPU."""
    trainable.eval()
    parts: dict[str, list] = {h: [] for h in (*HEADS, "text_present", "image_present", "ood")}
    for i in range(0, len(data), batch_size):
        with autocast(device, mode), torch.no_grad():
            out = trainable(*data.subset(torch.arange(i, min(i + batch_size, len(data)))).inputs(device))
        for name in parts:
            value = getattr(out, name)
            parts[name].append(None if value is None else value.float().cpu() if name in HEADS else value.cpu())
    return {name: None if p[0] is None else torch.cat(p) for name, p in parts.items()}


def predict_logits(trainable, data, device: str, mode: str = "head", batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Each head's logits (N, K) on the CPU, in fp32."""
    outputs = predict_outputs(trainable, data, device, mode, batch_size)
    return {h: outputs[h] for h in HEADS}


def version_outputs(engine, project: Project, version: str, features: FeatureSet, paths: list[Path],
                    texts: list[str], device: str) -> dict:
    """predict_outputs of `version` on these items (features: their pretrained-encoder features)."""
    directory = project.model_dir(version)
    fusion = FusionModel.load(directory, device)
    if fusion.config.finetuned_encoders:
        image_encoder, text_encoder = load_encoders(directory, engine.image_encoder, engine.text_encoder, device)
        data = pixel_set(paths, texts, features.targets.tolist(), text_encoder, lines=features.lines)
        return predict_outputs(EndToEnd(image_encoder, text_encoder, fusion).to(device), data, device, "full")
    return predict_outputs(HeadsOnFeatures(fusion), features, device)


def version_logits(engine, project: Project, version: str, features: FeatureSet, paths: list[Path],
                   texts: list[str], device: str) -> dict[str, torch.Tensor]:
    """Each head's logits of `version` on these items."""
    outputs = version_outputs(engine, project, version, features, paths, texts, device)
    return {h: outputs[h] for h in HEADS}


def zero_shot_outputs(engine, project: Project, features: FeatureSet, device: str) -> dict:
    model = project_zero_shot_model(project, engine.settings.fusion, engine.image_encoder, engine.text_encoder).to(device)
    return predict_outputs(HeadsOnFeatures(model), features, device)


def zero_shot_logits(engine, project: Project, features: FeatureSet, device: str) -> dict[str, torch.Tensor]:
    outputs = zero_shot_outputs(engine, project, features, device)
    return {h: outputs[h] for h in HEADS}


def item_predictions(engine, project: Project, paths: list[Path], texts: list[str], cache_dir: Path) -> list[dict]:
    """Per item, as the Review page sees it: each head's probability of every label ("fused",
    "image", "text"), the heads that abstained and the OOD score, from the active version
    (zero-shot when none is active), batched through pretrained features cached in `cache_dir`."""
    features = load_feature_set(cache_features(engine, cache_dir, paths, texts), [0] * len(paths))
    outputs = (version_outputs(engine, project, project.active_model, features, paths, texts, engine.device)
               if project.active_model else zero_shot_outputs(engine, project, features, engine.device))
    probs = {head: outputs[head].softmax(-1).tolist() for head in HEADS}
    ood = outputs["ood"]
    return [{**{head: dict(zip(project.label_names, p[k])) for head, p in probs.items()},
             "abstained": abstained(bool(outputs["text_present"][k]), bool(outputs["image_present"][k])),
             **ood_fields(None if ood is None else ood[k])}
            for k in range(len(paths))]
