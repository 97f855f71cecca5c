"""Cached encoder outputs for training with frozen encoders ("head" mode).

Each (image, text) pair is encoded once and stored as fp16 safetensors under
<project>/features/<key>.safetensors, key = sha256(image bytes, text), so a caption edit or a
new item costs one encoding and everything else is read back.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from PIL import Image
from safetensors.torch import save_file

from fusion.core.atomic import write_atomic
from fusion.ml.abstain import image_present
from fusion.ml.encoders import ImageEncoder, patches_of
from fusion.imaging.images import load_image
from fusion.ml.safe_weights import load_safetensors

BATCH = 16  # images per EfficientNet pass: fills 2 CPU cores without a memory spike
READ_BATCH = 256  # cached files read at a time: the patches of 10,000 pages would fill 2.5 GB at once


@dataclass
class FeatureSet:
    patches: torch.Tensor   # (N, 49, 1280)
    tokens: torch.Tensor    # (N, L, 384), zero-padded
    mask: torch.Tensor      # (N, L)
    image_present: torch.Tensor  # (N,) bool: False for a blank image (fusion.ml.abstain)
    targets: torch.Tensor   # (N,) label indices
    lines: torch.Tensor     # (N, M, 384): each line of the text embedded alone, zero rows past its last

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, index: torch.Tensor) -> "FeatureSet":
        return FeatureSet(self.patches[index], self.tokens[index], self.mask[index], self.image_present[index],
                          self.targets[index], self.lines[index])

    def inputs(self, device: str) -> tuple[torch.Tensor, ...]:
        """The fusion model's inputs, in its forward's order."""
        return tuple(t.to(device) for t in (self.patches, self.tokens, self.mask, self.image_present, self.lines))


# What a cached file holds changed (step 8: the whole text in chunks, not its first 128 word pieces;
# the image_present flag; step 12: the text's lines): files of an older format are never read as
# if they were current.
FORMAT = b"whole-text-in-chunks+lines"


def feature_key(image_bytes: bytes, text: str) -> str:
    return hashlib.sha256(image_bytes + b"\0" + text.encode("utf-8") + b"\0" + FORMAT).hexdigest()


def _encode_batch(engine, images: list[Image.Image], texts: list[str]) -> list[dict[str, torch.Tensor]]:
    with torch.no_grad():
        pixels = ImageEncoder.preprocess(images).to(engine.device)
        patches = patches_of(engine.image_encoder(pixels)).half().cpu()
        present = image_present(pixels).cpu()
        tokens, mask = engine.text_encoder.encode(texts)
        lines = engine.text_encoder.line_embeddings(texts)
    out = []
    for i in range(len(images)):
        n, m = int(mask[i].sum()), int((lines[i].abs().sum(-1) > 0).sum())
        out.append({"patches": patches[i].contiguous(), "tokens": tokens[i, :n].half().cpu().contiguous(),
                    "image_present": present[i:i + 1].to(torch.uint8),
                    "lines": lines[i, :max(1, m)].half().cpu().contiguous()})
    return out


def cache_features(engine, cache_dir: Path, paths: list[Path], texts: list[str],
                   progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """Encode every (image, text) not cached yet; return the cache file of each pair, in order."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    files, todo = [], []
    for path, text in zip(paths, texts):
        f = cache_dir / f"{feature_key(Path(path).read_bytes(), text)}.safetensors"
        files.append(f)
        if not f.exists():
            todo.append((path, text, f))
    for start in range(0, len(todo), BATCH):
        chunk = todo[start:start + BATCH]
        encoded = _encode_batch(engine, [load_image(p) for p, _, _ in chunk], [t for _, t, _ in chunk])
        for (_, _, f), tensors in zip(chunk, encoded):
            # pid-named temp: two processes encoding the same pair never write into one file
            write_atomic(f, lambda tmp: save_file(tensors, str(tmp)))
        if progress:
            progress(min(start + BATCH, len(todo)), len(todo))
    return files


def load_feature_set(files: list[Path], targets: list[int]) -> FeatureSet:
    loaded = [load_safetensors(f) for f in files]   # a pickle is refused, never loaded
    length = max(t["tokens"].shape[0] for t in loaded)
    tokens = torch.zeros(len(loaded), length, loaded[0]["tokens"].shape[1])
    mask = torch.zeros(len(loaded), length, dtype=torch.long)
    for i, t in enumerate(loaded):
        n = t["tokens"].shape[0]
        tokens[i, :n] = t["tokens"].float()
        mask[i, :n] = 1
    lines = torch.zeros(len(loaded), max(t["lines"].shape[0] for t in loaded), tokens.shape[-1])
    for i, t in enumerate(loaded):
        lines[i, :t["lines"].shape[0]] = t["lines"].float()
    patches = torch.stack([t["patches"].float() for t in loaded])
    # files cached before step 8 have no flag: their images were taken to carry something
    present = torch.tensor([bool(t["image_present"]) if "image_present" in t else True for t in loaded])
    return FeatureSet(patches, tokens, mask, present, torch.tensor(targets, dtype=torch.long), lines)


def feature_batches(files: list[Path], rows=None, batch: int = READ_BATCH):
    """The cached features of files[rows] (all of them by default), a FeatureSet of `batch` files
    at a time, so a large project never sits in memory whole."""
    rows = range(len(files)) if rows is None else rows
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        yield load_feature_set([files[n] for n in chunk], [0] * len(chunk))
