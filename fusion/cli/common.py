"""What the command groups share: progress on stderr, output, descriptions files, head scores."""
from __future__ import annotations

import json
import sys

_bars: dict = {}


def show_progress(stage: str, done: int, total: int) -> None:
    """Progress on stderr: a tqdm bar in a terminal; in a log, a `stage: done/total` line every 10%."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = _bars.get(stage)
        if bar is None or bar.total != total:
            bar = _bars[stage] = tqdm(total=total, desc=stage, unit="item", file=sys.stderr)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
    elif done == total or done * 10 // total != (done - 1) * 10 // total:
        print(f"{stage}: {done}/{total}", file=sys.stderr, flush=True)


def emit(data: dict, as_json: bool, summary: str) -> None:
    print(json.dumps(data, default=_as_json) if as_json else summary)


def _as_json(value):
    """Typed records (fusion.ml.metrics) as their JSON; times and the rest as text."""
    return value.to_json() if hasattr(value, "to_json") else str(value)


def read_descriptions(path: str | None) -> dict[str, str]:
    """A JSON object {label: description}, or text lines `label: description`."""
    if path is None:
        return {}
    from fusion.core.errors import FusionError

    try:
        text = open(path, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as e:
        raise FusionError(f"can't read the descriptions file {path}: {e}") from None
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise FusionError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise FusionError(f"{path} must hold an object {{label: description}}")
        return {str(k): str(v) for k, v in data.items()}
    pairs = (line.partition(":") for line in text.splitlines() if line.strip())
    return {label.strip(): description.strip() for label, _, description in pairs}

