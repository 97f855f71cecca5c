"""How a long task says how far it is: one record every kind of work reports (import, OCR,
encoding, training, pre-labeling...), kept in a job's row as JSON and read back by the pages."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable


@dataclass(frozen=True)
class Progress:
    stage: str                            # "encoding", "training", "epoch" (one ended), "importing", ...
    step: int | None = None               # done of steps in this stage (an epoch's optimizer steps in training)
    steps: int | None = None
    epoch: int | None = None              # training only, from here on
    epochs: int | None = None
    loss: float | None = None             # the mean training loss so far in this epoch
    val_loss: float | None = None
    best_val_loss: float | None = None
    val_macro_f1: float | None = None
    samples_per_s: float | None = None
    eta_s: float | None = None
    gpu_memory_gb: float | None = None
    gpu_total_gb: float | None = None
    # At an epoch's end, its fusion.ml.metrics.EpochRecord: the worker adds it to the job's curve.
    ended_epoch: Any = field(default=None, compare=False)

    @classmethod
    def from_json(cls, d: dict | None) -> Progress | None:
        if not d:
            return None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known and k != "ended_epoch"})

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "ended_epoch" and getattr(self, f.name) is not None}

    def fraction(self) -> float | None:
        """How much of the stage is done, 0..1; None when it has no steps to count."""
        if self.steps is None or self.step is None:
            return None
        return min(self.step / max(self.steps, 1), 1.0)


Report = Callable[[Progress], None]   # receives progress; may raise to stop (the worker's cancel)


def stage_progress(report: Report) -> Callable[[str, int, int], None]:
    """The library's `progress(stage, done, total)` as a Report."""
    return lambda stage, done, total: report(Progress(stage, step=done, steps=total))
