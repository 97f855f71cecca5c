"""FusionLab: `streamlit run app.py`. Navigation and the sidebar shared by every page."""
from __future__ import annotations

import getpass

import streamlit as st

from fusion import demo, streamlit_cache
from fusion.project import list_projects, load_project

st.set_page_config(page_title="FusionLab", page_icon="🔬", layout="wide")
settings = streamlit_cache.settings()


@st.fragment(run_every=2)
def wait_for_demo_build(log_path) -> None:
    """Poll the separate build process; rerun the app when the demo project is ready."""
    if demo.demo_ready(settings):
        st.rerun(scope="app")
    lines = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
    st.code("\n".join(lines[-6:]) or "starting…")


if not demo.demo_ready(settings):
    st.title("FusionLab")
    st.info("First run: generating the demo project (480 synthetic documents) and training its baseline "
            "model. This takes a minute or two on a CPU and happens once.")
    if "demo_build_log" not in st.session_state:
        st.session_state["demo_build_log"] = demo.start_demo_build(settings)
    wait_for_demo_build(st.session_state["demo_build_log"])
    st.stop()

engine = streamlit_cache.engine()
with st.sidebar:
    st.session_state.setdefault("project", settings.demo_project)
    st.session_state.setdefault("user", getpass.getuser())
    st.selectbox("Project", list_projects(settings), key="project")
    project = load_project(settings, st.session_state["project"])
    st.markdown(f"**Model** `{project.active_model or 'zero-shot'}`  \n**Device** `{engine.device_name}`")
    st.text_input("Your name", key="user")

st.navigation([st.Page("pages/review.py", title="Review", icon="🔍", default=True)]).run()
