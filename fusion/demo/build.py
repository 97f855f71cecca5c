"""The built-in demo project: generated on first run, imported into the store, with a baseline
model trained on it.

Its items carry the generator's own rendering of each page's text as their stored text (marked
so in `ocr_engine`) instead of running OCR over 480 images (minutes on a CPU); uploads in the app
always go through real OCR, and a test checks that OCR of demo pages recovers their text.
"""
from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Callable

from fusion.demo import documents as demo_data
from fusion.ml import registry
from fusion.ml.embeddings import compute_embeddings, embeddings_path
from fusion.core.errors import UnknownProject
from fusion.core.progress import Progress
from fusion.ml.metrics import VersionMetrics
from fusion.imaging.images import check_image_file
from fusion.core.project import Project
from fusion.core.settings import Settings
from fusion.store.labeling import ItemFilter, NewItem, Store, open_store
from fusion.ml.train import TrainConfig, train_version

DEMO_ITEMS = 480
DEMO_SEED = 0
DEMO_USER = "demo generator"
DEMO_LABELS = demo_data.LABELS
TEXT_SOURCE = "demo generator text"  # the items' ocr_engine: this text was rendered, not read


def demo_source(settings: Settings) -> Path:
    return settings.project_dir(settings.demo_project) / "source"


def ensure_demo_project(settings: Settings, progress: Callable[[str, int, int], None] | None = None) -> Project:
    """The demo project with an active model, building whatever is missing (idempotent, and
    safe when the app and the CLI start at once: a file lock makes the second one wait)."""
    store = open_store(settings)
    settings.projects_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.projects_dir / f".{settings.demo_project}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            project = store.project(settings.demo_project)
        except UnknownProject:
            project = store.create_project(settings.demo_project, DEMO_LABELS, user=DEMO_USER)
        if store.project_info(settings.demo_project)["items"] == 0:  # also: a pre-database workspace
            import_demo_items(settings, store, progress)
        if project.active_model is None or _baseline_predates_ood(store, project):
            version, _ = train_demo_baseline(settings, store, progress)
            project = registry.promote(store, settings.demo_project, version, user=DEMO_USER)
        if not embeddings_path(project).is_file():     # the Dataset page's map and "more like this", from the start
            compute_embeddings(settings, store, project.name, progress)
        return project


def _baseline_predates_ood(store: Store, project: Project) -> bool:
    """The active model is the demo's own baseline from before OOD scores (step 8): a demo then
    could not say "none of these", so it gets a new baseline. A version someone trained is kept."""
    version = registry.get_version(store, project.name, project.active_model)
    return version.created_by == DEMO_USER and version.metrics.ood is None


def import_demo_items(settings: Settings, store: Store,
                      progress: Callable[[str, int, int], None] | None = None) -> None:
    generated = (lambda done, total: progress("generating", done, total)) if progress else None
    items = demo_data.generate(demo_source(settings), n=DEMO_ITEMS, seed=DEMO_SEED, progress=generated)
    batch = 60
    for start in range(0, len(items), batch):
        store.add_items(settings.demo_project, [
            NewItem(check_image_file(demo_source(settings) / item.file, settings), Path(item.file).name,
                    label=item.label, caption=item.caption, ocr_text=item.text, ocr_engine=TEXT_SOURCE,
                    source="demo manifest")
            for item in items[start:start + batch]], user=DEMO_USER)
        if progress:
            progress("importing", min(start + batch, len(items)), len(items))


def train_demo_baseline(settings: Settings, store: Store,
                        progress: Callable[[str, int, int], None] | None = None) -> tuple[str, VersionMetrics]:
    def report(p: Progress) -> None:
        if progress and p.stage == "encoding":
            progress("encoding", p.step, p.steps)
        elif progress and p.stage == "epoch":
            progress("training", p.epoch, p.epochs)

    return train_version(settings, store, settings.demo_project, TrainConfig(), user=DEMO_USER, report=report)


def test_page(store: Store, project: Project, n: int) -> tuple[str, bytes]:
    """The n-th item (cycling) of the project's test split: its file name and bytes."""
    first = store.list_items(project.name, ItemFilter(split="test", sort="id", descending=False), limit=1)
    if first.total == 0:
        raise UnknownProject(f"project {project.name!r} has no test items")
    item = store.list_items(project.name, ItemFilter(split="test", sort="id", descending=False),
                            offset=n % first.total, limit=1).items[0]
    return item.filename, store.image_path(item).read_bytes()


def demo_ready(settings: Settings) -> bool:
    try:
        return open_store(settings).project(settings.demo_project).active_model is not None
    except UnknownProject:
        return False
