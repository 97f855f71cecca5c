"""What a model version scored, as typed records: one head's scores on a split (HeadScores), one
training epoch (EpochRecord) and everything the registry keeps of a version (VersionMetrics).

They are read by attribute. The registry, a job's result and `--json` keep them as JSON in the
same shape as before they were typed, so versions saved earlier read back unchanged: `from_json`
fills what an older row lacks from what it has (an ECE's item count from its reliability bins)
or leaves it None (unknown, never a guess). No torch here: the job queue reads these too.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

# Below this many items an ECE is flagged as too few to trust. Its sampling error: a perfectly
# calibrated model whose m items share a bin of confidence c still shows |accuracy - c| of about
# sqrt(2/pi) * sqrt(c (1 - c) / m), so its ECE is about 0.8 * sqrt(c (1 - c) * B / n) over B
# occupied bins by chance alone: at c = 0.9 and one bin 0.028 at n = 72, 0.024 at n = 100 and
# 0.012 at n = 400. Under 100 items that noise is as large as the miscalibration one wants to
# see (a few hundredths), so the number is shown with its item count and this warning.
ECE_MIN_ITEMS = 100


@dataclass(frozen=True)
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ReliabilityBin:
    """One confidence bin of a reliability diagram: its range, items, mean confidence and accuracy."""
    lo: float
    hi: float
    count: int
    confidence: float
    accuracy: float


@dataclass(frozen=True)
class HeadScores:
    """One head's scores on one split. An epoch's validation scores hold accuracy and macro-F1
    only; a version's test scores hold everything."""
    accuracy: float | None = None
    macro_f1: float | None = None
    ece: float | None = None
    ece_items: int | None = None          # what the ECE rests on: items,
    ece_bins: int | None = None           # occupied bins,
    ece_enough_items: bool | None = None  # and whether the items are enough (ECE_MIN_ITEMS)
    per_class: dict[str, ClassScores] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)   # rows: true, columns: predicted
    reliability: list[ReliabilityBin] | None = None

    @classmethod
    def from_json(cls, d: dict) -> HeadScores:
        bins = d.get("reliability")
        items = d.get("ece_items", sum(b["count"] for b in bins) if bins is not None else None)
        return cls(accuracy=d.get("accuracy"), macro_f1=d.get("macro_f1"), ece=d.get("ece"), ece_items=items,
                   ece_bins=d.get("ece_bins", len(bins) if bins is not None else None),
                   ece_enough_items=d.get("ece_enough_items", None if items is None else items >= ECE_MIN_ITEMS),
                   per_class={k: ClassScores(**v) for k, v in (d.get("per_class") or {}).items()},
                   confusion=d.get("confusion") or [],
                   reliability=None if bins is None else [ReliabilityBin(**b) for b in bins])

    def to_json(self) -> dict:
        return asdict(self)

    def headline(self) -> dict:
        """Accuracy, macro-F1 and the ECE with what it rests on: what a job's result and the CLI show."""
        return {k: getattr(self, k) for k in ("accuracy", "macro_f1", "ece", "ece_items", "ece_bins",
                                              "ece_enough_items")}

    def describe_ece(self, prefix: str = "ECE ") -> str:
        """The ECE with what it rests on, e.g. "ECE 0.015 (72 items, 2 bins; too few items to
        trust)": the one way every page and command shows an ECE."""
        if self.ece is None:
            return f"{prefix}unknown"
        if self.ece_items is None:
            return f"{prefix}{self.ece:.3f} (item count unknown)"
        bins = self.ece_bins
        caveat = "" if self.ece_enough_items else "; too few items to trust"
        return f"{prefix}{self.ece:.3f} ({self.ece_items} items, {bins} bin{'' if bins == 1 else 's'}{caveat})"


Heads = dict[str, HeadScores]   # head name (model.HEADS) -> its scores


def heads_from_json(d: dict | None) -> Heads:
    return {h: HeadScores.from_json(s) for h, s in (d or {}).items()}


def heads_to_json(heads: Heads) -> dict:
    return {h: s.to_json() for h, s in heads.items()}


def headlines(heads: Heads) -> dict:
    return {h: s.headline() for h, s in heads.items()}


@dataclass(frozen=True)
class EpochRecord:
    """One training epoch: the mean training loss, the validation loss and scores, and its speed."""
    epoch: int
    loss: float
    val_loss: float | None
    val: Heads
    seconds: float
    samples_per_s: float

    @classmethod
    def from_json(cls, d: dict) -> EpochRecord:
        return cls(epoch=d["epoch"], loss=d["loss"], val_loss=d.get("val_loss"), val=heads_from_json(d.get("val")),
                   seconds=d.get("seconds", 0.0), samples_per_s=d.get("samples_per_s", 0.0))

    def to_json(self) -> dict:
        return {**asdict(self), "val": {h: {"accuracy": s.accuracy, "macro_f1": s.macro_f1} for h, s in self.val.items()}}


@dataclass(frozen=True)
class VersionMetrics:
    """What the registry keeps of a version's training: its heads' test scores beside zero-shot's,
    the active version's (parent) and logistic probes' on the same items, and how it was trained."""
    test: Heads
    zero_shot_test: Heads
    counts: dict[str, int] = field(default_factory=dict)       # items per split
    parent_version: str | None = None                          # the version active when it was trained
    parent_test: Heads | None = None                           # ... and its scores on the same test items
    probe_test: dict[str, float] | None = None                 # logistic probes' test accuracy by features
    temperatures: dict[str, float] = field(default_factory=dict)
    ood: dict | None = None                                    # the OOD detector's fit (fusion.ml.ood)
    epochs_run: int | None = None
    history: list[EpochRecord] = field(default_factory=list)
    device: str | None = None
    world_size: int | None = None
    seconds: dict[str, float] = field(default_factory=dict)    # preparing and training

    @classmethod
    def from_json(cls, d: dict | None) -> VersionMetrics:
        d = d or {}
        parent = d.get("parent_test")
        return cls(test=heads_from_json(d.get("test")), zero_shot_test=heads_from_json(d.get("zero_shot_test")),
                   counts=d.get("counts") or {},
                   parent_version=parent and parent.get("version"),
                   parent_test=parent and heads_from_json({h: s for h, s in parent.items() if h != "version"}),
                   probe_test=d.get("probe_test"), temperatures=d.get("temperatures") or {}, ood=d.get("ood"),
                   epochs_run=d.get("epochs_run"), history=[EpochRecord.from_json(r) for r in d.get("history") or []],
                   device=d.get("device"), world_size=d.get("world_size"), seconds=d.get("seconds") or {})

    def to_json(self) -> dict:
        """The registry's JSON, in the shape it had before these types (the parent's version
        inside parent_test)."""
        return {"test": heads_to_json(self.test), "zero_shot_test": heads_to_json(self.zero_shot_test),
                "counts": self.counts,
                "parent_test": None if self.parent_test is None else {"version": self.parent_version,
                                                                      **heads_to_json(self.parent_test)},
                "probe_test": self.probe_test, "temperatures": self.temperatures, "ood": self.ood,
                "epochs_run": self.epochs_run, "history": [r.to_json() for r in self.history],
                "device": self.device, "world_size": self.world_size, "seconds": self.seconds}

    def score(self, head: str = "fused", metric: str = "macro_f1") -> float | None:
        s = self.test.get(head)
        return None if s is None else getattr(s, metric)
