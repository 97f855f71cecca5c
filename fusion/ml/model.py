"""The fusion model: three heads (fused, image-only, text-only) over frozen encoder outputs.

Every head is "weighted zero-shot prior + learned residual", the weight starting at one and the
residual at zero, so an untrained model *is* the zero-shot classifier and training only moves
away from it where the labels say so:
  image prior  log( softmax(ImageNet logits) @ P(label | ImageNet class) )
  text prior   scale * cos(MiniLM sentence embedding, label embedding)
  image, text  w * prior + linear(standardised pooled features)
  fused        a * image logits + b * text logits (a weighted product of experts)
               + strategy-specific residual
The prior weights w and the fusion weights a, b train: a prior that misleads on a project's data is voted down instead of
outweighing the residual. The residuals read features standardised with the training set's
mean and spread: MiniLM's sentence vectors share one large common direction and sit on the unit
sphere, and raw, a residual moved ~0.03 logits per step against a x20 text prior (step 7).

Strategies (config.strategy):
  concat           late fusion of the pooled vectors (MLP over [image; text])
  gated            a learned per-sample modality weight g (Arevalo et al. 2017, GMU)
  cross_attention  text tokens attend to image patches and patches to tokens (co-attention)
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from fusion.ml.abstain import text_present
from fusion.core.atomic import fsync_dir, fsync_tree, temp_path
from fusion.ml.encoders import IMAGE_DIM, TEXT_DIM, mean_pool
from fusion.core.errors import FusionError
from fusion.ml.ood import score as ood_score

STRATEGIES = ("concat", "gated", "cross_attention")
HEADS = ("fused", "image", "text")   # the model's three opinions, in FusionOutput's order


@dataclass
class ModelConfig:
    labels: list[str]
    descriptions: dict[str, str] = field(default_factory=dict)
    strategy: str = "concat"
    hidden: int = 256
    heads: int = 4                      # attention heads for cross_attention
    dropout: float = 0.1
    text_scale: float = 20.0            # cosine -> logit temperature of the text prior
    prompt_count: int = 0               # > 0: the text prior matches the page's windows against this
                                        # many label prompts; 0 (versions before step 7): the whole page
                                        # against one vector per label
    line_vote: bool = False             # True: the text prior is the vote of the text's lines, each
                                        # embedded alone (step 12); False (versions before): the page
                                        # and its windows of token states
    loss_weights: tuple[float, float, float] = (1.0, 0.5, 0.5)  # fused, image-only, text-only
    version: str = "zero-shot"
    temperatures: tuple[float, float, float] = (1.0, 1.0, 1.0)  # fused, image, text: fitted on val
    finetuned_encoders: bool = False    # True: the version carries its own encoders.safetensors
    ood_bank: int = 0                   # training items kept for the OOD score (fusion.ml.ood);
                                        # 0: none (versions before step 8, zero-shot)

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown fusion strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"a model needs at least 2 distinct labels, got {self.labels}")
        self.loss_weights = tuple(self.loss_weights)
        self.temperatures = tuple(self.temperatures)


@dataclass
class FusionOutput:
    fused: torch.Tensor          # (B, K) logits
    image: torch.Tensor          # (B, K)
    text: torch.Tensor           # (B, K)
    gate: torch.Tensor | None    # (B,) weight of the image modality (gated only)
    text_to_image: torch.Tensor | None  # (B, L, 49) attention of tokens onto patches (cross_attention)
    text_present: torch.Tensor | None = None   # (B,) False: the text head abstained (fusion.ml.abstain)
    image_present: torch.Tensor | None = None  # (B,) False: the image head abstained
    ood: torch.Tensor | None = None     # (B, 3) OOD score of the page, its image, its text (fusion.ml.ood)


WINDOW, STRIDE = 16, 8     # word pieces: about a line of a page


def window_embeddings(tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-pooled, L2-normalised windows of WINDOW token states every STRIDE (B, W, D), and
    which hold any real token (B, W). A text shorter than a window is one window."""
    if tokens.shape[1] < WINDOW:
        pad = WINDOW - tokens.shape[1]
        tokens, mask = F.pad(tokens, (0, 0, 0, pad)), F.pad(mask, (0, pad))
    m = mask.to(tokens.dtype)
    sums = (tokens * m.unsqueeze(-1)).unfold(1, WINDOW, STRIDE).sum(-1)   # (B, W, D)
    counts = m.unfold(1, WINDOW, STRIDE).sum(-1)                           # (B, W)
    return F.normalize(sums / counts.clamp(min=1).unsqueeze(-1), dim=-1), counts > 0


def _zero_linear(i: int, o: int) -> nn.Linear:
    layer = nn.Linear(i, o)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class FusionModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        k, h = len(config.labels), config.hidden
        # Zero-shot priors (frozen buffers, filled by zeroshot.build_model or load()).
        self.register_buffer("label_embeddings", torch.zeros(k, TEXT_DIM))
        self.register_buffer("prompt_embeddings", torch.zeros(config.prompt_count, TEXT_DIM))
        self.register_buffer("prompt_labels", torch.zeros(config.prompt_count, dtype=torch.long))
        self.register_buffer("imagenet_to_label", torch.full((1000, k), 1.0 / k))
        self.imagenet_fc = nn.Linear(IMAGE_DIM, 1000).requires_grad_(False)
        self.prior_weights = nn.Parameter(torch.ones(2))   # image, text: how much each prior votes
        self.fusion_weights = nn.Parameter(torch.ones(2))  # image, text: each head's vote in the fused one
        # Per-feature standardisation of the pooled vectors (set from the training set: standardise()).
        self.register_buffer("image_mean", torch.zeros(IMAGE_DIM))
        self.register_buffer("image_std", torch.ones(IMAGE_DIM))
        self.register_buffer("text_mean", torch.zeros(TEXT_DIM))
        self.register_buffer("text_std", torch.ones(TEXT_DIM))
        # The OOD score's bank of training features and its scales (set by fusion.ml.ood.fit).
        self.register_buffer("ood_image_bank", torch.zeros(config.ood_bank, IMAGE_DIM))
        self.register_buffer("ood_text_bank", torch.zeros(config.ood_bank, TEXT_DIM))
        self.register_buffer("ood_scales", torch.ones(3))
        # Residual heads, zero at start.
        self.image_head = _zero_linear(IMAGE_DIM, k)
        self.text_head = _zero_linear(TEXT_DIM, k)
        self.image_proj = nn.Sequential(nn.LayerNorm(IMAGE_DIM), nn.Linear(IMAGE_DIM, h))
        self.text_proj = nn.Sequential(nn.LayerNorm(TEXT_DIM), nn.Linear(TEXT_DIM, h))
        self.dropout = nn.Dropout(config.dropout)
        if config.strategy == "gated":
            self.gate = _zero_linear(2 * h, 1)  # sigmoid(0) = 0.5: both modalities equal at start
        if config.strategy == "cross_attention":
            self.text_to_image = nn.MultiheadAttention(h, config.heads, dropout=config.dropout, batch_first=True)
            self.image_to_text = nn.MultiheadAttention(h, config.heads, dropout=config.dropout, batch_first=True)
            self.cross_norm = nn.LayerNorm(h)
        self.fused_head = nn.Sequential(nn.Linear(2 * h, h), nn.GELU(), _zero_linear(h, k))

    # -- priors ---------------------------------------------------------------------------
    def image_prior(self, image_pooled: torch.Tensor) -> torch.Tensor:
        p_imagenet = self.imagenet_fc(image_pooled).softmax(-1)
        return torch.log(p_imagenet @ self.imagenet_to_label + 1e-6)

    def text_prior(self, tokens: torch.Tensor, mask: torch.Tensor, lines: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K), from the text's lines (B, N, 384) when the config votes by lines, else from its tokens."""
        if self.config.line_vote:
            if lines is None:
                raise ValueError("this model's text prior reads the text's lines (TextEncoder.line_embeddings); none were given")
            return self.line_vote(lines)
        return self.window_prior(tokens, mask)

    def line_votes(self, lines: torch.Tensor) -> torch.Tensor:
        """(B, N, K): each line's vote, a distribution over the labels from the best cosine of the
        line with any of each label's prompts ("TOTAL 12.50" against "the total"), at text_scale.
        A line of zeros (padding) votes nothing: all zeros."""
        similarity = torch.einsum("bnd,pd->bnp", lines, self.prompt_embeddings)                 # (B, N, P)
        of_label = self.prompt_labels.unsqueeze(0) == torch.arange(len(self.config.labels), device=lines.device).unsqueeze(1)
        best = similarity.unsqueeze(2).masked_fill(~of_label, -2.0).amax(-1)                      # (B, N, K)
        real = lines.abs().sum(-1, keepdim=True) > 0
        return (self.config.text_scale * best).softmax(-1) * real

    def line_vote(self, lines: torch.Tensor) -> torch.Tensor:
        """(B, K): log of the lines' mean vote. On 90 real pages with the labels' descriptions, the
        project's OCR: 0.81 (the page and windows of token states, below: 0.62); a vote per line
        keeps one telling line from being averaged away by a page of others, and a window of token
        states carries its whole chunk. A text with no line: uniform."""
        votes = self.line_votes(lines)
        count = (votes.sum(-1) > 0).sum(-1, keepdim=True)                                        # (B, 1)
        share = votes.sum(1) / count.clamp(min=1)
        share = torch.where(count > 0, share, torch.full_like(share, 1.0 / share.shape[-1]))
        return torch.log(share + 1e-6)

    def window_prior(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, K), versions before step 12: the whole page against each label (two thirds) and, per label, its prompts' best
        cosine with any window of the page (one third), so one telling line ("TOTAL", "Abstract")
        counts even when the rest of the page talks of other things. With the window alone, a
        zero-shot explanation gave the top attribution to a window's neighbour ("ECG was reviewed":
        'reviewed') instead of the word that decided."""
        page = mean_pool(tokens, mask) @ self.label_embeddings.T                  # (B, K)
        if self.config.prompt_count == 0:
            return self.config.text_scale * page
        windows, valid = window_embeddings(tokens, mask)                          # (B, W, D), (B, W)
        similarity = torch.einsum("bwd,pd->bwp", windows, self.prompt_embeddings)
        best_window = similarity.masked_fill(~valid.unsqueeze(-1), -2.0).amax(1)  # (B, P)
        of_label = self.prompt_labels.unsqueeze(0) == torch.arange(len(self.config.labels), device=mask.device).unsqueeze(1)
        best = best_window.unsqueeze(1).masked_fill(~of_label.unsqueeze(0), -2.0).amax(-1)  # (B, K)
        return self.config.text_scale * (2 * page + best) / 3

    @torch.no_grad()
    def standardise(self, image_pooled: torch.Tensor, text_pooled: torch.Tensor) -> None:
        """Fit the residuals' feature standardisation to a training set's pooled vectors (N, D):
        centred (MiniLM's vectors share one large common direction) and scaled to unit length on
        average, so a weight and an optimizer step mean as much for either modality. One scale
        for every dimension keeps the encoder's geometry, as a logistic regression on raw features
        sees it (per-dimension scaling amplified noisy dimensions: image probe 0.88 vs 0.94)."""
        for name, x in (("image", image_pooled), ("text", text_pooled)):
            getattr(self, f"{name}_mean").copy_(x.float().mean(0))
            centred = x.float() - x.float().mean(0)
            scale = centred.norm(dim=1).pow(2).mean().sqrt().clamp(min=1e-6) if len(x) > 1 else torch.tensor(1.0)
            getattr(self, f"{name}_std").fill_(float(scale))

    def standardised(self, image_pooled: torch.Tensor, text_pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1280), (B, 384): what the residuals read."""
        return (image_pooled - self.image_mean) / self.image_std, (text_pooled - self.text_mean) / self.text_std

    def modality_logits(self, image_prior, text_prior, image_z, text_z) -> tuple[torch.Tensor, torch.Tensor]:
        """The image-only and text-only heads' logits (B, K), before temperature."""
        w_image, w_text = self.prior_weights
        image_logits = w_image * image_prior + self.image_head(self.dropout(image_z))
        text_logits = w_text * text_prior + self.text_head(self.dropout(text_z))
        return image_logits, text_logits

    # -- forward --------------------------------------------------------------------------
    def forward(self, patches: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor,
                image_present: torch.Tensor | None = None, lines: torch.Tensor | None = None) -> FusionOutput:
        """patches (B, 49, 1280), tokens (B, L, 384), mask (B, L); image_present (B,) bool
        (abstain.image_present of the pixels; None: every image carries something); lines
        (B, N, 384), the text's lines each embedded alone (TextEncoder.line_embeddings), which a
        model whose text prior votes by lines needs."""
        if patches.ndim != 3 or patches.shape[-1] != IMAGE_DIM:
            raise ValueError(f"patches must be (B, N, {IMAGE_DIM}), got {tuple(patches.shape)}")
        if tokens.ndim != 3 or tokens.shape[-1] != TEXT_DIM or mask.shape != tokens.shape[:2]:
            raise ValueError(f"tokens must be (B, L, {TEXT_DIM}) with mask (B, L), got {tuple(tokens.shape)}, {tuple(mask.shape)}")
        image_pooled = patches.mean(1)
        text_pooled = mean_pool(tokens, mask)
        image_z, text_z = self.standardised(image_pooled, text_pooled)
        image_logits, text_logits = self.modality_logits(self.image_prior(image_pooled), self.text_prior(tokens, mask, lines),
                                                         image_z, text_z)

        gate = attn = None
        if self.config.strategy == "cross_attention":
            img = self.image_proj(patches)   # (B, 49, h)
            txt = self.text_proj(tokens)     # (B, L, h)
            pad = mask == 0
            txt_att, attn = self.text_to_image(txt, img, img, need_weights=True)
            img_att, _ = self.image_to_text(img, txt, txt, key_padding_mask=pad, need_weights=False)
            txt_vec = mean_pool(self.cross_norm(txt + txt_att), mask)
            img_vec = self.cross_norm(img + img_att).mean(1)
        else:
            img_vec = self.image_proj(image_z)
            txt_vec = self.text_proj(text_z)
        residual = self.fused_head(self.dropout(torch.cat([img_vec, txt_vec], -1)))
        a_image, a_text = self.fusion_weights

        if self.config.strategy == "gated":
            gate = torch.sigmoid(self.gate(torch.cat([img_vec, txt_vec], -1))).squeeze(-1)
            g = gate.unsqueeze(-1)
            fused = 2 * (g * a_image * image_logits + (1 - g) * a_text * text_logits) + residual
        else:
            fused = a_image * image_logits + a_text * text_logits + residual
        tf, ti, tt = self.config.temperatures
        fused, image_logits, text_logits = fused / tf, image_logits / ti, text_logits / tt
        # A head with nothing to read abstains: uniform, and the fused head is the other one alone.
        has_text = text_present(mask)
        has_image = torch.ones_like(has_text) if image_present is None else image_present.to(has_text.device)
        no_text, no_image = ~has_text.unsqueeze(-1), ~has_image.unsqueeze(-1)
        text_logits = text_logits.masked_fill(no_text, 0.0)
        image_logits = image_logits.masked_fill(no_image, 0.0)
        fused = torch.where(no_text, image_logits, torch.where(no_image, text_logits, fused))
        ood = ood_score(image_z, text_z, self.ood_image_bank, self.ood_text_bank, self.ood_scales)
        return FusionOutput(fused, image_logits, text_logits, gate, attn, has_text, has_image, ood)

    def loss(self, out: FusionOutput, targets: torch.Tensor, class_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Joint loss: weighted sum of the three heads' cross-entropies."""
        wf, wi, wt = self.config.loss_weights
        ce = lambda logits: F.cross_entropy(logits, targets, weight=class_weights)  # noqa: E731
        return wf * ce(out.fused) + wi * ce(out.image) + wt * ce(out.text)

    # -- persistence ----------------------------------------------------------------------
    def write_files(self, folder: Path, extra_files=None) -> None:
        """Write model.safetensors + config.json + labels.json (+ what `extra_files(folder)` writes)
        into a new folder, fsynced: renamed into place afterwards, it is whole even after a power cut."""
        folder = Path(folder)
        folder.mkdir(parents=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps(asdict(self.config), indent=2))
        (folder / "labels.json").write_text(json.dumps({i: name for i, name in enumerate(self.config.labels)}, indent=2))
        if extra_files is not None:
            extra_files(folder)
        fsync_tree(folder)

    def save(self, directory: Path, extra_files=None) -> None:
        """Write the version's files atomically: all in a temp folder, then one rename.
        (A registered version goes through fusion.ml.registry.save_version, which commits its row
        between the two.)"""
        directory = Path(directory)
        if directory.exists():
            raise FileExistsError(f"model directory {directory} exists; versions are immutable")
        tmp = temp_path(directory)
        shutil.rmtree(tmp, ignore_errors=True)   # a dead process's leftover that had our pid
        try:
            self.write_files(tmp, extra_files)
            if directory.exists():
                raise FileExistsError(f"model directory {directory} exists; versions are immutable")
            os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(directory.parent)

    @classmethod
    def load(cls, directory: Path, device: str = "cpu") -> "FusionModel":
        """Load safetensors only; a pickle checkpoint is never unpickled."""
        directory = Path(directory)
        config = ModelConfig(**json.loads((directory / "config.json").read_text()))
        model = cls(config)
        try:
            state = load_file(str(directory / "model.safetensors"), device=device)
        except Exception as e:  # safetensors raises its own error type for a non-safetensors file
            raise FusionError(f"{directory / 'model.safetensors'} is not a valid safetensors file "
                              f"({e}); only safetensors checkpoints are loaded") from e
        model.load_state_dict(_with_defaults(state, model))
        return model.to(device).eval()


# Parameters and buffers added after versions were saved without them (steps 7, 8), and the values that
# make such a version predict exactly as it did: weights of one, no standardisation, no prompts.
_ADDED_LATER = ("prior_weights", "fusion_weights", "prompt_embeddings", "prompt_labels", "image_mean", "image_std",
                "text_mean", "text_std", "ood_image_bank", "ood_text_bank", "ood_scales")


def _with_defaults(state: dict[str, torch.Tensor], model: FusionModel) -> dict[str, torch.Tensor]:
    own = model.state_dict()
    return {name: own[name] for name in _ADDED_LATER if name not in state} | state
