"""Process-wide caches for the Streamlit pages (shared by every session, built once)."""
from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from fusion.imaging import ocr
from fusion.ml.pipeline import Engine, get_engine
from fusion.core.settings import Settings, load_settings
from fusion.store.labeling import Store, open_store
from fusion.jobs.recovery import recover_workspace
from fusion.imaging.thumbnails import SIZE, data_url, thumbnail
from fusion.ml.embeddings import ZERO_SHOT, Embeddings, embeddings_path, load_embeddings
from fusion.services import version_report
from fusion.services.dataset_map import MapPoints, map_figure, map_points
from fusion.privacy.shown import Shown


@st.cache_resource(show_spinner=False)
def settings() -> Settings:
    return load_settings()


@st.cache_resource(show_spinner="Loading the encoders and the OCR (first visit only; the first on a new workspace also builds the OCR models, about 40 s)…")
def engine() -> Engine:
    built = get_engine(settings())
    ocr.get_reader(built.device.startswith("cuda"), built.settings.ocr_cache_dir)  # build the OCR now, not on the first upload
    return built


@st.cache_resource(show_spinner=False)
def store() -> Store:
    """The workspace's store. A server's first call also finishes or undoes what a crash of the
    app, the worker or an import left behind (fusion.jobs.recovery), before any page reads."""
    built = open_store(settings())
    recover_workspace(settings(), built)
    return built


@st.cache_data(max_entries=5000, show_spinner=False)
def _thumbnail_url(image_path: str, sha256: str) -> str | None:
    return data_url(thumbnail(settings().images_dir, Path(image_path), sha256))


def thumbnail_url(item) -> str | None:
    """The item's thumbnail as a data: URL for an image column (None if its image can't be read)."""
    return _thumbnail_url(str(store().image_path(item)), item.sha256)


def preview(item) -> bytes | None:
    """A larger thumbnail (JPEG, kept beside the images) to look at a page without opening it:
    240 pixels, or the table's 96 while de-identifying (small print unreadable; the Review page
    shows a page whole with its PHI blacked out)."""
    size = SIZE if Shown.under(settings()).redacting else 240
    return thumbnail(settings().images_dir, store().image_path(item), item.sha256, size)


@st.cache_data(ttl=30, show_spinner=False)
def test_predictions(project_name: str, version: str) -> list[version_report.TestPrediction]:
    """A version's predictions on the test split: read once per version and half minute, not on every click."""
    return version_report.test_predictions(store(), store().project(project_name), version)


@st.cache_resource(max_entries=4, show_spinner=False)
def _embeddings(project_name: str, version: str, saved_ns: int) -> Embeddings | None:
    return load_embeddings(store().project(project_name))


def embeddings(project) -> Embeddings | None:
    """The active version's embeddings of the project's items, read once per saved file (every
    session shares them: 51 MB at 100,000 items)."""
    path = embeddings_path(project)
    if not path.is_file():
        return None
    return _embeddings(project.name, project.active_model or ZERO_SHOT, path.stat().st_mtime_ns)


@st.cache_resource(ttl=10, max_entries=8, show_spinner=False)
def _dataset_map(project_name: str, version: str, saved_ns: int, colour_by: str) -> tuple[MapPoints, go.Figure]:
    points = map_points(_embeddings(project_name, version, saved_ns), store().item_facts(project_name))
    return points, map_figure(points, colour_by, Shown.under(settings()))


def dataset_map(project, colour_by: str) -> tuple[MapPoints, go.Figure] | None:
    """The map's points and figure (None without embeddings), built at most every 10 s: every
    rerun of the Dataset page would otherwise read 100,000 items' facts again (0.7 s)."""
    path = embeddings_path(project)
    if not path.is_file():
        return None
    return _dataset_map(project.name, project.active_model or ZERO_SHOT, path.stat().st_mtime_ns, colour_by)


def require_app_shell() -> None:
    """Call first on every page. On a fresh server whose first request deep-links to a page (and
    in AppTest's switch_page), Streamlit's legacy pages-directory mode runs pages/<page>.py on its
    own: no app.py, so no sidebar and no shared navigation. Switch that mode off and rerun;
    the rerun goes through app.py and keeps the requested page."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
