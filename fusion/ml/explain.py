"""Explanations of a prediction.

(a) Grad-CAM (pytorch-grad-cam) of the fused logit over the image, at the image's own resolution.
(b) Per-word scores over the text: integrated gradients (Sundararajan et al. 2017) of the class's
    log-probability over the word-piece embeddings, from an all-zero baseline (signed: a negative
    word argues against the class; plain gradient x input ranked filler words first in our
    checks), and attention rollout through MiniLM (Abnar & Zuidema 2020); word pieces are summed
    back into the words the user typed. For a model whose text prior is its lines' vote, a word
    also scores what the class loses when its line is read without it (line_word_scores).
(c) For cross_attention models, the text's attention onto the 7x7 image patches.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from fusion.ml.encoders import ImageEncoder, TextBatch, TextEncoder, compact_chunks, patches_of, text_lines
from fusion.ml.model import FusionModel, FusionOutput

IG_STEPS = 5  # integrated-gradients steps (see explain())
IG_SEQUENCES = 8  # chunks of 128 word pieces through MiniLM with gradients at once


@dataclass
class Explanation:
    heatmap: np.ndarray                    # (H, W) float32 in [0, 1], the image's own size
    heatmap_peak: tuple[int, int]          # (x, y) in image pixels
    word_attribution: list[tuple[str, float]]  # every word, in order; scores in [-1, 1]
    word_attention: list[tuple[str, float]]    # every word, in order; scores in [0, 1]
    text_to_image: np.ndarray | None       # (H, W) in [0, 1], cross_attention models only
    words_total: int = 0                   # words of the page and caption; those past the last
                                           # chunk read (encoders.MAX_CHUNKS) have no score

    @property
    def words_read(self) -> int:
        return len(self.word_attribution)

    def top_words(self, n: int = 5) -> list[tuple[str, float]]:
        return sorted(self.word_attribution, key=lambda ws: ws[1], reverse=True)[:n]


class FusedLogitsOfImage(nn.Module):
    """The fused model as a function of the image alone (text held fixed): Grad-CAM's input."""

    def __init__(self, image_encoder: ImageEncoder, model: FusionModel, tokens: torch.Tensor, mask: torch.Tensor,
                 image_present: torch.Tensor, lines: torch.Tensor | None, features: torch.Tensor | None = None):
        super().__init__()
        self.image_encoder, self.model, self.tokens, self.mask = image_encoder, model, tokens, mask
        self.image_present, self.lines = image_present, lines
        self.features = features  # the trunk's output for the pixels to come, when already known

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        patches = patches_of(self.image_encoder.forward_for_cam(pixels, self.features))
        n = pixels.shape[0]
        return self.model(patches, self.tokens.expand(n, -1, -1), self.mask.expand(n, -1),
                          self.image_present.expand(n), _repeat(self.lines, n)).fused


def _repeat(lines: torch.Tensor | None, n: int) -> torch.Tensor | None:
    return None if lines is None else lines.expand(n, -1, -1)


def gradcam(image_model: nn.Module, target_layer: nn.Module, pixels: torch.Tensor,
            class_index: int, size: tuple[int, int]) -> np.ndarray:
    """Grad-CAM of one class for a single image, resized to `size` = (width, height)."""
    with GradCAM(model=image_model, target_layers=[target_layer]) as cam:
        grayscale = cam(input_tensor=pixels, targets=[ClassifierOutputTarget(class_index)])[0]
    heat = cv2.resize(grayscale.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    return np.clip(heat, 0.0, 1.0)


def peak_of(heatmap: np.ndarray) -> tuple[int, int]:
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return int(x), int(y)


def _per_word(batch: TextBatch, token_scores: torch.Tensor, word_scores: np.ndarray | None = None) -> list[tuple[str, float]]:
    """Sum word-piece scores into the whitespace words they came from ([CLS]/[SEP] dropped), plus
    `word_scores` (one per word) if given."""
    words = batch.words[0]
    totals = np.zeros(len(words), dtype=np.float64) if word_scores is None else word_scores.astype(np.float64)
    for token_index, word_index in enumerate(batch.word_ids[0]):
        if word_index is not None:
            totals[word_index] += float(token_scores[token_index])
    seen = {w for w in batch.word_ids[0] if w is not None}  # words cut by truncation get no score
    return [(words[i], float(totals[i])) for i in range(len(words)) if i in seen]


def _scaled(pairs: list[tuple[str, float]]) -> list[tuple[str, float]]:
    peak = max((abs(s) for _, s in pairs), default=0.0) or 1.0
    return [(w, round(s / peak, 4)) for w, s in pairs]


def attention_rollout(attentions: tuple[torch.Tensor, ...], chunk_mask: torch.Tensor) -> torch.Tensor:
    """Token importance for a mean-pooled encoder: rollout rows averaged over real tokens, chunk
    by chunk, weighted by the chunk's share of the text's tokens. One text: chunk_mask (1, C, T),
    attentions per layer (R, H, T, T) over its R non-empty chunks. -> (L,) over the text's tokens."""
    chunk_mask = chunk_mask.cpu()
    scores = torch.zeros(chunk_mask.shape[1:])                          # (C, T)
    total = float(chunk_mask.sum())
    for row, chunk in enumerate(chunk_mask[0].any(-1).nonzero().squeeze(1).tolist()):
        valid = chunk_mask[0, chunk].bool()
        rollout = None
        for layer in attentions:
            a = layer[row].float().mean(0).cpu()[valid][:, valid]          # heads averaged, padding dropped
            a = 0.5 * a + 0.5 * torch.eye(a.shape[0])             # the residual stream
            a = a / a.sum(-1, keepdim=True)
            rollout = a if rollout is None else a @ rollout
        scores[chunk, valid] = rollout.mean(0) * (int(valid.sum()) / total)
    return compact_chunks(scores.unsqueeze(0), chunk_mask)[0][0]


@dataclass
class ForwardPass:
    """What the prediction pass computed for one image and one text; explanations reuse it."""
    pixels: torch.Tensor                      # (1, 3, 224, 224)
    patches: torch.Tensor                     # (1, 49, 1280)
    batch: TextBatch                          # one text
    tokens: torch.Tensor                      # (1, L, 384)
    mask: torch.Tensor                        # (1, L)
    attentions: tuple[torch.Tensor, ...]      # per layer (R, H, T, T), R: the text's chunks
    output: FusionOutput
    lines: torch.Tensor | None = None         # (1, N, 384): the text's lines, for a line-vote prior
    text: str = ""                            # the text itself, whose lines those are


OCCLUSION_BATCH = 32   # variants of the text's lines through the fusion model at once


@torch.no_grad()
def line_word_scores(text_encoder: TextEncoder, model: FusionModel, fwd: ForwardPass, class_index: int) -> np.ndarray:
    """(words,): for a model whose text prior is its lines' vote, what the class's fused
    log-probability loses when each word is left out of its line (the line embedded again
    without it). Occlusion, not gradients: integrated gradients through a line's embedding from
    zero put "reviewed" above "ECG" in "the ECG was reviewed", and lines are at most
    encoders.LINE_WORDS words, so a page's variants are cheap (<= 1,024 short lines)."""
    words = len(fwd.batch.words[0])
    lines = text_lines(fwd.text)
    if fwd.lines is None or not model.config.line_vote or not lines:
        return np.zeros(words)
    variants = [(j, i) for j, line in enumerate(lines) for i in range(len(line))]
    vectors = torch.zeros(len(variants), fwd.lines.shape[-1], device=fwd.lines.device)   # a line of one word, left out: silent
    shorter = [(v, line[:i] + line[i + 1:]) for v, (j, i) in enumerate(variants) if len(line := lines[j]) > 1]
    if shorter:
        vectors[[v for v, _ in shorter]] = text_encoder.embed_lines([line for _, line in shorter])

    def log_p(line_sets: torch.Tensor) -> torch.Tensor:
        n = len(line_sets)
        out = model(fwd.patches.expand(n, -1, -1), fwd.tokens.expand(n, -1, -1), fwd.mask.expand(n, -1),
                    fwd.output.image_present.expand(n), line_sets)
        return out.fused.float().log_softmax(-1)[:, class_index]

    base = log_p(fwd.lines)[0]
    losses = []
    for start in range(0, len(variants), OCCLUSION_BATCH):
        rows = torch.arange(start, min(start + OCCLUSION_BATCH, len(variants)))
        line_sets = fwd.lines.expand(len(rows), -1, -1).clone()
        line_sets[torch.arange(len(rows)), torch.tensor([variants[r][0] for r in rows])] = vectors[rows]
        losses.append(base - log_p(line_sets))
    scores = np.zeros(words)          # words past MAX_LINES lines: no line of theirs votes
    scores[:len(variants)] = torch.cat(losses).double().cpu().numpy()
    return scores


def explain(image_encoder: ImageEncoder, text_encoder: TextEncoder, model: FusionModel,
            fwd: ForwardPass, class_index: int, size: tuple[int, int]) -> Explanation:
    """Explain `class_index` of the fused head; `size` = (width, height) of the original image."""
    # A confident prediction's gradients underflow to denormals, which x86 computes ~20x slower
    # (8.4 s instead of 0.4 s for one demo page); flushing them to zero leaves every score the same.
    # The setting is the calling thread's own (the engine's explainer thread).
    torch.set_flush_denormal(True)
    with torch.enable_grad():  # callers serve under no_grad; attributions need gradients
        # (b) integrated gradients, midpoint rule: 5 midpoints agreed with a 64-step reference
        # (Spearman 0.84-0.92) better than 8 right-end steps did. Steps go in batches of at most
        # IG_SEQUENCES chunk passes: all 5 at once for a short text, one by one for a long page
        # (a 1,500-word page's 22 chunks x 5 steps at once peaked at 3.8 GB).
        embeds = text_encoder.embed(fwd.batch.input_ids).detach()      # (1, C, T, D)
        alphas = ((torch.arange(IG_STEPS, device=embeds.device) + 0.5) / IG_STEPS).view(-1, 1, 1, 1)
        per_batch = max(1, IG_SEQUENCES // embeds.shape[1])
        gradient = torch.zeros_like(embeds)
        for first in range(0, IG_STEPS, per_batch):
            step_alphas = alphas[first:first + per_batch]
            path = (step_alphas * embeds).requires_grad_(True)          # baseline: zero embeddings
            n = len(step_alphas)
            tokens, mask, _ = text_encoder(fwd.batch.repeat(n), inputs_embeds=path)
            out = model(fwd.patches.expand(n, -1, -1), tokens, mask, fwd.output.image_present.expand(n),
                        _repeat(fwd.lines, n))
            out.fused.log_softmax(-1)[:, class_index].sum().backward()
            gradient += path.grad.sum(0, keepdim=True)
        per_piece = (embeds * gradient / IG_STEPS).sum(-1).cpu()       # (1, C, T)
        integrated = compact_chunks(per_piece, fwd.batch.chunk_mask.cpu())[0][0]

        # (a) Grad-CAM with the text held fixed.
        feature_map = fwd.patches.transpose(1, 2).reshape(1, -1, 7, 7)  # patches_of, undone
        image_model = FusedLogitsOfImage(image_encoder, model, fwd.tokens, fwd.mask, fwd.output.image_present,
                                         fwd.lines, feature_map)
        heatmap = gradcam(image_model, image_encoder.feature_map, fwd.pixels, class_index, size)

    attribution = _scaled(_per_word(fwd.batch, integrated, line_word_scores(text_encoder, model, fwd, class_index)))
    attention = _scaled(_per_word(fwd.batch, attention_rollout(fwd.attentions, fwd.batch.chunk_mask)))

    # (c) cross-attention: tokens -> 7x7 patches, averaged over the real (non-special) tokens.
    text_to_image = None
    if fwd.output.text_to_image is not None:
        real = torch.tensor([w is not None for w in fwd.batch.word_ids[0]])
        grid = fwd.output.text_to_image[0].cpu()[real].mean(0).reshape(7, 7).float().numpy()
        grid = (grid - grid.min()) / (np.ptp(grid) or 1.0)
        text_to_image = cv2.resize(grid, size, interpolation=cv2.INTER_LINEAR)
    return Explanation(heatmap, peak_of(heatmap), attribution, attention, text_to_image, len(fwd.batch.words[0]))
