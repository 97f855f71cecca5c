"""Learning from pages whose words name their class: the trained text head reads them (step 7).

The pages are generated here with words outside the demo's vocabulary and go through the real
benchmark (`bench learning`): real encoders, training's own fit, scikit-learn probes beside it.
"""
import json
import random

from PIL import Image, ImageDraw

from fusion.bench.learning import bench_learning
import torch

from fusion.ml.model import FusionModel, ModelConfig
from fusion.ml.probe import fit_linear_heads, pooled_features

CLASS_WORDS = {
    "invoice": "invoice amount due tax subtotal payment terms remit vendor balance",
    "recipe": "recipe flour sugar butter oven bake stir eggs teaspoon whisk",
    "weather": "forecast rain wind temperature sunny cloudy humidity storm degrees breeze",
}
FILLER = "the of and a to in is for on with as by at from this that page".split()


def write_pages(folder, per_class: int = 10) -> None:
    """A page: 40 words, about 4 in 10 from its class's list, the rest filler; a blank-ish image
    (so the image head has little to go on and the text must carry the class)."""
    rng = random.Random(7)
    rows = []
    for label, words in CLASS_WORDS.items():
        for i in range(per_class):
            text = " ".join(rng.choice(words.split() if rng.random() < 0.4 else FILLER) for _ in range(40))
            image = Image.new("RGB", (320, 240), "white")
            ImageDraw.Draw(image).text((8, 8), f"page {rng.randint(1, 99)}", fill="black")
            name = f"{label}_{i}.png"
            image.save(folder / name)
            rows.append({"id": name, "image": name, "gt_text": text, "doc_type": label})
    (folder / "index.jsonl").write_text("\n".join(json.dumps(r) for r in rows))


def test_trained_text_head_reads_the_words_that_name_the_class(settings, engine, tmp_path):
    write_pages(tmp_path)
    found = bench_learning(settings, tmp_path, seeds=2, sources=("reference",), shots=(2, 5))
    reference = found["reference"]
    chance = 1 / len(CLASS_WORDS)
    assert reference["head"]["text"] >= 0.9 > chance + 0.5, reference
    # as good as a logistic regression on its own features, and fusion no worse than its text head
    assert reference["head"]["text"] >= reference["probe"]["text"] - 0.05, reference
    assert reference["head"]["fused"] >= reference["head"]["text"] - 0.05, reference
    assert [point["k"] for point in reference["curve"]] == [2, 5]


def test_probe_outvotes_a_misleading_prior():
    """The cause of step 7: a x20 text prior that points every page at the wrong class. Probing
    fits the residual and the prior's weight to the optimum, so the head follows the features."""
    torch.manual_seed(0)
    labels = ["a", "b", "c"]
    model = FusionModel(ModelConfig(labels))
    targets = torch.arange(60) % 3
    centres = torch.nn.functional.normalize(torch.randn(3, 384), dim=-1)
    tokens = (centres[targets] + 0.3 * torch.randn(60, 384)).unsqueeze(1).expand(-1, 3, -1)  # (N, 3, 384): a word
    mask = torch.ones(60, 3, dtype=torch.long)                                # and two special tokens
    patches = torch.randn(60, 49, 1280)
    with torch.no_grad():   # every page's text most like the label after its own
        model.label_embeddings.copy_(torch.nn.functional.normalize(centres.roll(1, 0) * 3 + centres, dim=-1))
    before = model(patches, tokens, mask).text.argmax(-1)
    assert (before == targets).float().mean() < 0.2
    fit_linear_heads(model, pooled_features(model, [(patches, tokens, mask, None, None)]), targets)
    after = model(patches, tokens, mask).text.argmax(-1)
    assert (after == targets).all()
    assert model.prior_weights[1] < 1.0            # the misleading prior lost votes


def test_zero_shot_votes_follow_the_prior_that_carries_the_labels():
    """Two priors, one right on every item and quiet, one loud and right on a third: the fused
    zero-shot follows the first, and each head keeps its own opinion."""
    from fusion.ml.probe import PooledFeatures, weigh_zero_shot_votes

    torch.manual_seed(0)
    targets = torch.arange(30) % 3
    right = torch.nn.functional.one_hot(targets, 3).float() * 0.5       # quiet and right
    loud = torch.randn(30, 3) * 5
    loud[::3] = torch.nn.functional.one_hot(targets[::3], 3).float() * 20
    model = FusionModel(ModelConfig(["a", "b", "c"]))
    features = PooledFeatures(torch.zeros(30, 1280), torch.zeros(30, 384), right, loud)
    assert ((right + loud).argmax(-1) == targets).float().mean() < 0.7     # one vote each: the loud one wins
    weigh_zero_shot_votes(model, features, targets)
    image_vote, text_vote = model.fusion_weights.tolist()
    assert ((image_vote * right + text_vote * loud).argmax(-1) == targets).all()
    assert image_vote > 0 and text_vote < image_vote
    assert model.prior_weights.tolist() == [1.0, 1.0]


def test_learning_curve_starts_at_zero_shot_and_puts_the_probe_beside_versions():
    from datetime import datetime

    from fusion.ml.registry import ModelVersion
    from fusion.ml.metrics import HeadScores, VersionMetrics
    from fusion.services.version_report import PROBE, TRAINED, ZERO_SHOT, learning_curve

    def version(name, train, acc, probe, day):
        return ModelVersion(name, None, datetime(2026, 1, day), "x", None, {"mode": "head"}, {},
                            VersionMetrics(counts={"train": train}, test={"fused": HeadScores(accuracy=acc)},
                                           zero_shot_test={"fused": HeadScores(accuracy=[0.41, 0.42][day - 1])},
                                           probe_test=probe and {"concat": probe}), False)

    points = learning_curve([version("v2", 40, 0.9, 0.88, 2), version("v1", 6, 0.7, None, 1)])
    assert [(p["series"], p["train_items"], p["accuracy"]) for p in points] == [
        (PROBE, 40, 0.88), (TRAINED, 6, 0.7), (TRAINED, 40, 0.9), (ZERO_SHOT, 0, 0.42)]


def _fused_accuracy(model, pages) -> float:
    from fusion.ml.finetune import HeadsOnFeatures
    from fusion.ml.inference import predict_logits

    return float((predict_logits(HeadsOnFeatures(model), pages, "cpu")["fused"].argmax(-1) == pages.targets).float().mean())


def _pages_and_a_noisy_prior(prior_noise: float):
    """90 pages of 3 classes whose text features cluster by class, and a zero-shot model whose text
    prior reads them through label vectors blurred by `prior_noise`."""
    from fusion.ml.features import FeatureSet

    torch.manual_seed(1)
    targets = torch.arange(90) % 3
    centres = torch.nn.functional.normalize(torch.randn(3, 384), dim=-1)
    words = torch.nn.functional.normalize(centres[targets] + 0.06 * torch.randn(90, 384), dim=-1)
    tokens = words.unsqueeze(1).expand(-1, 3, -1).contiguous()
    pages = FeatureSet(torch.zeros(90, 49, 1280), tokens, torch.ones(90, 3, dtype=torch.long),
                       torch.ones(90, dtype=torch.bool), targets, torch.zeros(90, 1, 384))
    model = FusionModel(ModelConfig(["a", "b", "c"], text_scale=5.0)).eval()
    with torch.no_grad():
        model.label_embeddings.copy_(torch.nn.functional.normalize(centres + prior_noise * torch.randn(3, 384), dim=-1))
    return model, pages


def test_zero_shot_adapted_to_the_pages_learns_what_its_likeliest_pages_share():
    """Self-training: the pages zero-shot finds likeliest to be each label teach the heads the
    features that tell the labels apart; no target is read."""
    from fusion.ml.zero_shot_adapt import adapt_to_pages, likeliest_pages

    model, pages = _pages_and_a_noisy_prior(0.35)
    before = _fused_accuracy(model, pages)
    assert 0.6 < before < 0.9
    secret = pages.targets.clone()
    pages.targets.fill_(0)                                # adaptation must not read them
    adaptation = adapt_to_pages(model, pages)
    pages.targets.copy_(secret)
    assert adaptation.model is not None and adaptation.pages == 90, adaptation.why
    assert 0 < min(adaptation.per_label.values()) and sum(adaptation.per_label.values()) <= 45
    assert _fused_accuracy(adaptation.model, pages) >= 0.97 > before
    assert _fused_accuracy(model, pages) == before        # the zero-shot model itself is left as it was
    assert abs(adaptation.model.prior_weights[1]) < 0.05   # the prior that chose the pages is off

    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.55, 0.45], [0.7, 0.3], [0.8, 0.2]])
    rows, labels = likeliest_pages(probs, 0.8)           # 2 a label: rows 0 and 4, rows 2 and 1
    assert rows.tolist() == [0, 1, 2, 4] and labels.tolist() == [0, 1, 1, 0]
    rows, labels = likeliest_pages(probs, 1.2)           # 3 a label: row 3 is among both labels'
    assert 3 not in rows.tolist()


def test_zero_shot_is_kept_as_it_was_with_too_few_pages_or_against_the_labeled_items():
    from fusion.ml.zero_shot_adapt import adapted_zero_shot

    model, pages = _pages_and_a_noisy_prior(0.35)
    few = adapted_zero_shot(model, pages.subset(torch.arange(20)), None)
    assert few.model is None and "20 pages" in few.why and "needs 24" in few.why
    with torch.no_grad():                                 # label "c" points away from its pages
        model.label_embeddings[2] *= -1
    unchecked = adapted_zero_shot(model, pages, None)
    assert unchecked.model is not None and unchecked.calibrated_on == 0
    checked = adapted_zero_shot(model, pages, pages.subset(torch.arange(30)))   # 30 labeled items say no
    assert checked.model is None and "on the 30 labeled items" in checked.why, checked.why
    assert _fused_accuracy(unchecked.model, pages) < _fused_accuracy(model, pages)


def test_a_project_predicts_zero_shot_adapted_to_its_pages_while_its_descriptions_stand(settings, engine, tmp_path):
    import uuid

    from fusion.imaging.images import check_image_file
    from fusion.ml.features import cache_features, load_feature_set
    from fusion.ml.finetune import HeadsOnFeatures
    from fusion.ml.inference import predict_logits
    from fusion.ml.zero_shot_measure import measure_zero_shot
    from fusion.ml.zeroshot import ADAPTED_DIR, build_zero_shot_model, project_zero_shot_model
    from fusion.store.labeling import NewItem, open_store

    write_pages(tmp_path, per_class=20)
    rows = [json.loads(line) for line in (tmp_path / "index.jsonl").read_text().splitlines()]
    store, name = open_store(settings), f"adapts-{uuid.uuid4().hex[:8]}"
    store.create_project(name, {label: "" for label in CLASS_WORDS}, user="annotator ana")
    store.add_items(name, [NewItem(check_image_file(tmp_path / r["image"], settings), r["image"], ocr_text=r["gt_text"])
                           for r in rows], user="annotator ana")
    result = measure_zero_shot(settings, store, name, "annotator ana")
    adaptation = result["adaptation"]
    items = list(store.iter_items(name))
    assert adaptation["adapted"] and adaptation["pages"] == sum(i.split != "test" for i in items), adaptation
    assert adaptation["calibrated_on"] == 0 and "accuracy" not in result         # no labels: nothing read
    project = store.project(name)
    assert (project.directory / ADAPTED_DIR / result["adapted_model"]).is_dir()

    adapted = project_zero_shot_model(project, "concat", engine.image_encoder, engine.text_encoder)
    prompts_only = build_zero_shot_model(ModelConfig(project.label_names, project.labels), engine.image_encoder,
                                         engine.text_encoder)
    assert abs(adapted.prior_weights[1]) < 0.05 and prompts_only.prior_weights[1] == 1.0
    test = [i for i in items if i.split == "test"]   # pages adaptation never read
    targets = [project.label_names.index(i.filename.rsplit("_", 1)[0]) for i in test]
    features = load_feature_set(cache_features(engine, project.directory / "features", [store.image_path(i) for i in test],
                                               [i.ocr_text for i in test]), targets)
    accuracy = lambda m: float((predict_logits(HeadsOnFeatures(m), features, "cpu")["fused"].argmax(-1)
                                == features.targets).float().mean())
    assert accuracy(adapted) >= max(0.9, accuracy(prompts_only))

    # Training adds the pages no one labeled that the adapted zero-shot finds likeliest to be each label.
    from fusion.ml.train import TrainConfig, train_version
    from fusion.ml.training_data import labeled_examples, readable_pages
    from fusion.ml.zero_shot_adapt import pseudo_labeled_pages

    first_of_each = {}
    for item in items:
        if item.split != "train":
            store.set_label(name, item.id, item.filename.rsplit("_", 1)[0], "annotator ana", None)
        else:
            first_of_each.setdefault(item.filename.rsplit("_", 1)[0], item)
    for label, item in first_of_each.items():
        store.set_label(name, item.id, label, "annotator ana", None)
    unlabeled = readable_pages(store, name, unlabeled_only=True)[0]
    assert len(unlabeled.ids) == sum(i.split == "train" for i in items) - 3
    labeled = labeled_examples(store, name)
    pseudo = pseudo_labeled_pages(engine, project, unlabeled, labeled, "cpu")
    truth = {i.id: i.filename.rsplit("_", 1)[0] for i in items}
    right = sum(truth[i] == label for i, label in zip(pseudo.ids, pseudo.labels))
    assert len(pseudo.ids) >= 9 and right >= 0.9 * len(pseudo.ids), (right, len(pseudo.ids))
    _, with_pages = train_version(settings, store, name, TrainConfig(epochs=5), "annotator ana")
    _, alone = train_version(settings, store, name, TrainConfig(epochs=5, pseudo_labels=False), "annotator ana")
    assert with_pages.counts["train"] == alone.counts["train"] == 3
    assert with_pages.counts["pseudo_labeled"] == len(pseudo.ids) and alone.counts["pseudo_labeled"] == 0

    store.set_descriptions(name, {"invoice": "a bill to pay"})   # not measured yet: the prompts' model again
    again = project_zero_shot_model(store.project(name), "concat", engine.image_encoder, engine.text_encoder)
    assert again.prior_weights.tolist() == [1.0, 1.0]
    assert pseudo_labeled_pages(engine, store.project(name), unlabeled, labeled, "cpu").ids == []   # nor pages labeled by it


def test_pseudo_labels_the_probe_disputes_are_dropped_unless_zero_shot_was_more_often_right():
    """Each label's likeliest pages are pseudo-labeled; unless the adapted zero-shot was right on
    people's labels more often than a probe of them, a page the probe gives another label is left
    out (a tie goes to the probe)."""
    from fusion.ml.zero_shot_adapt import pseudo_labels

    adapted = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9], [0.5, 0.5], [0.6, 0.4]])
    probe = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.3, 0.7], [0.5, 0.5], [0.5, 0.5]])
    trusted = dict(zip(*(t.tolist() for t in pseudo_labels(adapted, probe, 0.9, 0.8))))
    assert trusted == {0: 0, 1: 0, 2: 1, 3: 1}           # each label's 2 likeliest of 6 pages
    disputed = dict(zip(*(t.tolist() for t in pseudo_labels(adapted, probe, 0.8, 0.8))))
    assert disputed == {0: 0, 2: 1, 3: 1}                # the probe gives row 1 the other label


def test_a_probe_is_checked_out_of_fold_and_counts_as_a_guess_with_one_page_a_label():
    from fusion.ml.zero_shot_adapt import probe_accuracy

    model, pages = _pages_and_a_noisy_prior(0.35)
    assert probe_accuracy(model, pages.subset(torch.arange(12))) == 1.0     # 4 a label, clustered by class
    assert probe_accuracy(model, pages.subset(torch.arange(3))) == 1 / 3    # 1 a label: nothing to hold out
    pages.targets.copy_(pages.targets[torch.randperm(90, generator=torch.Generator().manual_seed(0))])
    assert probe_accuracy(model, pages.subset(torch.arange(12))) < 0.7      # labels the features don't carry


def test_training_on_pages_zero_shot_labeled_switches_the_priors_votes_off():
    """Pages pseudo-labeled by zero-shot are the ones its priors were surest of: cross-validated on
    them the priors look right. Training on them turns the priors off, as adaptation does, and
    learns what the pages share instead."""
    import copy

    from fusion.ml.finetune import HeadsOnFeatures
    from fusion.ml.train import TrainConfig, fit
    from fusion.ml.zero_shot_adapt import likeliest_pages

    model, pages = _pages_and_a_noisy_prior(0.35)
    probs = torch.softmax(model(*pages.inputs("cpu")).fused, -1)
    rows, guessed = likeliest_pages(probs)               # as training picks pseudo-labeled pages
    labeled = torch.tensor([0, 1, 2])                    # one page a label, labeled by a person
    unlabeled = ~torch.isin(rows, labeled)
    rows, guessed = rows[unlabeled], guessed[unlabeled]
    train = pages.subset(torch.cat([labeled, rows]))
    train.targets = torch.cat([pages.targets[labeled], guessed])
    found = {}
    for off in (False, True):
        trainable = HeadsOnFeatures(copy.deepcopy(model).requires_grad_(True))
        fit(trainable, train, pages.subset(labeled), TrainConfig(mode="head", epochs=2, device="cpu"), "cpu",
            zero_shot_labeled=off)
        found[off] = (abs(trainable.fusion.prior_weights[1].item()), _fused_accuracy(trainable.fusion.eval(), pages))
    assert found[True][0] < 0.05 < found[False][0], found     # the text prior's vote (the image one is blank here)
    assert found[True][1] > found[False][1], found
