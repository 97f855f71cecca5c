"""`python -m fusion bench deidentify --json`: what de-identification costs on this machine.

redact: one demo document's text (~450 characters) and a full page of text (~2,700), warm;
texts/s over 5,000 demo documents with captions (what a de-identified export of 100,000 items
spends on text). export: the same project of EXPORT_ITEMS small pages exported as CSV plain and
de-identified, in a throwaway workspace, as items/s. mask: blacking out the PHI words of one
1,000-pixel demo page and re-encoding it (what each page read by OCR adds to an export).
"""
from __future__ import annotations

import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from fusion.core.settings import Settings

EXPORT_ITEMS = 2000


def _documents(n: int) -> list[str]:
    from fusion.demo.documents import compose_caption, compose_document

    texts = []
    for i in range(n):
        rng = random.Random(i)
        topic = ("laboratory", "cardiology")[i % 2]
        texts.append((compose_document(topic, rng).text, compose_caption(topic, rng)))
    return texts


def _bench_export(settings: Settings, texts: list[tuple[str, str]]) -> dict:
    import io

    from PIL import Image

    from fusion.services.exporting import export_project
    from fusion.imaging.images import check_image_file
    from fusion.store.labeling import NewItem, Store

    with tempfile.TemporaryDirectory() as tmp:
        work = replace(settings, home=Path(tmp) / "home", database_url="")
        store = Store(work)
        store.create_project("bench", {"a": "", "b": ""}, user="bench")
        new = []
        for i, (text, caption) in enumerate(texts[:EXPORT_ITEMS]):
            buffer = io.BytesIO()
            page = Image.new("L", (64, 48), i % 256)
            page.putpixel((i // 256 % 64, i // 16384 % 48), 255 - i % 256)
            page.save(buffer, "PNG")
            new.append(NewItem(check_image_file(buffer.getvalue(), work), f"{i}.png", "a", caption, text, None, "bench"))
        store.add_items("bench", new, user="bench")
        out = {}
        for mode, on in (("plain", False), ("deidentified", True)):
            start = time.perf_counter()
            export_project(store, "bench", "csv", Path(tmp) / mode, deidentify=on)
            seconds = time.perf_counter() - start
            out[mode] = {"items": len(new), "seconds": round(seconds, 2), "items_per_s": round(len(new) / seconds)}
        per_item = (out["deidentified"]["seconds"] - out["plain"]["seconds"]) / len(new)
        out["added_s_per_100k_items"] = round(per_item * 100_000)
        return out


def _bench_mask() -> dict:
    import io

    from fusion.demo.documents import render_item
    from fusion.privacy.deidentify import phi_boxes
    from fusion.imaging.overlay import black_out

    image, item = render_item(0)
    # Word boxes as OCR reports them, spread over the page's lines (the real ones need a 10 s OCR).
    lines = item.text.splitlines()
    words, height = [], image.height / (len(lines) + 2)
    for row, line in enumerate(lines):
        x = 40
        for word in line.split():
            words.append({"text": word, "box": [x, int(height * (row + 1)), x + 12 * len(word), int(height * (row + 1.6))]})
            x += 12 * len(word) + 10
    start = time.perf_counter()
    for _ in range(5):
        buffer = io.BytesIO()
        black_out(image, phi_boxes(item.text, words)).save(buffer, "PNG")
    return {"page": f"{image.width}x{image.height}", "ms_per_page": round((time.perf_counter() - start) / 5 * 1000, 1)}


def bench_deidentify(settings: Settings) -> dict:
    from fusion.bench.timing import timed
    from fusion.privacy.deidentify import redact

    texts = _documents(5000)
    document = texts[0][0]
    page = "\n".join(t for t, _ in texts[:6])
    start = time.perf_counter()
    for text, caption in texts:
        redact(text)
        redact(caption)
    seconds = time.perf_counter() - start
    return {
        "redact_document": {"chars": len(document), **timed(lambda: redact(document), 200)},
        "redact_page": {"chars": len(page), **timed(lambda: redact(page), 100)},
        "texts": {"items": len(texts), "items_per_s": round(len(texts) / seconds),
                  "s_per_100k_items": round(seconds / len(texts) * 100_000)},
        "export_csv": _bench_export(settings, texts),
        "mask": _bench_mask(),
    }
