"""What each training mode updates, as one module that maps a batch to the three heads' logits.

  head     encoders frozen, their outputs cached: only the fusion heads train (a CPU is enough)
  partial  the top of both encoders (EfficientNet's last blocks and head conv, MiniLM's last
           layers) trains with the heads
  full     everything trains; on a GPU in bf16 autocast with channels_last images

BatchNorm statistics stay frozen in every mode: a review project's batches are small and
skewed, and re-estimated statistics would drift from what the pretrained weights expect.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from fusion.ml.abstain import image_present
from fusion.ml.encoders import ImageEncoder, TextEncoder, patches_of
from fusion.ml.model import FusionModel, FusionOutput

MODES = ("head", "partial", "full")
PARTIAL_IMAGE_BLOCKS = 3     # of EfficientNet-Lite0's 16 MBConv blocks
PARTIAL_TEXT_LAYERS = 2      # of MiniLM's 6 transformer layers
ENCODER_LR_SCALE = 0.05      # encoders move 20x slower than the freshly initialised heads
LORA_RANK = 8


class HeadsOnFeatures(nn.Module):
    """`head` mode: the fusion model over cached (patches, tokens, mask, image_present, lines)."""

    def __init__(self, fusion: FusionModel):
        super().__init__()
        self.fusion = fusion

    def encode(self, patches: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, image_present: torch.Tensor,
               lines: torch.Tensor):
        return patches, tokens, mask, image_present, lines

    def forward(self, patches: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor,
                image_present: torch.Tensor, lines: torch.Tensor) -> FusionOutput:
        return self.fusion(patches, tokens, mask, image_present, lines)


class EndToEnd(nn.Module):
    """`partial` and `full` modes: uint8 pixels and token ids in, through both encoders."""

    def __init__(self, image_encoder: ImageEncoder, text_encoder: TextEncoder, fusion: FusionModel,
                 channels_last: bool = False):
        super().__init__()
        self.image_encoder, self.text_encoder, self.fusion = image_encoder, text_encoder, fusion
        self.channels_last = channels_last
        if channels_last:
            self.image_encoder.to(memory_format=torch.channels_last)

    def encode(self, pixels: torch.Tensor, input_ids: torch.Tensor, chunk_mask: torch.Tensor, lines: torch.Tensor):
        """(patches (B, 49, 1280), tokens (B, L, 384), mask (B, L), image_present (B,), lines) through
        both encoders, from pixels (B, 3, 224, 224) and chunked word pieces (B, C, T)
        (encoders.TextBatch). The lines (B, N, 384) pass as they are: the text prior they feed is
        frozen, read by the bare encoder its prompts were embedded with."""
        x = (pixels.float() - 127.0) / 128.0      # EfficientNet-Lite's input scaling
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        patches = patches_of(self.image_encoder(x)).float()
        # SDPA copy of MiniLM: same weights as the eager one, faster, no attentions needed here.
        tokens, mask, _ = self.text_encoder.states(input_ids, chunk_mask, bert=self.text_encoder.bert_sdpa)
        return patches, tokens.float(), mask, image_present(pixels), lines.float()

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, chunk_mask: torch.Tensor,
                lines: torch.Tensor) -> FusionOutput:
        return self.fusion(*self.encode(pixels, input_ids, chunk_mask, lines))

    def train(self, mode: bool = True) -> "EndToEnd":
        super().train(mode)
        for m in self.image_encoder.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


def encoders_for_training(mode: str, image_encoder: ImageEncoder, text_encoder: TextEncoder,
                          lora: bool = False) -> tuple[ImageEncoder, TextEncoder]:
    """Private copies of the encoders with the parameters `mode` trains set to require grad.
    With `lora`, MiniLM trains through low-rank adapters on its attention instead (merged back
    into plain weights after training, so predicting needs no peft)."""
    image_encoder, text_encoder = copy.deepcopy(image_encoder), text_encoder.copy()
    image_encoder.requires_grad_(False)
    text_encoder.requires_grad_(False)
    backbone, bert = image_encoder.backbone, text_encoder.bert_sdpa
    if mode == "full":
        for name, p in backbone.named_parameters():
            p.requires_grad_(not name.startswith("_fc."))   # the ImageNet classifier is not on the path
        image_encoder.feature_map.requires_grad_(True)
        if not lora:
            bert.embeddings.requires_grad_(True)
            bert.encoder.requires_grad_(True)
    elif mode == "partial":
        for block in list(backbone._blocks)[-PARTIAL_IMAGE_BLOCKS:]:
            block.requires_grad_(True)
        backbone._conv_head.requires_grad_(True)
        backbone._bn1.requires_grad_(True)
        if not lora:
            for layer in list(bert.encoder.layer)[-PARTIAL_TEXT_LAYERS:]:
                layer.requires_grad_(True)
    if lora:
        from peft import LoraConfig, get_peft_model

        text_encoder.bert_sdpa = get_peft_model(bert, LoraConfig(
            r=LORA_RANK, lora_alpha=2 * LORA_RANK, lora_dropout=0.05, target_modules=["query", "value"]))
    return image_encoder, text_encoder


def merge_lora(text_encoder: TextEncoder) -> TextEncoder:
    """Fold LoRA adapters into MiniLM's weights. The eager copy shares those tensors, so both
    copies see the merged weights."""
    if hasattr(text_encoder.bert_sdpa, "merge_and_unload"):
        text_encoder.bert_sdpa = text_encoder.bert_sdpa.merge_and_unload()
    return text_encoder


def parameter_groups(trainable: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Heads, the weights of the priors and of the heads in the fused one (no decay: a vote that
    helps should keep its size), and the encoders."""
    named = [(n, p) for n, p in trainable.named_parameters() if p.requires_grad]
    votes = ("fusion.prior_weights", "fusion.fusion_weights")
    heads = [p for n, p in named if n.startswith("fusion.") and n not in votes]
    priors = [p for n, p in named if n in votes]
    encoders = [p for n, p in named if not n.startswith("fusion.")]
    groups = [{"params": heads, "lr": lr, "weight_decay": weight_decay, "name": "heads"},
              {"params": priors, "lr": lr, "weight_decay": 0.0, "name": "priors"}]
    if encoders:
        groups.append({"params": encoders, "lr": lr * ENCODER_LR_SCALE, "weight_decay": weight_decay,
                       "name": "encoders"})
    return groups


def pretrained_anchor(trainable: nn.Module) -> dict[str, torch.Tensor]:
    """The pretrained values of the encoder parameters that train, for L2-SP."""
    return {n: p.detach().clone() for n, p in trainable.named_parameters()
            if p.requires_grad and not n.startswith("fusion.") and "lora_" not in n}


def l2sp_penalty(trainable: nn.Module, anchor: dict[str, torch.Tensor]) -> torch.Tensor:
    """sum ||w - w_pretrained||^2 over the trained encoder weights (Li et al. 2018, L2-SP)."""
    params = dict(trainable.named_parameters())
    return sum(((params[n] - w0) ** 2).sum() for n, w0 in anchor.items())
