"""Process-wide caches for the Streamlit pages (shared by every session, built once)."""
from __future__ import annotations

import streamlit as st

from fusion.imaging import ocr
from fusion.ml.pipeline import Engine, get_engine
from fusion.core.settings import Settings, load_settings
from fusion.store.labeling import Store, open_store
from fusion.jobs.recovery import recover_workspace


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


def require_app_shell() -> None:
    """Call first on every page. On a fresh server whose first request deep-links to a page (and
    in AppTest's switch_page), Streamlit's legacy pages-directory mode runs pages/<page>.py on its
    own: no app.py, so no sidebar and no shared navigation. Switch that mode off and rerun;
    the rerun goes through app.py and keeps the requested page."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
