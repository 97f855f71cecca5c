"""FusionLab: `streamlit run app.py`. Navigation and the sidebar shared by every page."""
from __future__ import annotations

import getpass

import streamlit as st

from fusion.services import accounts
from fusion.ui import session as app_session
from fusion.privacy import deidentify
from fusion.demo import build as demo
from fusion.ui import resources as streamlit_cache
from fusion.core.errors import FusionError
from fusion.jobs.queue import Jobs
from fusion.jobs.worker import queue_demo_build
from fusion.ui import job_view
from fusion.ui.job_view import job_progress

st.set_page_config(page_title="FusionLab", page_icon="🔬", layout="wide")
settings = streamlit_cache.settings()
STAGES = job_view.STAGES | {"encoding": "Encoding them", "training": "Training the baseline"}


def first_run() -> None:
    st.title("FusionLab")
    st.info("First run: generating the demo project (480 synthetic clinical documents, fake data only) "
            "and training its baseline model. This happens once and takes a minute or two on a CPU.")
    if "demo_build" not in st.session_state:    # a job of the worker, like training (fusion.jobs.kinds)
        st.session_state["demo_build"] = queue_demo_build(settings, streamlit_cache.store()).id
    build_status()


@st.fragment(run_every=2)
def build_status() -> None:
    """The build job's progress; the whole app reruns when the demo project is ready."""
    if demo.demo_ready(settings):
        st.rerun(scope="app")
    jobs = Jobs(streamlit_cache.store())
    job = jobs.get(st.session_state["demo_build"])
    job_progress(job, STAGES)
    if job.status == "failed":
        st.caption(f"Its log: {jobs.log_path(job.id)}")


def sidebar(pages: list) -> None:
    engine = streamlit_cache.engine()
    with st.sidebar:
        # The app's own links: Streamlit's navigation is off (client.showSidebarNavigation), as
        # it first lists the raw files of pages/ while a cold server starts.
        for page in pages:
            st.page_link(page)
        st.divider()
        store = streamlit_cache.store()
        projects = store.project_names()
        name = st.selectbox("Project", projects, index=projects.index(settings.demo_project), key="project")
        project = store.project(name)
        st.markdown(f"**Model** `{project.active_model or 'zero-shot'}`  \n**Device** `{engine.device_name}`")
        if settings.redact_text:
            st.caption(":material/visibility_off: De-identified" + (" · demo mode" if settings.demo_mode else ""),
                       help=deidentify.NOTICE)
        if settings.auth:
            st.markdown(f"Signed in as **{account.name}** ({account.role})")
            st.button("Sign out", key="sign_out", icon=":material/logout:", on_click=app_session.sign_out)
        else:
            st.text_input("Your name", value=getpass.getuser(), key="user")


try:   # a database server that is down or refuses us: say so on one line, not a traceback
    streamlit_cache.store()
except FusionError as e:
    st.error(str(e), icon=":material/database:")
    st.stop()

# Streamlit forgets a widget's value once a run doesn't draw it: re-saving the Dataset page's
# filters here, on every page's run, keeps them while the reviewer looks at another page.
KEPT_ACROSS_PAGES = ("ds_search", "ds_label", "ds_status", "ds_user", "ds_confidence", "ds_ood", "ds_sort", "ds_page")
for key in KEPT_ACROSS_PAGES:
    if key in st.session_state:
        st.session_state[key] = st.session_state[key]

# Material icons ship with Streamlit; emoji need fonts a server or kiosk browser may lack.
ICONS = {"review": ":material/fact_check:", "dataset": ":material/table_view:", "train": ":material/model_training:",
         "evaluate": ":material/analytics:", "admin": ":material/admin_panel_settings:"}
# With accounts on, the navigation holds only the pages the role may use: any other is
# unreachable, also by URL. Off, the one local user has every page but Admin (no accounts).
account = app_session.active_account() if settings.auth else None
ready = False
if settings.auth and account is None:
    # Every page's address opens the sign-in form (and, once signed in, that page): a deep link or
    # a bookmark shows no "Page not found" and nothing of the page itself.
    pages = [st.Page("pages/sign_in.py", title="Sign in", icon=":material/login:", default=True)] + [
        st.Page("pages/sign_in.py", title="Sign in", url_path=name) for name in accounts.PAGES]
elif ready := demo.demo_ready(settings):
    allowed = accounts.PAGES_BY_ROLE[account.role] if account else [p for p in accounts.PAGES if p != "admin"]
    pages = [st.Page(f"pages/{name}.py", title=app_session.PAGE_TITLES[name], icon=ICONS[name],
                     default=name == "review") for name in allowed]
else:
    pages = [st.Page(first_run, title="Setting up", default=True)]
current = st.navigation(pages, position="hidden")
if ready:
    sidebar(pages)     # after st.navigation: its links point at the pages this run registered
app_session.write_cookie()
current.run()
