"""The out-of-distribution ("none of these") score: how unlike a version's training pages a page is.

A version keeps a bank of its training items' features: the standardised pooled image and text
vectors (what its heads read), L2-normalised, at most BANK_LIMIT items. Per modality, a page's
distance is the cosine distance to its K-th nearest bank item (deep k-nearest neighbours, Sun et
al. 2022: no assumption about the shape of a class), divided by the median of that distance over
the training items themselves (leave-one-out), so the two modalities weigh alike. The page's
score is the larger of the two (a receipt may look like a form yet read like nothing trained on),
divided by the FLAG_QUANTILE quantile of the same score over the training items (leave-one-out)
and the validation items. So the score is 1 at the flagging threshold: above it a page is "none
of these / needs review", and about 1 - FLAG_QUANTILE of in-distribution pages are.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

K = 5
BANK_LIMIT = 2048          # items kept: 2048 x (1280 + 384) fp32 is 13.6 MB in a version
FLAG_QUANTILE = 0.98       # 2% of usual pages flagged, so sampling noise in the quantile (a few
                           # hundred reference items) keeps it under 5%


def kth_distance(queries: torch.Tensor, bank: torch.Tensor, leave_one_out: bool = False) -> torch.Tensor:
    """(B,) cosine distance of each L2-normalised query (B, D) to its K-th nearest bank row (M, D);
    with `leave_one_out` the queries are the bank and each row's own match is left out."""
    if len(bank) == 0:
        return torch.zeros(len(queries), device=queries.device)
    similarity = queries @ bank.T
    if leave_one_out:
        similarity.fill_diagonal_(-2.0)
    k = min(K, bank.shape[0] - int(leave_one_out))
    return 1.0 - similarity.topk(max(k, 1), dim=1).values[:, -1]


def _normalised(image_z: torch.Tensor, text_z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return F.normalize(image_z.float(), dim=-1), F.normalize(text_z.float(), dim=-1)


def fit(model, train_image_z: torch.Tensor, train_text_z: torch.Tensor, val_image_z: torch.Tensor,
        val_text_z: torch.Tensor, seed: int = 0) -> dict:
    """Fill the model's bank and scales from its training and validation items' standardised
    pooled features (N, D); returns what was fitted (for the version's metrics)."""
    if len(train_image_z) < K + 1:
        return {"bank": 0}                                # too few items to know what is usual
    keep = torch.randperm(len(train_image_z), generator=torch.Generator().manual_seed(seed))[:BANK_LIMIT]
    image_bank, text_bank = _normalised(train_image_z[keep].cpu(), train_text_z[keep].cpu())
    image_loo = kth_distance(image_bank, image_bank, leave_one_out=True)
    text_loo = kth_distance(text_bank, text_bank, leave_one_out=True)
    scales = torch.stack([image_loo.median(), text_loo.median()]).clamp(min=1e-4)
    val_image, val_text = _normalised(val_image_z.cpu(), val_text_z.cpu())
    usual = torch.cat([torch.maximum(image_loo / scales[0], text_loo / scales[1]),
                       torch.maximum(kth_distance(val_image, image_bank) / scales[0],
                                     kth_distance(val_text, text_bank) / scales[1])])
    threshold = torch.quantile(usual, FLAG_QUANTILE).clamp(min=1e-4)
    model.config.ood_bank = len(keep)
    device = model.ood_scales.device
    model.ood_image_bank, model.ood_text_bank = image_bank.to(device), text_bank.to(device)
    model.ood_scales = torch.cat([scales, threshold.view(1)]).to(device)
    return {"bank": len(keep), "image_scale": round(float(scales[0]), 5), "text_scale": round(float(scales[1]), 5),
            "threshold": round(float(threshold), 4), "reference_items": len(usual)}


def fields(row: torch.Tensor | None) -> dict:
    """One page's row of `score` as a prediction carries it: ood_score and ood_parts (None, {}
    without a bank)."""
    if row is None:
        return {"ood_score": None, "ood_parts": {}}
    page, image, text = (round(float(v), 4) for v in row)
    return {"ood_score": page, "ood_parts": {"image": image, "text": text}}


def score(image_z: torch.Tensor, text_z: torch.Tensor, image_bank: torch.Tensor, text_bank: torch.Tensor,
          scales: torch.Tensor) -> torch.Tensor | None:
    """(B, 3) OOD scores of standardised pooled features (B, D): the page's (above 1: flagged),
    then its image's and its text's alone on the same scale. None without a bank."""
    if len(image_bank) == 0:
        return None
    image, text = _normalised(image_z, text_z)
    image_distance = kth_distance(image, image_bank.float()) / scales[0] / scales[2]
    text_distance = kth_distance(text, text_bank.float()) / scales[1] / scales[2]
    return torch.stack([torch.maximum(image_distance, text_distance), image_distance, text_distance], 1)
