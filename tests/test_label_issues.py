"""Likely label errors (step 13): out-of-fold probabilities of the heads over the demo project's
cached features, ranked by confident learning (cleanlab)."""
from __future__ import annotations


def test_flipped_labels_rank_first(settings, demo_project):
    """A small case of `bench label-issues`: 10% of the demo's labels flipped at random are found
    among the top-ranked items (the bench measures 0.96 here; the goal is 0.8)."""
    from fusion.bench.label_issues import bench_label_issues

    result = bench_label_issues(settings, share=0.10, seed=3)
    assert result["flipped"] == round(0.10 * result["items"])
    assert result["top_ranked"]["precision"] >= 0.8 and result["top_ranked"]["recall"] >= 0.8, result
    assert result["flagged"]["precision"] >= 0.8, result
