"""`python -m fusion bench ocr --data DIR --json`: FusionLab's reading beside plain EasyOCR.

DIR has the layout of shared/eval/ocr: `index.jsonl`, one page a line, with `image` (relative
to DIR) and `gt_text` (null: no ground truth, timed only). Each page is read by `ocr.read_text`
(as the app reads an upload) and by plain EasyOCR (a `Reader` of its own, untouched: `readtext`
on its RGB pixels, defaults), with the same offline weights, in the same process, alternating
which goes first. Word recall as shared/eval/ocr/README.md defines it: both texts lower-cased
and split into runs of [a-z0-9]+, the share of the ground truth's words the reading also holds
(each read word matches once), summed over a folder's pages. Seconds: the median per page.
"""
from __future__ import annotations

import json
import re
import statistics
import time
from collections import Counter
from pathlib import Path

import numpy as np

from fusion.core.settings import Settings

TOKEN = re.compile(r"[a-z0-9]+")


def words_matched(truth: str, read: str) -> tuple[int, int]:
    """(ground-truth words the reading holds, ground-truth words), each read word matching once."""
    wanted, found = Counter(TOKEN.findall(truth.lower())), Counter(TOKEN.findall(read.lower()))
    return sum(min(n, found[w]) for w, n in wanted.items()), sum(wanted.values())


def _folder_summary(rows: list[dict]) -> dict:
    out = {"pages": len(rows)}
    for who in ("fusionlab", "plain"):
        matched = sum(r[who]["matched"] for r in rows if r["truth_words"])
        truth = sum(r["truth_words"] for r in rows)
        out[who] = {"word_recall": round(matched / truth, 4) if truth else None,
                    "median_seconds": round(statistics.median(r[who]["seconds"] for r in rows), 3)}
    ours, plain = out["fusionlab"], out["plain"]
    out["recall_difference"] = None if ours["word_recall"] is None else round(ours["word_recall"] - plain["word_recall"], 4)
    out["median_time_ratio"] = round(statistics.median(r["fusionlab"]["seconds"] / r["plain"]["seconds"] for r in rows), 3)
    return out


def bench_ocr(settings: Settings, data: Path, limit: int | None = None) -> dict:
    from fusion.core.errors import FusionError
    from fusion.imaging.images import load_image
    from fusion.imaging.ocr import plain_reader, read_text

    index = Path(data) / "index.jsonl"
    if not index.is_file():
        raise FusionError(f"{index} not found: bench ocr needs --data FOLDER with an index.jsonl of pages")
    pages = [json.loads(line) for line in index.read_text().splitlines() if line.strip()][:limit]
    gpu = settings.resolved_device().startswith("cuda")
    reader = plain_reader(gpu, settings.ocr_cache_dir)

    def ours(image) -> str:
        return read_text(image, max_side=settings.ocr_max_side, gpu=gpu, cache_dir=settings.ocr_cache_dir).text

    first = load_image(Path(data) / pages[0]["image"])
    ours(first), reader.readtext(np.asarray(first))  # warm-up

    def plain(image) -> str:
        return " ".join(text for _, text, _ in reader.readtext(np.asarray(image)))

    rows = []
    for n, page in enumerate(pages):
        image = load_image(Path(data) / page["image"])     # decoded once, untimed: both read the same RGB pixels
        row = {"id": page["id"], "folder": page["image"].split("/")[0], "truth_words": 0}
        for who, read in (("fusionlab", ours), ("plain", plain))[:: 1 if n % 2 == 0 else -1]:
            start = time.perf_counter()
            text = read(image)
            row[who] = {"seconds": round(time.perf_counter() - start, 3), "text": text}
        for who in ("fusionlab", "plain"):
            matched, total = words_matched(page.get("gt_text") or "", row[who].pop("text"))
            row[who]["matched"], row["truth_words"] = matched, total
        rows.append(row)
    folders = sorted({r["folder"] for r in rows})
    return {"device": "cuda" if gpu else "cpu", "pages": len(rows),
            "folders": {f: _folder_summary([r for r in rows if r["folder"] == f]) for f in folders},
            "overall": _folder_summary(rows), "per_page": rows,
            "goal": {"recall_difference_at_least": 0.0, "median_time_ratio_at_most": 0.5}}
