"""The training entry point under torchrun: DistributedDataParallel with the gloo backend in two
CPU processes trains to what one process trains, within tolerance (each rank takes half of each
batch and gradients are averaged, so the steps match up to the class-weighted loss's batch
normalisation and each rank's dropout masks)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fusion.core.settings import REPO_ROOT


def train(settings, project: str, launcher: list[str]) -> dict:
    env = os.environ | {"FUSION_HOME": str(settings.home), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launcher, "-m", "fusion", "train", project, "--epochs", "4", "--patience", "100",
                           "--device", "cpu", "--json"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_gloo_processes_match_one(settings, corrected):
    one = train(settings, corrected.name, [sys.executable])
    two = train(settings, corrected.name, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                           "--nproc_per_node=2"])
    assert one["world_size"] == 1 and two["world_size"] == 2
    print("1 process:", [r["loss"] for r in one["history"]], "2 processes:", [r["loss"] for r in two["history"]])
    for a, b in zip(one["history"], two["history"], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=0.08)
    assert abs(two["test"]["fused"]["accuracy"] - one["test"]["fused"]["accuracy"]) <= 0.05
