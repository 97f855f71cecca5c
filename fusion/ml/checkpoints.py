"""Training checkpoints: one safetensors file per run, replaced atomically after every epoch.

It holds the weights that train (frozen ones are the pretrained values and are rebuilt), the
best epoch's weights, the optimizer's moments, and the loop's state as JSON metadata, so a run
resumed from it continues exactly where it stopped. Never a pickle.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from fusion.core.atomic import write_atomic
from fusion.core.errors import FusionError
from fusion.ml.safe_weights import load_safetensors, safetensors_metadata


# -- checkpoints ---------------------------------------------------------------------------
def trained_parameters(module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


def save_checkpoint(path: Path, trainable, optimizer, best: dict, meta: dict) -> None:
    """One safetensors file (weights, best weights, optimizer moments; the loop's state as its
    metadata), replaced atomically: a kill leaves the previous epoch's checkpoint whole."""
    state = {f"model.{n}": p.detach().cpu().clone() for n, p in trained_parameters(trainable).items()}
    state |= {f"best.{n}": v.cpu().clone() for n, v in best.items()}
    opt = optimizer.state_dict()
    for i, moments in opt["state"].items():
        state |= {f"opt.{i}.{k}": torch.as_tensor(v).cpu().clone() for k, v in moments.items()}
    groups = [{k: v for k, v in g.items()} for g in opt["param_groups"]]
    write_atomic(path, lambda tmp: save_file(state, str(tmp), metadata={
        "meta": json.dumps(meta), "param_groups": json.dumps(groups)}))


def load_checkpoint(path: Path, trainable, optimizer) -> tuple[dict, dict]:
    """Restore weights and optimizer in place; returns (best weights, loop state)."""
    if not path.is_file():
        raise FusionError(f"no checkpoint at {path}: the job ended before its first epoch; start a new one")
    header = safetensors_metadata(path)   # a pickle is refused, never loaded
    state = load_safetensors(path)
    params = trained_parameters(trainable)
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(state[f"model.{n}"])
    moments: dict[int, dict] = {}
    for key, value in state.items():
        if key.startswith("opt."):
            _, i, name = key.split(".", 2)
            moments.setdefault(int(i), {})[name] = value
    optimizer.load_state_dict({"state": moments, "param_groups": json.loads(header["param_groups"])})
    best = {k[5:]: v for k, v in state.items() if k.startswith("best.")}
    return best, json.loads(header["meta"])
