"""Benchmarks (`python -m fusion bench predict|store --json`): speed lives here, not in timed tests.
store: see fusion/bench/store.py; train: fusion/bench/train.py; learning: fusion/bench/learning.py;
trust: fusion/bench/trust.py.

predict: on a 1024x1024 demo document, warm -- OCR alone; full predict + explain (image
features not cached); re-predict with an edited caption (OCR result and image features reused)
with and without explanations, there and on pages of 400 and 1,500 words (read whole) beside the
bare text encoder on 128 word pieces; cold start (imports + all models) in a fresh process; peak RSS.
"""
from __future__ import annotations

import itertools
import json
import resource
import statistics
import subprocess
import sys

from PIL import Image

from fusion.bench.timing import timed
from fusion.core.settings import REPO_ROOT, Settings

COLD_START = (
    "import time, json; t = time.perf_counter();"
    "from fusion.core.settings import load_settings; from fusion.ml.pipeline import get_engine; from fusion.imaging import ocr;"
    "s = load_settings(); e = get_engine(s); ocr.get_reader(e.device.startswith('cuda'), s.ocr_cache_dir);"
    "print(json.dumps({'seconds': time.perf_counter() - t}))"
)


def _median_ms(fn, repeat: int) -> float:
    return round(timed(fn, repeat)["median_ms"], 1)


def document_image(size: int = 1024) -> Image.Image:
    """A demo page centred on a white square canvas of `size` px."""
    from fusion.demo.documents import render_item

    page, _ = render_item(3, seed=7)
    page.thumbnail((size, size))
    canvas = Image.new("RGB", (size, size), "white")
    canvas.paste(page, ((size - page.width) // 2, (size - page.height) // 2))
    return canvas


LONG_PAGES = (400, 1500)   # words


def _long_page_edits(engine, project, image: Image.Image, words: int) -> dict:
    """Caption edits on a page of `words` words (read whole, in chunks of 128 word pieces), with
    and without explanation, beside the bare text encoder reading the first 128 word pieces
    (what FusionLab read before step 8)."""
    import torch

    from fusion.imaging.ocr import OcrResult

    vocabulary = "potassium sodium creatinine reference range mmol/L result flagged glucose fasting".split()
    text = "\n".join(" ".join(vocabulary[(i + j) % len(vocabulary)] for j in range(10)) for i in range(0, words, 10))
    page = OcrResult(text=text, words=[], ms=0.0, angle=0)
    edits = itertools.count()

    def edit(explain: bool):
        engine.predict(image, project, caption=f"note {next(edits)} ECG rhythm", ocr_result=page, with_explanation=explain)

    tokenizer, bert = engine.text_encoder.tokenizer, engine.text_encoder.bert_sdpa

    def bare():
        batch = tokenizer([text], truncation=True, max_length=128, return_tensors="pt")
        with torch.no_grad():
            bert(**batch)

    edit(False)
    chunks = engine.text_encoder.tokenize([text]).input_ids.shape[1]
    return {"chunks": chunks, "edit_caption_ms": _median_ms(lambda: edit(False), 10),
            "edit_caption_explain_ms": _median_ms(lambda: edit(True), 3),
            "bare_minilm_first_128_pieces_ms": _median_ms(bare, 10)}


def bench_predict(settings: Settings) -> dict:
    colds = []
    for _ in range(3):  # median of three fresh processes: import times vary run to run here
        done = subprocess.run([sys.executable, "-c", COLD_START], capture_output=True, text=True, check=True,
                              cwd=REPO_ROOT)
        colds.append(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])
    cold_seconds = statistics.median(colds)

    from fusion.demo.build import ensure_demo_project
    from fusion.ml.pipeline import get_engine

    project = ensure_demo_project(settings)
    engine = get_engine(settings)
    image = document_image()
    engine.predict(image, project, with_explanation=True)  # warm-up: models, reader, caches
    ocr_ms = _median_ms(lambda: engine.read_text(image), 3)

    def full():
        engine._features.clear()  # measure the cold-image path: OCR + encoders + explain
        engine.predict(image, project, with_explanation=True)

    full_ms = _median_ms(full, 3)
    first = engine.predict(image, project)
    edits = itertools.count()  # a new caption each time, so nothing is served from a cache

    def edit(explain: bool):
        engine.predict(image, project, caption=f"note {next(edits)} ECG rhythm", ocr_result=first.ocr,
                       with_explanation=explain)

    edit_ms = _median_ms(lambda: edit(False), 10)
    edit_explain_ms = _median_ms(lambda: edit(True), 5)
    long_pages = {f"{n}_words": _long_page_edits(engine, project, image, n) for n in LONG_PAGES}
    rss_mb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                 resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    return {
        "device": engine.device_name,
        "image": "1024x1024 document",
        "words_read": len(first.ocr.words),
        "ocr_ms": ocr_ms,
        "predict_explain_ms": full_ms,
        "predict_explain_over_ocr": round(full_ms / ocr_ms, 3),
        "edit_caption_ms": edit_ms,
        "edit_caption_explain_ms": edit_explain_ms,
        "long_page_edit_caption": long_pages,
        "cold_start_s": round(cold_seconds, 2),
        "peak_rss_mb": round(rss_mb, 1),
        "targets": {"predict_explain_over_ocr": 1.2, "edit_caption_ms": 100, "edit_caption_explain_ms": 400,
                    "cold_start_s": 15, "peak_rss_mb": 3072, "long_page_edit_caption_400_words_ms": 150},
    }
