"""Shared fixtures: one workspace with the demo project, built once per test session with the
real encoders (no mocks); the app tests and the CLI tests read the same workspace."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Path:
    """A fresh FUSION_HOME for the session (the app under AppTest reads it from the env).
    FUSION_TEST_HOME names a workspace to reuse across runs instead (quicker local iteration)."""
    reuse = os.environ.get("FUSION_TEST_HOME")
    home = Path(reuse) if reuse else tmp_path_factory.mktemp("fusion-home")
    previous = os.environ.get("FUSION_HOME")
    os.environ["FUSION_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("FUSION_HOME", None)
    else:
        os.environ["FUSION_HOME"] = previous


@pytest.fixture(scope="session")
def settings(workspace):
    from fusion.settings import load_settings

    return load_settings(home=workspace)


@pytest.fixture(scope="session")
def engine(settings):
    from fusion.pipeline import get_engine

    return get_engine(settings)


@pytest.fixture(scope="session")
def demo_project(settings, engine):
    """The demo project with its trained baseline (about a minute on a 2-core CPU)."""
    from fusion.demo import ensure_demo_project

    return ensure_demo_project(settings)
