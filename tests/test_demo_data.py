"""fusion.demo.documents: deterministic fake clinical documents whose layout and topic are confounded."""
from __future__ import annotations

import collections
import re

import numpy as np
import pytest
from PIL import Image

from fusion.demo.documents import (LABEL_PARTS, LABELS, LAYOUTS, SPLITS, TOPICS, generate,
                               load_manifest, render_item)

LAYOUT_WORDS = {"table", "tables", "grid", "form", "forms", "checkbox", "checkboxes", "tick",
                "signature", "sign", "chart", "charts", "graph", "plot", "trace", "tracing",
                "strip", "waveform", "line"}


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


@pytest.fixture(scope="module")
def items_120():
    return [render_item(i)[1] for i in range(120)]


@pytest.fixture(scope="module")
def demo_60(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo60")
    return root, generate(root, n=60, seed=3)


def test_render_item_is_deterministic_and_seeded():
    img_a, item_a = render_item(5)
    img_b, item_b = render_item(5)
    assert img_a.mode == "RGB" and min(img_a.size) >= 600
    assert np.array_equal(np.asarray(img_a), np.asarray(img_b))
    assert item_a == item_b
    img_c, item_c = render_item(5, seed=1)
    assert item_c.label == item_a.label          # the class comes from the index alone
    assert item_c.text != item_a.text
    assert img_c.size != img_a.size or not np.array_equal(np.asarray(img_a), np.asarray(img_c))


def test_labels_are_three_layouts_times_two_topics():
    assert len(LABELS) == 6 and set(LABEL_PARTS) == set(LABELS)
    assert all(desc and len(desc.split()) >= 5 for desc in LABELS.values())
    assert sorted(LABEL_PARTS.values()) == sorted((lay, top) for lay in LAYOUTS for top in TOPICS)
    for layout in LAYOUTS:   # same look, different text: image alone cannot separate these
        assert sorted(t for lab, (lay, t) in LABEL_PARTS.items() if lay == layout) == sorted(TOPICS)
    for topic in TOPICS:     # same text, different look: text alone cannot separate these
        assert sorted(lay for lab, (lay, t) in LABEL_PARTS.items() if t == topic) == sorted(LAYOUTS)


def test_text_never_names_the_layout_and_vocabulary_is_shared_across_layouts(items_120):
    doc_freq = {lay: collections.Counter() for lay in LAYOUTS}
    for item in items_120:
        vocab = set(words(item.text))
        assert not vocab & LAYOUT_WORDS, (item.file, vocab & LAYOUT_WORDS)
        doc_freq[LABEL_PARTS[item.label][0]].update(vocab)
    # Text does not depend on the layout, so any word seen in 10+ of 120 documents must occur
    # under at least two layouts (chance of a layout-independent word failing: < 1e-4).
    total = sum(doc_freq.values(), collections.Counter())
    frequent = [w for w, n in total.items() if n >= 10]
    assert len(frequent) > 40
    only_one = [w for w in frequent if sum(doc_freq[lay][w] > 0 for lay in LAYOUTS) < 2]
    assert not only_one, only_one
    # Word distributions depend on the topic, not on the layout: total-variation distance between
    # two layouts of one topic (sampling noise only) is well below that between the two topics.
    counts = collections.defaultdict(collections.Counter)
    for item in items_120:
        counts[LABEL_PARTS[item.label]].update(words(item.text))

    def tv(a, b):
        na, nb = sum(a.values()), sum(b.values())
        return 0.5 * sum(abs(a[w] / na - b[w] / nb) for w in a.keys() | b.keys())
    pairs = [(p, q) for p in counts for q in counts if p < q]
    within = max(tv(counts[p], counts[q]) for p, q in pairs if p[1] == q[1])
    between = min(tv(counts[p], counts[q]) for p, q in pairs if p[1] != q[1])
    assert within < 0.75 * between, (within, between)


def test_topic_is_decidable_from_text(items_120):
    lab = {"hemoglobin", "glucose", "creatinine", "specimen", "laboratory", "pathology",
           "cholesterol", "platelets", "bilirubin", "sodium", "fibrinogen", "albumin", "collected",
           "serum", "blood"}
    cardio = {"ecg", "electrocardiogram", "rhythm", "troponin", "heart", "cardiology", "cardiac",
              "qrs", "ejection", "indication", "bpm", "arrhythmia", "echocardiogram", "recorded"}
    for item in items_120:
        vocab = set(words(item.text))
        n_lab, n_cardio = len(vocab & lab), len(vocab & cardio)
        expect_lab = LABEL_PARTS[item.label][1] == "laboratory"
        assert (n_lab > n_cardio) == expect_lab, (item.label, item.text)


def test_captions_do_not_leak_labels(items_120):
    label_words = {w for name in LABELS for w in name.split("_")} | LAYOUT_WORDS
    captions = [it.caption for it in items_120]
    assert 0.3 < sum(not c for c in captions) / len(captions) < 0.7   # many empty, many not
    for caption in captions:
        assert not set(words(caption)) & label_words, caption


def test_generate_writes_a_balanced_manifest_and_matching_pngs(demo_60):
    root, items = demo_60
    assert len(items) == 60
    assert collections.Counter(it.label for it in items) == {lab: 10 for lab in LABELS}
    assert load_manifest(root) == items            # text with newlines survives the CSV round trip
    assert (root / "demo.json").is_file() and not list(root.rglob(".*.tmp"))
    for item in items[:6]:
        path = root / item.file
        assert path.stat().st_size < 200_000
        on_disk = np.asarray(Image.open(path).convert("RGB"))
        assert np.array_equal(on_disk, np.asarray(render_item(int(path.stem), seed=3)[0]))


def test_generate_redoes_a_half_written_or_different_folder(demo_60, tmp_path):
    root, items = demo_60
    (root / "manifest.csv").unlink()        # as if interrupted before the manifest was written
    assert generate(root, n=60, seed=3) == items
    other = generate(root, n=12, seed=4)    # other n/seed: regenerated, stale images dropped
    assert len(other) == 12 and len(list((root / "images").glob("*.png"))) == 12
    assert load_manifest(root) == other
    with pytest.raises(ValueError):
        generate(tmp_path, n=3)


def test_full_demo_set_is_balanced_per_split_and_reused(demo_project, settings):
    """The 480 pages the session's demo project generated (see conftest), not a second copy."""
    from fusion.demo.build import demo_source

    tmp_path = demo_source(settings)
    calls = []
    items = load_manifest(tmp_path)
    assert len(items) == 480
    assert collections.Counter(it.label for it in items) == {lab: 80 for lab in LABELS}
    splits = collections.Counter(it.split for it in items)
    assert 0.6 < splits["train"] / 480 < 0.8 and splits["val"] > 40 and splits["test"] > 40
    for split in SPLITS:
        assert {it.label for it in items if it.split == split} == set(LABELS)
    sizes = [(tmp_path / it.file).stat().st_size for it in items]
    assert max(sizes) < 200_000
    mtimes = {it.file: (tmp_path / it.file).stat().st_mtime_ns for it in items}
    again = generate(tmp_path, progress=lambda done, total: calls.append("again"))
    assert again == items and "again" not in calls
    assert mtimes == {it.file: (tmp_path / it.file).stat().st_mtime_ns for it in items}


def _thumb(img: Image.Image) -> np.ndarray:
    small = img.convert("L").resize((224, 224), Image.Resampling.BILINEAR)
    return np.asarray(small, np.float32) / 255


def test_layouts_differ_at_thumbnail_size():
    """At 224 px, nearest-centroid on raw pixels already tells layouts apart far above chance."""
    thumbs = [(_thumb(img), LABEL_PARTS[it.label][0])
              for img, it in (render_item(i, seed=7) for i in range(48))]
    train, test = thumbs[:30], thumbs[30:]
    centroids = {lay: np.mean([t for t, l in train if l == lay], axis=0) for lay in LAYOUTS}
    for a in LAYOUTS:
        for b in LAYOUTS:
            if a < b:
                assert np.abs(centroids[a] - centroids[b]).mean() > 0.01
    hits = [min(LAYOUTS, key=lambda lay: np.abs(t - centroids[lay]).mean()) == l for t, l in test]
    assert sum(hits) / len(hits) > 0.5   # chance is 1/3
