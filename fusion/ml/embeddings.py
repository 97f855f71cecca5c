"""Fused embeddings of a project's items, one matrix per model version: the Dataset page's map and
"more like this".

An item's embedding is what the version's heads read, from the features the project caches: its
pooled image and text features, standardised as the version standardises them (zero-shot: centred
on the project's items), each modality scaled to unit length and the two concatenated, so the page
and its words count alike. PCA over the project's items keeps DIMS dimensions; rows are scaled to
unit length, so a dot product is a cosine similarity. The map is the first two components.

The encoders are the pretrained ones whose features are cached: a version fine-tuned end to end
(`full` mode) is not run over every page for its map. Saved as <project>/embeddings/<version>.npz.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from fusion.core.atomic import write_bytes_atomic
from fusion.core.errors import FusionError
from fusion.ml.features import cache_features, feature_batches
from fusion.ml.encoders import mean_pool
from fusion.ml.model import FusionModel
from fusion.ml.pipeline import compose_text, get_engine

DIMS = 128          # kept by PCA: 100,000 items are 51 MB of float32, a query a few milliseconds
ZERO_SHOT = "zero-shot"


@dataclass
class Embeddings:
    version: str             # the model version they were computed for ("zero-shot": none active)
    item_ids: np.ndarray     # (N,) int64, ascending
    vectors: np.ndarray      # (N, D) float32, unit rows
    map: np.ndarray          # (N, 2) float32: the first two principal components
    map_variance: float      # the share of the variance the map's two axes show
    computed_at: datetime

    def row_of(self, item_id: int) -> int | None:
        row = int(np.searchsorted(self.item_ids, item_id))
        return row if row < len(self.item_ids) and self.item_ids[row] == item_id else None


def embeddings_path(project) -> Path:
    """Where the active version's embeddings are saved."""
    return project.directory / "embeddings" / f"{project.active_model or ZERO_SHOT}.npz"


def pooled_vectors(files: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled image (N, 1280) and text (N, 384) vectors of cached feature files."""
    image, text = [], []
    for batch in feature_batches(files):
        image.append(batch.patches.mean(1))
        text.append(mean_pool(batch.tokens, batch.mask))
    return torch.cat(image), torch.cat(text)


def embed(image: torch.Tensor, text: torch.Tensor, fusion: FusionModel | None) -> tuple[np.ndarray, np.ndarray, float]:
    """(vectors (N, D) with unit rows, map (N, 2), the map's share of the variance)."""
    if fusion is None:
        image, text = image - image.mean(0), text - text.mean(0)
    else:
        image, text = fusion.standardised(image, text)
    joined = torch.cat([torch.nn.functional.normalize(image, dim=1), torch.nn.functional.normalize(text, dim=1)], 1)
    joined = joined - joined.mean(0)
    dims = max(1, min(DIMS, len(joined) - 1, joined.shape[1]))
    _, s, v = torch.pca_lowrank(joined, q=dims, center=False, niter=4)
    scores = joined @ v
    total = float(joined.pow(2).sum().clamp(min=1e-12))
    shown = float(s[:2].pow(2).sum()) / total
    vectors = torch.nn.functional.normalize(scores, dim=1)
    return vectors.numpy().astype(np.float32), scores[:, :2].numpy().astype(np.float32), shown


def compute_embeddings(settings, store, project_name: str, progress=None) -> Embeddings:
    """Embed every item of the project for its active version (encoding the features not cached
    yet) and save them; run by the `embed` job after a promotion."""
    project = store.project(project_name)
    items = list(store.iter_items(project_name))
    if len(items) < 3:
        raise FusionError("a map needs at least 3 items in the project")
    engine = get_engine(settings)
    files = cache_features(engine, project.directory / "features", [store.image_path(i) for i in items],
                           [compose_text(i.ocr_text or "", i.caption) for i in items],
                           (lambda done, total: progress("encoding", done, total)) if progress else None)
    if progress:
        progress("embedding", 0, 1)
    version = project.active_model or ZERO_SHOT
    fusion = FusionModel.load(project.model_dir(version)) if project.active_model else None
    with torch.no_grad():
        vectors, points, variance = embed(*pooled_vectors(files), fusion)
    result = Embeddings(version, np.array([i.id for i in items], dtype=np.int64), vectors, points, variance,
                        datetime.now(timezone.utc).replace(tzinfo=None))
    buffer = io.BytesIO()
    np.savez(buffer, item_ids=result.item_ids, vectors=result.vectors, map=result.map,
             map_variance=np.float32(variance), computed_at=np.array(result.computed_at.isoformat()))
    write_bytes_atomic(embeddings_path(project), buffer.getvalue())
    return result


def load_embeddings(project) -> Embeddings | None:
    """The embeddings of the project's active version, or None if not computed yet."""
    path = embeddings_path(project)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as saved:
        return Embeddings(project.active_model or ZERO_SHOT, saved["item_ids"], saved["vectors"], saved["map"],
                          float(saved["map_variance"]), datetime.fromisoformat(str(saved["computed_at"])))


def nearest(embeddings: Embeddings, item_id: int, k: int = 10) -> list[tuple[int, float]]:
    """The k items most like `item_id` (exact: one matrix-vector product), as (item id, cosine
    similarity), most alike first. FusionError if the item has no embedding yet."""
    row = embeddings.row_of(item_id)
    if row is None:
        raise FusionError(f"item {item_id} has no embedding yet (added after the map was computed); "
                          "compute the map again")
    scores = embeddings.vectors @ embeddings.vectors[row]
    scores[row] = -np.inf
    k = min(k, len(scores) - 1)
    best = np.argpartition(-scores, k)[:k] if k < len(scores) else np.arange(len(scores))
    best = best[np.argsort(-scores[best])]
    return [(int(embeddings.item_ids[n]), float(scores[n])) for n in best]

