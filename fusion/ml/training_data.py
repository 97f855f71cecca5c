"""What training reads: a project's human-labeled items, as cached features ("head" mode) or as
pixels and token ids decoded once per run ("partial" and "full" modes).

Decoding a 1000x800 page costs ~10 ms; doing it once per run (in parallel) and keeping the
224x224 uint8 result in memory turns every epoch into tensor slicing, so a GPU is fed at
thousands of samples/s with no per-epoch JPEG/PNG work.
"""
from __future__ import annotations

import hashlib
import json
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fusion.ml.encoders import IMAGE_SIZE
from fusion.core.errors import FusionError
from fusion.imaging.images import load_image
from fusion.ml.pipeline import compose_text
from fusion.store.schema import SPLITS
from fusion.store.labeling import HUMAN_STATUSES


MAX_PAGES = 2000   # a seeded sample of a larger project's pages: features of 2,000 pages take ~0.5 GB


@dataclass
class Examples:
    """A project's human-labeled items, as training reads them."""
    ids: list[int]
    paths: list[Path]
    texts: list[str]
    labels: list[str]
    splits: list[str]
    pseudo_labeled: int = 0   # the last this many: pages no one labeled, labeled by zero-shot (train split)

    def counts(self) -> dict[str, int]:
        """Items a person labeled in each split, and the pages zero-shot labeled."""
        people = self.splits[:len(self.splits) - self.pseudo_labeled]
        return {**{s: people.count(s) for s in SPLITS}, "pseudo_labeled": self.pseudo_labeled}

    def snapshot(self) -> dict:
        """What a model version saw: item ids and a hash of (id, label, text) pairs."""
        digest = hashlib.sha256(json.dumps(list(zip(self.ids, self.labels, self.texts))).encode()).hexdigest()
        return {"item_ids": self.ids, "labels_hash": digest, "counts": self.counts()}

    def plus_pseudo_labeled(self, pages: "Examples") -> "Examples":
        """These examples, then `pages` labeled by zero-shot, as training items."""
        return Examples(self.ids + pages.ids, self.paths + pages.paths, self.texts + pages.texts,
                        self.labels + pages.labels, self.splits + ["train"] * len(pages.ids),
                        self.pseudo_labeled + len(pages.ids))

    def split_index(self, split: str) -> torch.Tensor:
        return torch.tensor([i for i, s in enumerate(self.splits) if s == split], dtype=torch.long)

    def check_splits(self) -> None:
        counts = {s: self.splits.count(s) for s in SPLITS}
        if any(n == 0 for n in counts.values()):
            raise FusionError(f"training needs labeled items in each of train/val/test, got {counts}; "
                              "label more items (accept or correct them on the Review page)")


def labeled_examples(store, project_name: str) -> Examples:
    """Items a person labeled (accepted or corrected), with their stored text: no OCR at training."""
    examples = Examples([], [], [], [], [])
    for item in store.iter_items(project_name):
        if item.status in HUMAN_STATUSES and item.label is not None:
            examples.ids.append(item.id)
            examples.paths.append(store.image_path(item))
            examples.texts.append(compose_text(item.ocr_text or "", item.caption))
            examples.labels.append(item.label)
            examples.splits.append(item.split)
    return examples


def sampled_rows(n: int, limit: int = MAX_PAGES, seed: int = 0) -> list[int]:
    """Rows 0..n-1, or a seeded sample of `limit` of them in order where there are more."""
    return sorted(random.Random(seed).sample(range(n), limit)) if n > limit else list(range(n))


def readable_pages(store, project_name: str, unlabeled_only: bool = False) -> tuple[Examples, int]:
    """The project's pages outside the test split whose text is read (labels left empty), all of
    them or those no one labeled; and how many were left out because no one has read their text
    yet (pre-labeling does). What zero-shot adapts to, and what training may pseudo-label."""
    pages, unread = Examples([], [], [], [], []), 0
    for item in store.iter_items(project_name):
        if item.split == "test" or (unlabeled_only and item.status in HUMAN_STATUSES):
            continue
        if item.ocr_text is None and not item.caption:
            unread += 1
            continue
        pages.ids.append(item.id)
        pages.paths.append(store.image_path(item))
        pages.texts.append(compose_text(item.ocr_text or "", item.caption))
        pages.labels.append("")
        pages.splits.append(item.split)
    return pages, unread


@dataclass
class PixelSet:
    pixels: torch.Tensor     # (N, 3, 224, 224) uint8: 150 KB an item
    input_ids: torch.Tensor  # (N, C, T) chunks of word pieces (encoders.TextBatch)
    mask: torch.Tensor       # (N, C, T) 1 for real word pieces
    targets: torch.Tensor    # (N,)
    lines: torch.Tensor      # (N, M, 384) fp16: each line of the text embedded alone (the text prior's input)

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, index: torch.Tensor) -> "PixelSet":
        return PixelSet(self.pixels[index], self.input_ids[index], self.mask[index], self.targets[index],
                        self.lines[index])

    def inputs(self, device: str) -> tuple[torch.Tensor, ...]:
        nb = device.startswith("cuda")
        return tuple(t.to(device, non_blocking=nb) for t in (self.pixels, self.input_ids, self.mask, self.lines))

    def to(self, device: str) -> "PixelSet":
        return PixelSet(*(t.to(device) for t in (self.pixels, self.input_ids, self.mask)), self.targets,
                        self.lines.to(device))

    def on_gpu_if_it_fits(self, device: str, share: float = 0.25) -> "PixelSet":
        """The whole set in GPU memory when it takes under `share` of it (150 KB an item: 100k
        items is 15 GB): each batch is then sliced on the GPU, with no host copy at all."""
        if device.startswith("cuda") and self.pixels.nbytes < share * torch.cuda.get_device_properties(device).total_memory:
            return self.to(device)
        return self


def _pixels(path: Path) -> np.ndarray:
    image: Image.Image = load_image(path).convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    return np.asarray(image).transpose(2, 0, 1)


def pixel_set(paths: list[Path], texts: list[str], targets: list[int], text_encoder, workers: int = 8,
              lines: torch.Tensor | None = None) -> PixelSet:
    """Decode and resize every image once (PIL releases the GIL: threads decode in parallel),
    tokenize every text once and embed its lines once, unless `lines` are given (the text
    prior reads them as the bare encoder embeds them: a fine-tuned `text_encoder` gives them)."""
    with ThreadPoolExecutor(workers) as pool:
        arrays = list(pool.map(_pixels, paths))
    batch = text_encoder.tokenize(texts)
    return PixelSet(torch.from_numpy(np.stack(arrays)), batch.input_ids, batch.chunk_mask,
                    torch.tensor(targets, dtype=torch.long),
                    (text_encoder.line_embeddings(texts) if lines is None else lines).half().cpu())
