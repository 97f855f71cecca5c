"""Zero-shot priors from label names: what a project predicts before anyone labels anything.

No CLIP-like weights exist offline, so both priors go through MiniLM:
  text   each line of (OCR text + caption), embedded alone, votes for the label with a prompt
         most like it; a label's prompts are short: its name, and its description whole and in
         its phrases ("receipt: items, prices, total" -> "receipt", "items", "prices", "total")
  image  the backbone's ImageNet prediction, each ImageNet class mapped to labels by the
         similarity of its name to the label text
The priors become frozen buffers of a FusionModel whose residual heads are zero (see model.py).
Each prior has one vote in the fused opinion until the project's labeled items have measured how
much it carries (fusion.ml.zero_shot_measure; an image prior scored 0.58 on 90 real pages and the text
prior 0.44, and unweighted the louder text prior decided: fused 0.46). The measurement also
adapts the model to the project's own pages (fusion.ml.zero_shot_adapt); the project's zero-shot
is then that model.
"""
from __future__ import annotations

import functools
import json
import re

import torch

from fusion.ml.encoders import ImageEncoder, TextEncoder, imagenet_class_names
from fusion.core.errors import FusionError
from fusion.ml.model import FusionModel, ModelConfig
from fusion.core.project import Project

IMAGENET_TO_LABEL_TEMPERATURE = 10.0  # how sharply an ImageNet class commits to its nearest label


def label_prompt(name: str, description: str | None) -> str:
    words = name.replace("_", " ").replace("-", " ")
    return f"{words}: {description}" if description else words


def label_prompts(name: str, description: str | None) -> list[str]:
    """Short prompts a reader would match a page's lines against: the label's name, and its
    description whole and in its phrases (split at ':', ';' and ',')."""
    words = name.replace("_", " ").replace("-", " ")
    prompts = [words, f"a {words}"]
    if description and description.strip():
        prompts.append(description.strip())
        prompts += [p.strip() for p in re.split(r"[:;,]", description) if p.strip()]
    return list(dict.fromkeys(prompts))            # in order, once each


@functools.lru_cache(maxsize=2)
def _imagenet_name_embeddings(text_encoder: TextEncoder) -> torch.Tensor:
    names = [f"a photo of a {n}" for n in imagenet_class_names()]
    return torch.cat([text_encoder.sentence_embeddings(names[i:i + 250]) for i in range(0, len(names), 250)])


MEASURED_FILE = "zero_shot.json"   # in the project's folder: fusion.ml.zero_shot_measure writes it
ADAPTED_DIR = "zero_shot_adapted"  # in the project's folder: the adapted models (fusion.ml.zero_shot_adapt)
TEXT_PRIOR = "line vote"           # what the text prior is: votes measured for another one don't apply


def current_measurement(project: Project) -> dict:
    """What the last zero-shot measurement stored, if it measured the project's current labels,
    descriptions and text prior; {} otherwise."""
    try:
        stored = json.loads((project.directory / MEASURED_FILE).read_text())
    except (OSError, ValueError):
        return {}
    current = stored.get("descriptions") == project.labels and stored.get("prior") == TEXT_PRIOR
    return stored if current else {}


def project_zero_shot_model(project: Project, strategy: str, image_encoder: ImageEncoder,
                            text_encoder: TextEncoder) -> FusionModel:
    """The project's zero-shot model: adapted to its pages where that was done for its current
    descriptions, else its labels' prompts with its priors' votes as measured."""
    measurement = current_measurement(project)
    adapted = measurement.get("adapted_model")
    if adapted:
        try:
            return FusionModel.load(project.directory / ADAPTED_DIR / adapted)
        except (OSError, FusionError):   # removed by a newer measurement since the file was read
            pass
    model = build_zero_shot_model(ModelConfig(project.label_names, project.labels, strategy), image_encoder,
                                  text_encoder)
    if measurement.get("votes") is not None:
        with torch.no_grad():
            model.fusion_weights.copy_(torch.tensor(measurement["votes"]))
    return model


def build_zero_shot_model(config: ModelConfig, image_encoder: ImageEncoder, text_encoder: TextEncoder) -> FusionModel:
    """A FusionModel whose predictions are exactly the zero-shot priors (each with weight one)."""
    prompts = [(k, p) for k, n in enumerate(config.labels) for p in label_prompts(n, config.descriptions.get(n))]
    config.prompt_count = len(prompts)
    config.line_vote = True
    model = FusionModel(config)
    labels = text_encoder.sentence_embeddings([label_prompt(n, config.descriptions.get(n)) for n in config.labels])
    similarity = _imagenet_name_embeddings(text_encoder) @ labels.T          # (1000, K)
    with torch.no_grad():
        model.label_embeddings.copy_(labels)
        model.prompt_embeddings.copy_(text_encoder.sentence_embeddings([p for _, p in prompts]))
        model.prompt_labels.copy_(torch.tensor([k for k, _ in prompts]))
        model.imagenet_to_label.copy_((IMAGENET_TO_LABEL_TEMPERATURE * similarity).softmax(-1))
        model.imagenet_fc.load_state_dict(image_encoder.imagenet_fc.state_dict())
    return model.eval()
