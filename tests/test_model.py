"""The fusion model: zero-shot start, the three strategies, the joint loss, safetensors only."""
from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from fusion.core.errors import FusionError
from fusion.ml.model import FusionModel, ModelConfig
from fusion.ml.zeroshot import build_zero_shot_model

LABELS = {"cardiology": "heart and ECG findings", "dermatology": "skin rash and lesions",
          "radiology": "x-ray and CT imaging report"}


def inputs(batch: int = 4, length: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    patches = torch.rand(batch, 49, 1280, generator=g)
    tokens = torch.randn(batch, length, 384, generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, length // 2:] = 0  # one padded sequence
    lines = F.normalize(torch.randn(batch, 5, 384, generator=g), dim=-1)
    lines[0, 3:] = 0           # one text of fewer lines
    return patches, tokens, mask, lines


def zero_shot(engine, strategy: str) -> FusionModel:
    config = ModelConfig(list(LABELS), LABELS, strategy)
    return build_zero_shot_model(config, engine.image_encoder, engine.text_encoder)


@pytest.mark.parametrize("strategy", ["concat", "gated", "cross_attention"])
def test_untrained_model_predicts_exactly_the_zero_shot_priors(engine, strategy):
    model = zero_shot(engine, strategy)
    patches, tokens, mask, lines = inputs()
    out = model(patches, tokens, mask, None, lines)

    image_prior = model.image_prior(patches.mean(1))
    text_prior = model.text_prior(tokens, mask, lines)
    torch.testing.assert_close(out.image, image_prior)
    torch.testing.assert_close(out.text, text_prior)
    torch.testing.assert_close(out.fused, image_prior + text_prior)


def test_zero_shot_text_prior_prefers_the_matching_label(engine):
    model = zero_shot(engine, "concat")
    texts = ["ECG shows atrial fibrillation, heart rate 130", "itchy red rash with a raised skin lesion",
             "chest x-ray: no consolidation, CT of the abdomen unremarkable"]
    tokens, mask = engine.text_encoder.encode(texts)
    patches = torch.zeros(3, 49, 1280)
    lines = engine.text_encoder.line_embeddings(texts)
    assert model(patches, tokens, mask, None, lines).text.argmax(-1).tolist() == [0, 1, 2]


def test_one_telling_line_is_not_averaged_away(engine):
    """A page of lines that name no label, with and without one line that does: that line votes
    alone, with all its weight, and moves the page by its share (a mean over the lines; letting
    the most telling lines decide scored lower on 90 real pages: 0.67-0.79 against 0.81)."""
    from fusion.ml.encoders import text_lines

    model = zero_shot(engine, "concat")
    filler = ["Name: Jane Doe", "Date of visit: 12 March 2024", "Ward 4, bed 12", "Signed by the attending",
              "Page 1 of 2", "Referred by Dr Brown", "Insurance number 554 221", "Next appointment in May"]
    texts = ["\n".join(filler[:4] + ["ECG: atrial fibrillation, heart rate 130"] + filler[4:]), "\n".join(filler)]
    assert [len(lines) for lines in map(text_lines, texts)] == [9, 8]
    tokens, mask = engine.text_encoder.encode(texts)
    lines = engine.text_encoder.line_embeddings(texts)
    prior = model.text_prior(tokens, mask, lines).softmax(-1)
    assert prior[0, 0] > prior[1, 0] + 0.05
    votes = model.line_votes(lines)[0]
    assert votes[:, 0].argmax() == 4 and votes[4, 0] > 0.9   # the ECG line votes cardiology
    with pytest.raises(ValueError, match="reads the text's lines"):
        model.text_prior(tokens, mask)


@pytest.mark.parametrize("strategy", ["concat", "gated", "cross_attention"])
def test_strategies_shapes_training_step_and_safetensors_roundtrip(engine, strategy, tmp_path):
    model = zero_shot(engine, strategy).train()
    patches, tokens, mask, lines = inputs()
    targets = torch.tensor([0, 1, 2, 1])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    before = model(patches, tokens, mask, None, lines).fused.detach()
    for _ in range(3):
        loss = model.loss(model(patches, tokens, mask, None, lines), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    out = model(patches, tokens, mask, None, lines)
    assert out.fused.shape == out.image.shape == out.text.shape == (4, 3)
    assert not torch.allclose(out.fused, before), "training must move the residual heads"
    if strategy == "gated":
        assert out.gate.shape == (4,) and ((out.gate > 0) & (out.gate < 1)).all()
    else:
        assert out.gate is None
    if strategy == "cross_attention":
        assert out.text_to_image.shape == (4, 12, 49)
        torch.testing.assert_close(out.text_to_image.sum(-1), torch.ones(4, 12))
    else:
        assert out.text_to_image is None

    model.save(tmp_path / "v1")
    assert json.loads((tmp_path / "v1" / "labels.json").read_text()) == {"0": "cardiology", "1": "dermatology", "2": "radiology"}
    assert json.loads((tmp_path / "v1" / "config.json").read_text())["strategy"] == strategy
    loaded = FusionModel.load(tmp_path / "v1")
    again = loaded(patches, tokens, mask, None, lines)
    torch.testing.assert_close(again.fused, out.fused)
    torch.testing.assert_close(again.image, out.image)
    with pytest.raises(FileExistsError):
        model.save(tmp_path / "v1")  # versions are immutable


def test_joint_loss_is_the_weighted_sum_of_the_three_heads(engine):
    model = zero_shot(engine, "concat")
    model.config.loss_weights = (1.0, 0.3, 0.7)
    patches, tokens, mask, lines = inputs()
    targets = torch.tensor([2, 0, 1, 1])
    out = model(patches, tokens, mask, None, lines)
    expected = (F.cross_entropy(out.fused, targets) + 0.3 * F.cross_entropy(out.image, targets)
                + 0.7 * F.cross_entropy(out.text, targets))
    torch.testing.assert_close(model.loss(out, targets), expected)


def test_pickle_checkpoint_is_refused(engine, tmp_path):
    model = zero_shot(engine, "concat")
    model.save(tmp_path / "v1")
    torch.save(model.state_dict(), tmp_path / "v1" / "model.safetensors")  # a pickle in disguise
    with pytest.raises(FusionError, match="only safetensors"):
        FusionModel.load(tmp_path / "v1")


def test_every_weight_file_reader_refuses_a_pickle(engine, tmp_path):
    """Fine-tuned encoders, training checkpoints and cached features: each replaced by a pickle
    that would run code when unpickled is refused with the same message, and never unpickled."""
    from pathlib import Path

    from fusion.ml.checkpoints import load_checkpoint
    from fusion.ml.encoders import ENCODERS_FILE, load_encoders
    from fusion.ml.features import load_feature_set

    class Boom:   # unpickling this would create the marker file
        def __reduce__(self):
            return (Path.touch, (tmp_path / "unpickled",))
    for path in (tmp_path / ENCODERS_FILE, tmp_path / "checkpoint.safetensors", tmp_path / "feature.safetensors"):
        torch.save({"weights": torch.zeros(3), "boom": Boom()}, path)
    with pytest.raises(FusionError, match="only safetensors"):
        load_encoders(tmp_path, engine.image_encoder, engine.text_encoder)
    trainable = torch.nn.Linear(2, 2)
    with pytest.raises(FusionError, match="only safetensors"):
        load_checkpoint(tmp_path / "checkpoint.safetensors", trainable, torch.optim.AdamW(trainable.parameters()))
    with pytest.raises(FusionError, match="only safetensors"):
        load_feature_set([tmp_path / "feature.safetensors"], [0])
    assert not (tmp_path / "unpickled").exists()
    # and nothing in the library could unpickle a file in the first place
    sources = {p.name: p.read_text() for p in (Path(__file__).parent.parent / "fusion").rglob("*.py")}
    assert [name for name, text in sources.items() if "torch.load(" in text or "pickle.load" in text] == []


def test_bad_shapes_and_configs_are_explained():
    with pytest.raises(ValueError, match="unknown fusion strategy"):
        ModelConfig(["a", "b"], strategy="late")
    with pytest.raises(ValueError, match="at least 2 distinct labels"):
        ModelConfig(["a", "a"])
    model = FusionModel(ModelConfig(["a", "b"]))
    patches, tokens, mask, lines = inputs()
    with pytest.raises(ValueError, match=r"patches must be \(B, N, 1280\)"):
        model(patches[..., :100], tokens, mask)
    with pytest.raises(ValueError, match="tokens must be"):
        model(patches, tokens, mask[:, :3])


def test_a_version_saved_before_step_7_loads_and_predicts_as_it_did(engine, tmp_path):
    """Versions saved without prompts, prior and fusion weights or standardisation still load,
    with the whole-page text prior they were trained with."""
    import json

    from safetensors.torch import load_file, save_file

    model = zero_shot(engine, "concat")
    model.save(tmp_path / "v1")
    state = load_file(str(tmp_path / "v1" / "model.safetensors"))
    for key in ("prior_weights", "fusion_weights", "prompt_embeddings", "prompt_labels", "image_mean", "image_std",
                "text_mean", "text_std"):
        del state[key]
    save_file(state, str(tmp_path / "v1" / "model.safetensors"))
    config = json.loads((tmp_path / "v1" / "config.json").read_text())
    del config["prompt_count"], config["line_vote"]
    (tmp_path / "v1" / "config.json").write_text(json.dumps(config))
    old = FusionModel.load(tmp_path / "v1")
    patches, tokens, mask, lines = inputs()
    out = old(patches, tokens, mask)
    from fusion.ml.encoders import mean_pool

    torch.testing.assert_close(out.text, 20.0 * mean_pool(tokens, mask) @ model.label_embeddings.T)
    torch.testing.assert_close(out.fused, out.image + out.text)


def test_a_version_saved_before_step_12_keeps_its_window_prior(engine, tmp_path):
    """A config without line_vote reads as False: the page and windows of token states, as trained."""
    model = zero_shot(engine, "concat")
    model.save(tmp_path / "v1")
    config = json.loads((tmp_path / "v1" / "config.json").read_text())
    del config["line_vote"]
    (tmp_path / "v1" / "config.json").write_text(json.dumps(config))
    old = FusionModel.load(tmp_path / "v1")
    patches, tokens, mask, lines = inputs()
    torch.testing.assert_close(old(patches, tokens, mask).text, model.window_prior(tokens, mask))
