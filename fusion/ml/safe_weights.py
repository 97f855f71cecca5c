"""Weight files are read as safetensors and nothing else.

A pickle (what torch.save writes) can run any code when it is loaded, so a model version, an
encoder file, a training checkpoint or a feature cache that is not safetensors is refused with
a clear message, never unpickled. torch.load appears nowhere in fusion/ (a test checks).
"""
from __future__ import annotations

from pathlib import Path

from fusion.core.errors import FusionError


def _refused(path: Path, e: Exception) -> FusionError:
    return FusionError(f"{path} is not a valid safetensors file ({str(e)[:200]}); "
                       "only safetensors checkpoints are loaded")


def load_safetensors(path: Path, device: str = "cpu") -> dict:
    """The tensors of a safetensors file, or FusionError (a missing file says so)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FusionError(f"no weights file at {path}")
    try:
        return load_file(str(path), device=device)
    except Exception as e:   # safetensors raises its own error type (and OSError) for a non-safetensors file
        raise _refused(path, e) from None


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The file's metadata, reading only its header: a cheap check that it is safetensors at all."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FusionError(f"no weights file at {path}")
    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except Exception as e:
        raise _refused(path, e) from None
