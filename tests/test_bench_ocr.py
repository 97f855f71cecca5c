"""`bench ocr`: FusionLab's reading beside plain EasyOCR, on a folder laid out as shared/eval/ocr
(two pages drawn here: the real folder is never copied into the repository)."""
from __future__ import annotations

import json

from PIL import Image, ImageDraw, ImageFont

from fusion.cli.main import main
from fusion.bench.ocr import words_matched


def test_word_recall_counts_each_read_word_once():
    assert words_matched("The total: 12.50 the END", "the TOTAL 12 50 end") == (5, 6)   # one "the" read
    assert words_matched("", "anything") == (0, 0)


def test_bench_ocr_on_two_pages(tmp_path, capsys, workspace):
    font = ImageFont.load_default(size=40)
    pages = {"upright": ("PATIENT RECORD 12345\nglucose level normal", 0),
             "turned": ("Invoice number 2024\ntotal due today", 180)}
    (tmp_path / "pages").mkdir()
    with open(tmp_path / "index.jsonl", "w") as index:
        for name, (text, angle) in pages.items():
            image = Image.new("RGB", (900, 300), "white")
            draw = ImageDraw.Draw(image)
            for n, line in enumerate(text.split("\n")):
                draw.text((40, 60 + 110 * n), line, fill="black", font=font)
            image.rotate(angle, expand=True, fillcolor="white").save(tmp_path / "pages" / f"{name}.png")
            index.write(json.dumps({"id": name, "image": f"pages/{name}.png", "gt_text": text}) + "\n")
    assert main(["bench", "ocr", "--data", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["pages"] == 2 and set(out["folders"]) == {"pages"}
    ours, plain = out["overall"]["fusionlab"], out["overall"]["plain"]
    assert ours["word_recall"] == 1.0                       # both pages, the turned one too
    assert plain["word_recall"] < 1.0                       # plain EasyOCR does not turn pages
    assert ours["median_seconds"] > 0 and plain["median_seconds"] > 0 and out["overall"]["median_time_ratio"] > 0
    assert {r["id"] for r in out["per_page"]} == set(pages)
