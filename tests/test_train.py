"""Training model versions: corrected data beats zero-shot, checkpoints resume exactly, the
fine-tuning modes carry their own encoders, metrics agree with scikit-learn, and the registry
promotes and rolls back."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from fusion.ml import registry
from fusion.core.errors import FusionError
from fusion.ml.evaluation import expected_calibration_error, fit_temperature, scores
from fusion.imaging.images import load_image
from fusion.jobs.queue import JobCancelled
from fusion.store.labeling import open_store
from fusion.ml.train import TrainConfig, train_version
from fusion.ml.training_data import labeled_examples

from conftest import ANNOTATOR, make_corrected_project


def test_training_on_corrected_data_beats_zero_shot(settings, corrected):
    store = open_store(settings)
    statuses = {i.status for i in store.iter_items(corrected.name)}
    assert statuses == {"accepted", "corrected"}, statuses
    version, metrics = train_version(settings, store, corrected.name, TrainConfig(epochs=15), user=ANNOTATOR)
    fused, zero_shot = metrics.test["fused"], metrics.zero_shot_test["fused"]
    print(f"corrected data: test macro-F1 {fused.macro_f1:.3f} vs zero-shot {zero_shot.macro_f1:.3f}")
    assert fused.macro_f1 >= zero_shot.macro_f1 + 0.3
    assert fused.accuracy >= zero_shot.accuracy + 0.3
    assert registry.beats_active(dataclasses.replace(metrics, parent_test=None))   # no active version: against zero-shot

    saved = registry.get_version(store, corrected.name, version)
    assert saved.created_by == ANNOTATOR and saved.params["mode"] == "head" and not saved.active
    examples = labeled_examples(store, corrected.name)
    assert saved.data["item_ids"] == examples.ids and saved.data["labels_hash"] == examples.snapshot()["labels_hash"]
    for head in ("fused", "image", "text"):
        s = saved.metrics.test[head]
        assert None not in (s.accuracy, s.macro_f1, s.ece, s.reliability) and set(s.per_class) == set(corrected.labels)
        assert sum(map(sum, s.confusion)) == metrics.counts["test"]
    # the saved per-item test predictions are the ones the metrics came from
    stored = json.loads((corrected.model_dir(version) / "test_predictions.json").read_text())
    assert len(stored["item_ids"]) == metrics.counts["test"]
    truth = {i.id: corrected.label_names.index(i.label) for i in store.iter_items(corrected.name)}
    pred = np.array(stored["probs"]["fused"]).argmax(1)
    assert accuracy_score([truth[i] for i in stored["item_ids"]], pred) == pytest.approx(fused.accuracy, abs=1e-4)


def test_calibrated_temperatures_are_stored_and_used(settings, corrected):
    store = open_store(settings)
    newest = registry.versions(store, corrected.name)[0]
    config = json.loads((corrected.model_dir(newest.version) / "config.json").read_text())
    assert config["temperatures"] == [newest.metrics.temperatures[h] for h in ("fused", "image", "text")]
    assert all(t > 0 for t in config["temperatures"])


def test_promote_rollback_and_refusing_a_pickled_checkpoint(settings, corrected):
    store = open_store(settings)
    first = registry.versions(store, corrected.name)[-1].version
    second, _ = train_version(settings, store, corrected.name, TrainConfig(epochs=2), user=ANNOTATOR)
    assert registry.promote(store, corrected.name, first, "reviewer rae").active_model == first
    assert registry.promote(store, corrected.name, second, "reviewer rae").active_model == second
    assert registry.rollback(store, corrected.name, "reviewer rae").active_model == first
    log = registry.events(store, corrected.name)
    assert [(e.action, e.from_version, e.to_version) for e in log[:3]] == [
        ("rollback", second, first), ("promote", first, second), ("promote", log[2].from_version, first)]
    assert [v.version for v in registry.versions(store, corrected.name) if v.active] == [first]
    with pytest.raises(FusionError, match="no model version"):
        registry.promote(store, corrected.name, "v99", "reviewer rae")

    # a checkpoint swapped for a pickle is refused, and the active model stays as it was
    weights = corrected.model_dir(second) / "model.safetensors"
    backup = weights.read_bytes()
    torch.save({"weights": torch.zeros(3)}, weights)
    try:
        with pytest.raises(FusionError, match="only safetensors"):
            registry.promote(store, corrected.name, second, "reviewer rae")
        assert store.project(corrected.name).active_model == first
    finally:
        weights.write_bytes(backup)


def test_an_interrupted_run_resumes_to_the_same_model(settings, corrected, tmp_path):
    store = open_store(settings)
    config = TrainConfig(epochs=4, patience=100)
    _, straight = train_version(settings, store, corrected.name, config, user=ANNOTATOR)

    checkpoint = tmp_path / "checkpoint.safetensors"

    def stop_after_epoch_2(row):
        if row.stage == "epoch" and row.epoch == 2:
            raise JobCancelled()
    with pytest.raises(JobCancelled):
        train_version(settings, store, corrected.name, config, user=ANNOTATOR, report=stop_after_epoch_2,
                      checkpoint=checkpoint)
    version, resumed = train_version(settings, store, corrected.name, config, user=ANNOTATOR, resume=checkpoint)
    assert [r.loss for r in resumed.history] == [r.loss for r in straight.history]
    assert resumed.score("fused", "accuracy") == straight.score("fused", "accuracy")
    assert resumed.temperatures == straight.temperatures


def test_partial_mode_with_lora_and_l2sp_saves_its_own_encoders(settings, engine, demo_project):
    """One epoch on a small project: the version carries fine-tuned encoders, and the engine
    predicts with them rather than with the shared pretrained ones."""
    project = make_corrected_project(settings, engine, demo_project, "finetuned", count=90)
    store = open_store(settings)
    config = TrainConfig(mode="partial", epochs=1, batch_size=16, lora=True, l2sp=1e-3, device="cpu")
    version, metrics = train_version(settings, store, project.name, config, user=ANNOTATOR)
    directory = project.model_dir(version)
    assert (directory / "encoders.safetensors").is_file()
    assert json.loads((directory / "config.json").read_text())["finetuned_encoders"] is True
    assert metrics.epochs_run == 1 and metrics.history[0].samples_per_s > 0

    registry.promote(store, project.name, version, ANNOTATOR)
    loaded = engine.model_for(store.project(project.name))
    assert loaded.image_encoder is not engine.image_encoder and loaded.text_encoder is not engine.text_encoder
    tuned = loaded.image_encoder.backbone._conv_head.weight
    assert not torch.equal(tuned, engine.image_encoder.backbone._conv_head.weight)        # partial: top trained
    assert torch.equal(loaded.image_encoder.backbone._conv_stem.weight, engine.image_encoder.backbone._conv_stem.weight)
    query = lambda enc: enc.bert.encoder.layer[0].attention.self.query.weight  # noqa: E731
    assert not torch.equal(query(loaded.text_encoder), query(engine.text_encoder))       # LoRA merged in
    item = next(store.iter_items(project.name))
    prediction = engine.predict(load_image(store.image_path(item)), store.project(project.name),
                                ocr_result=_stored_ocr(item), with_explanation=True)
    assert prediction.model_version == version and prediction.explanation is not None
    assert abs(sum(prediction.probs.values()) - 1) < 1e-4

    # its encoders swapped for a pickle: promoting it is refused before the app would load them
    encoders = directory / "encoders.safetensors"
    backup = encoders.read_bytes()
    torch.save({"weights": torch.zeros(3)}, encoders)
    try:
        with pytest.raises(FusionError, match="only safetensors"):
            registry.promote(store, project.name, version, ANNOTATOR)
    finally:
        encoders.write_bytes(backup)


def _stored_ocr(item):
    from fusion.imaging.ocr import OcrResult

    return OcrResult(text=item.ocr_text or "", words=[], ms=0.0, angle=0)


def test_bad_training_parameters_are_refused_with_what_is_allowed(settings, corrected):
    for bad, message in [({"mode": "everything"}, "mode must be one of head, partial, full"),
                         ({"epochs": 0}, "epochs must be 1-1000"), ({"lr": -1}, "learning rate"),
                         ({"batch_size": 0}, "batch size"), ({"device": "tpu"}, "device must be")]:
        with pytest.raises(FusionError, match=message):
            TrainConfig(**bad)
    store = open_store(settings)
    empty = store.create_project("nothing-labeled", corrected.labels, user=ANNOTATOR) \
        if "nothing-labeled" not in store.project_names() else store.project("nothing-labeled")
    with pytest.raises(FusionError, match="needs labeled items in each of train/val/test"):
        train_version(settings, store, empty.name, TrainConfig(epochs=1), user=ANNOTATOR)


def test_scores_match_scikit_learn_on_a_fixed_example():
    labels = ["a", "b", "c"]
    targets = np.array([0, 0, 1, 1, 2, 2, 2, 0])
    probs = np.array([[.8, .1, .1], [.3, .6, .1], [.2, .7, .1], [.1, .2, .7],
                      [.1, .1, .8], [.5, .2, .3], [.2, .2, .6], [.9, .05, .05]])
    s = scores(probs, targets, labels)
    pred = probs.argmax(1)
    assert s.accuracy == round(accuracy_score(targets, pred), 4)
    assert s.macro_f1 == round(f1_score(targets, pred, average="macro"), 4)
    p, r, f, n = precision_recall_fscore_support(targets, pred, labels=[0, 1, 2], zero_division=0)
    assert [s.per_class[k].precision for k in labels] == [round(x, 4) for x in p]
    assert [s.per_class[k].recall for k in labels] == [round(x, 4) for x in r]
    assert [s.per_class[k].support for k in labels] == list(n)
    assert s.confusion == confusion_matrix(targets, pred).tolist()
    # ECE by hand: bins (0.6,0.667] {.6,.6,.7?}: computed directly from the definition
    conf, correct = probs.max(1), pred == targets
    edges = np.linspace(0, 1, 16)
    manual = sum(((conf > lo) & (conf <= hi)).mean() * abs(correct[(conf > lo) & (conf <= hi)].mean()
                                                            - conf[(conf > lo) & (conf <= hi)].mean())
                 for lo, hi in zip(edges[:-1], edges[1:]) if ((conf > lo) & (conf <= hi)).any())
    assert expected_calibration_error(probs, targets) == pytest.approx(manual)
    assert sum(b.count for b in s.reliability) == len(targets)


def test_temperature_scaling_calms_an_overconfident_model():
    torch.manual_seed(0)
    targets = torch.randint(0, 4, (2000,))
    logits = torch.randn(2000, 4)
    logits[torch.arange(2000), targets] += 1.0      # right 55% of the time or so...
    overconfident = logits * 6                      # ...but claims ~99%
    t = fit_temperature(overconfident, targets)
    assert 3 < t < 12
    before = expected_calibration_error(overconfident.softmax(-1).numpy(), targets.numpy())
    after = expected_calibration_error((overconfident / t).softmax(-1).numpy(), targets.numpy())
    assert after < before / 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (runs on the GPU machines)")
def test_full_mode_on_the_gpu_in_bf16(settings, engine, demo_project):
    project = make_corrected_project(settings, engine, demo_project, "gpu-full", count=480)
    store = open_store(settings)
    version, metrics = train_version(settings, store, project.name,
                                     TrainConfig(mode="full", epochs=2, batch_size=64, device="cuda"), user=ANNOTATOR)
    assert metrics.device.startswith("cuda") and (project.model_dir(version) / "encoders.safetensors").is_file()
    assert metrics.score("fused", "accuracy") >= metrics.zero_shot_test["fused"].accuracy
