"""Shared fixtures: one workspace with the demo project, built once per test session with the
real encoders (no mocks); the app tests and the CLI tests read the same workspace."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ANNOTATOR = "annotator ana"

# Every workspace the tests make (and the processes they start) shares one cache of the OCR
# models built from EasyOCR's weights: built once per machine (~40 s), not once per workspace.
os.environ.setdefault("FUSION_OCR_CACHE", str(Path(tempfile.gettempdir()) / "fusion-easyocr"))

# Under `pytest -n N` each worker gets its share of the cores for torch's and ONNX Runtime's
# thread pools (and so do the processes a test starts): N workers each running a pool as wide
# as the machine wait on each other's spinning threads.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Path:
    """A fresh FUSION_HOME for the session (the app under AppTest reads it from the env).
    FUSION_TEST_HOME names a workspace to reuse across runs instead (quicker local iteration)."""
    reuse = os.environ.get("FUSION_TEST_HOME")
    worker = os.environ.get("PYTEST_XDIST_WORKER")   # under pytest -n: one workspace per worker
    if reuse and worker:
        reuse = f"{reuse}-{worker}"
    home = Path(reuse) if reuse else tmp_path_factory.mktemp("fusion-home")
    previous = os.environ.get("FUSION_HOME")
    os.environ["FUSION_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("FUSION_HOME", None)
    else:
        os.environ["FUSION_HOME"] = previous


@pytest.fixture(scope="session")
def postgres():
    """One throwaway PostgreSQL cluster per test process (fusion/store/throwaway_postgres.py)."""
    from fusion.store.throwaway_postgres import PostgresCluster

    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, monkeypatch) -> str:
    """The store's tests run on both databases: "" is SQLite in the test's workspace; PostgreSQL
    gets a fresh database on the throwaway cluster, which the CLI called in the test reads too."""
    if request.param == "sqlite":
        return ""
    url = request.getfixturevalue("postgres").new_database()
    monkeypatch.setenv("FUSION_DATABASE_URL", url)
    return url


@pytest.fixture(scope="session")
def settings(workspace):
    from fusion.core.settings import load_settings

    return load_settings(home=workspace)


@pytest.fixture(scope="session")
def engine(settings):
    from fusion.ml.pipeline import get_engine

    return get_engine(settings)


@pytest.fixture(scope="session")
def demo_project(settings, engine):
    """The demo project with its trained baseline (about a minute on a 2-core CPU)."""
    from fusion.demo.build import ensure_demo_project

    return ensure_demo_project(settings)


def make_corrected_project(settings, engine, demo_project, name: str, count: int = 240):
    """A new project holding the first `count` demo pages (the generator cycles through the
    labels), first predicted by the zero-shot model, then accepted or corrected by an annotator
    to the page's true label."""
    from fusion.demo.build import DEMO_USER
    from fusion.ml.features import cache_features, load_feature_set
    from fusion.ml.finetune import HeadsOnFeatures
    from fusion.imaging.images import check_image_file
    from fusion.ml.model import ModelConfig
    from fusion.ml.pipeline import compose_text
    from fusion.store.labeling import NewItem, Shown, open_store
    from fusion.ml.inference import predict_logits
    from fusion.ml.zeroshot import build_zero_shot_model

    store = open_store(settings)
    if name in store.project_names():
        return store.project(name)
    project = store.create_project(name, demo_project.labels, user=ANNOTATOR)
    demo = [i for i in store.iter_items(demo_project.name) if i.added_by == DEMO_USER][:count]
    added = store.add_items(name, [NewItem(check_image_file(store.image_path(i), settings), i.filename,
                                           ocr_text=i.ocr_text, ocr_engine=i.ocr_engine, caption=i.caption)
                                   for i in demo], user=ANNOTATOR)
    files = cache_features(engine, project.directory / "features", [store.image_path(i) for i in demo],
                           [compose_text(i.ocr_text, i.caption) for i in demo])
    zero_shot = build_zero_shot_model(ModelConfig(project.label_names, project.labels), engine.image_encoder,
                                      engine.text_encoder)
    probs = predict_logits(HeadsOnFeatures(zero_shot), load_feature_set(files, [0] * len(files)), "cpu")["fused"]
    probs = probs.softmax(-1)
    for (item, _), truth, p in zip(added, demo, probs):
        k = int(p.argmax())
        guess = project.label_names[k]
        store.record_prediction(name, item.id, guess, float(p[k]), {n: float(x) for n, x in zip(project.label_names, p)},
                                "zero-shot")
        store.set_label(name, item.id, truth.label, ANNOTATOR, item.version,
                        Shown(guess, float(p[k]), "zero-shot"))
    return store.project(name)


@pytest.fixture(scope="session")
def corrected(settings, engine, demo_project):
    return make_corrected_project(settings, engine, demo_project, "corrected")


@pytest.fixture
def deidentifying(monkeypatch):
    """FUSION_DEIDENTIFY on for the app under test: its settings are a process-wide cache."""
    from fusion.ui import resources as streamlit_cache

    monkeypatch.setenv("FUSION_DEIDENTIFY", "1")
    streamlit_cache.settings.clear()
    yield
    monkeypatch.delenv("FUSION_DEIDENTIFY")
    streamlit_cache.settings.clear()


@pytest.fixture(autouse=True)
def navigation_without_legacy_pages(monkeypatch):
    """AppTest resets Streamlit's legacy pages-directory flag before every run, so each run would
    start as if a fresh server got a deep link (see streamlit_cache.require_app_shell) and lose
    its button clicks to the corrective rerun. A served app leaves that mode on its first run;
    tests start where it then is."""
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False
    monkeypatch.setattr(PagesManager, "__init__", init)
