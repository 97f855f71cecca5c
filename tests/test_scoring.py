"""Scoring a version from the CLI (`evaluate`) on the test split or a labeled CSV, and
pre-labeling a folder into a CSV (`predict-folder`)."""
from __future__ import annotations

import csv
import json
import shutil

import pytest

from fusion.ml import registry
from fusion.cli.main import main
from fusion.imaging.images import load_upload
from fusion.store.labeling import open_store
from fusion.ml.train import TrainConfig, train_version

from conftest import ANNOTATOR


@pytest.fixture(scope="module")
def version(settings, corrected):
    store = open_store(settings)
    name, _ = train_version(settings, store, corrected.name, TrainConfig(epochs=5), user=ANNOTATOR)
    return registry.get_version(store, corrected.name, name)


def test_evaluate_on_the_test_split_reproduces_the_registry(settings, corrected, version, capsys):
    assert main(["evaluate", corrected.name, "--version", version.version, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["items"] == version.metrics.counts["test"] and result["data"] == "test split"
    for head in ("fused", "image", "text"):
        assert result[head]["accuracy"] == version.metrics.test[head].accuracy
        assert result[head]["confusion"] == version.metrics.test[head].confusion
    assert result["zero_shot"]["macro_f1"] == version.metrics.zero_shot_test["fused"].macro_f1
    assert result["fused"]["macro_f1"] > result["zero_shot"]["macro_f1"]
    assert main(["evaluate", corrected.name, "--version", "v999"]) == 2
    assert "no model version 'v999'" in capsys.readouterr().err


def test_evaluate_on_an_external_csv_lists_its_bad_rows(settings, corrected, version, tmp_path, capsys):
    store = open_store(settings)
    items = [i for i in store.iter_items(corrected.name) if i.split == "test"][:8]
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "label", "caption", "ocr_text"])
        for n, item in enumerate(items):
            shutil.copy(store.image_path(item), tmp_path / f"page{n}.png")
            writer.writerow([f"page{n}.png", item.label, item.caption, item.ocr_text])
        writer.writerow(["missing.png", items[0].label, "", "text"])
        writer.writerow(["page0.png", "not-a-label", "", "text"])
    assert main(["evaluate", corrected.name, "--version", version.version, "--data",
                 str(tmp_path / "labels.csv"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["items"] == 8 and len(result["problems"]) == 2
    reasons = " | ".join(p["reason"] for p in result["problems"])
    assert "missing.png" in reasons and "'not-a-label' is not one of" in reasons
    assert sum(result["fused"]["per_class"][k]["support"] for k in corrected.labels) == 8


def test_predict_folder_writes_every_head_and_an_error_row(settings, engine, corrected, tmp_path, capsys):
    store = open_store(settings)
    folder = tmp_path / "incoming"
    folder.mkdir()
    for n, item in enumerate([i for i in store.iter_items(corrected.name)][:2]):
        shutil.copy(store.image_path(item), folder / f"page{n}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "results.csv"
    assert main(["predict-folder", corrected.name, str(folder), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 3 and summary["failed"] == 1
    rows = list(csv.DictReader(open(out)))
    assert [r["file"] for r in rows] == ["broken.png", "page0.png", "page1.png"]
    assert rows[0]["error"] and not rows[0]["label"]
    for row in rows[1:]:
        assert row["label"] in corrected.labels and not row["error"] and int(row["text_chars"]) > 20
        for head in ("fused", "image", "text"):
            assert sum(float(row[f"{head}:{k}"]) for k in corrected.labels) == pytest.approx(1, abs=1e-4)
    # Batched through cached (fp16) features, yet what one page's prediction in the app says.
    one = engine.predict(load_upload(folder / "page0.png", settings), store.project(corrected.name))
    assert rows[1]["label"] == one.label
    for head, probs in (("fused", one.probs), ("image", one.probs_image), ("text", one.probs_text)):
        assert [float(rows[1][f"{head}:{k}"]) for k in corrected.labels] == pytest.approx(
            [probs[k] for k in corrected.labels], abs=0.01)
    if one.ood_score is None:                       # a model without an OOD bank (zero-shot): none in the CSV
        assert rows[1]["ood_score"] == rows[1]["in_distribution"] == ""
    else:                                           # and the same OOD score
        assert float(rows[1]["ood_score"]) == pytest.approx(one.ood_score, abs=0.02)
        assert rows[1]["in_distribution"] == str(one.in_distribution)
    assert rows[1]["abstained"] == ""
    assert not list(tmp_path.glob(".results.csv.tmp"))


def test_two_versions_are_compared_on_the_test_items_both_saw():
    """Step 12: versions tested on different splits (79 and 81 items) are scored on the shared ones."""
    from fusion.services.version_report import TestPrediction, scores_on_shared

    def tested(item_id: int, truth: str, guess: str) -> TestPrediction:
        probs = {"fused": {truth: 0.2, guess: 0.8} if guess != truth else {truth: 0.9, "x": 0.1}}
        return TestPrediction(item_id, truth, guess, 0.8, probs)

    a = [tested(1, "x", "x"), tested(2, "y", "y"), tested(3, "y", "x")]            # item 3 only in a, wrong
    b = [tested(1, "x", "y"), tested(2, "y", "y"), tested(4, "x", "x")]            # item 4 only in b, right
    shared, scores_a, scores_b = scores_on_shared(a, b, ["fused"])
    assert shared == 2
    assert scores_a["fused"].accuracy == 1.0 and scores_b["fused"].accuracy == 0.5
