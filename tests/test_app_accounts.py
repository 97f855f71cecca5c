"""The app with accounts on (FUSION_AUTH=1) under AppTest: sign in before any page, a wrong
password refused, each role's navigation, pages that stop a role they don't allow even when run
outside the navigation, an ended session, the Admin page adding and disabling an account, and a
correction recorded under the signed-in name."""
from __future__ import annotations

import io
import os
from datetime import timedelta

import pytest
from PIL import Image, ImageDraw, ImageFont
from streamlit.testing.v1 import AppTest

from fusion.services import accounts
from fusion.ui import session as app_session
from fusion.ui import resources as streamlit_cache
from fusion.services.accounts import SignedIn
from fusion.imaging.images import image_sha256
from fusion.store.labeling import open_store, utcnow

from helpers import APP, TIMEOUT

RUN = os.urandom(3).hex()   # this run's account names and page: the workspace may be reused
ADMIN, ANNOTATOR = f"admin-{RUN}", f"ann-{RUN}"
PASSWORD = "a long enough password"
PROJECT = "accounts"


@pytest.fixture
def auth_on(monkeypatch, settings, demo_project):
    """FUSION_AUTH=1 for this test's app runs, with an admin and an annotator."""
    monkeypatch.setenv("FUSION_AUTH", "1")
    streamlit_cache.settings.clear()   # st.cache_resource: read the environment again
    store = open_store(settings)
    for name, role in ((ADMIN, "admin"), (ANNOTATOR, "annotator")):
        if accounts.get_user(store, name) is None:
            accounts.add_user(store, name, PASSWORD, role, by="test setup")
    yield store
    streamlit_cache.settings.clear()   # the tests after this one run with accounts off again


def sign_in(app: AppTest, name: str, password: str) -> AppTest:
    app.text_input(key="sign_in_name").set_value(name)
    app.text_input(key="sign_in_password").set_value(password)
    next(b for b in app.button if b.label == "Sign in").click().run()
    assert not app.exception, app.exception
    return app


def fresh_app() -> AppTest:
    app = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    app.run()
    assert not app.exception, app.exception
    return app


def page_bytes() -> bytes:
    image = Image.new("RGB", (900, 300), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 2, 2), fill=tuple(bytes.fromhex(RUN)))   # this run's page is a new item
    draw.text((30, 100), "Troponin 0.02 ng/mL", fill="black", font=ImageFont.load_default(size=40))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_sign_in_then_only_the_roles_pages_and_writes_under_that_name(auth_on, demo_project):
    store = auth_on
    if PROJECT not in store.project_names():   # its queue holds only what these tests upload
        store.create_project(PROJECT, demo_project.labels, user="test setup")
    app = fresh_app()
    assert [s.value for s in app.subheader] == ["Sign in"] and not app.sidebar.text_input   # no page, no name box

    sign_in(app, ANNOTATOR, "not the password")
    assert "wrong user name or password" in app.error[0].value and app.subheader[0].value == "Sign in"
    sign_in(app, ANNOTATOR, PASSWORD)
    assert app.title[0].value == "Review"
    assert f"Signed in as **{ANNOTATOR}** (annotator)" in [m.value for m in app.sidebar.markdown]
    assert [t.label for t in app.sidebar.text_input] == []                        # "Your name" is gone
    for forbidden in ("pages/train.py", "pages/admin.py", "pages/evaluate.py"):   # not in its navigation
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            app.switch_page(forbidden)
    app.switch_page("pages/dataset.py").switch_page("pages/review.py")            # both registered

    # Upload a page and correct its label: the store records the signed-in name for both.
    app.selectbox(key="project").set_value(PROJECT).run()
    app.file_uploader[0].set_value(("troponin.png", page_bytes(), "image/png")).run()
    assert not app.exception, app.exception
    shown = next(m.value for m in app.markdown if m.value.startswith("### "))[4:].split()[0]
    labels = list(demo_project.labels)
    other = next(label for label in labels if label != shown)
    app.button(key=f"label_{labels.index(other)}").click().run()
    assert not app.exception, app.exception
    item = store.item(PROJECT, image_sha256(page_bytes()))
    history = store.history(PROJECT, item.id)
    assert (item.label, item.status, item.updated_by) == (other, "corrected", ANNOTATOR)
    assert (history[0].action, history[0].user) == ("add", ANNOTATOR)
    assert (history[-1].action, history[-1].user, history[-1].shown_label) == ("correct", ANNOTATOR, shown)

    # A demo page the generator decided: an annotator may not change it, sees why, and can't press.
    app.selectbox(key="project").set_value(demo_project.name).run()
    app.button(key="demo_page").click().run()
    assert not app.exception, app.exception
    assert app.button(key="accept").disabled and app.button(key="skip").disabled and app.button(key="label_0").disabled
    assert any("already decided this item" in c.value for c in app.caption)

    app.button(key="sign_out").click().run()
    assert app.subheader[0].value == "Sign in" and app_session.KEY not in app.session_state


def test_pages_stop_roles_they_dont_allow_and_ended_sessions_sign_in_again(auth_on):
    train = AppTest.from_file(str(APP.parent / "pages" / "train.py"), default_timeout=TIMEOUT)
    train.run()   # as a legacy pages-directory deep link would: the page without app.py's navigation
    assert not train.exception, train.exception
    assert "Sign in to use FusionLab" in train.error[0].value and not train.title
    now = utcnow()
    train.session_state[app_session.KEY] = SignedIn(ANNOTATOR, now, now)
    train.run()
    assert train.error[0].value == (f"Train needs the admin role or higher; you are signed in as {ANNOTATOR} "
                                    "(annotator).") and not train.title

    app = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    app.session_state[app_session.KEY] = SignedIn(ANNOTATOR, now - timedelta(hours=9), now)
    app.run()
    assert not app.exception, app.exception
    assert app.subheader[0].value == "Sign in"
    assert "your session ended after 480 minutes" in app.info[0].value


def test_admin_page_adds_and_disables_an_account(auth_on):
    store = auth_on
    app = sign_in(fresh_app(), ADMIN, PASSWORD)
    assert f"Signed in as **{ADMIN}** (admin)" in [m.value for m in app.sidebar.markdown]
    app.switch_page("pages/admin.py").run()
    assert not app.exception, app.exception
    assert app.title[0].value == "Admin"

    reviewer = f"rev-{RUN}"
    app.text_input(key="admin_new_name").set_value(reviewer)
    app.selectbox(key="admin_new_role").set_value("reviewer")
    app.text_input(key="admin_new_password").set_value(PASSWORD)
    app.text_input(key="admin_new_repeat").set_value(PASSWORD)
    next(b for b in app.button if b.label == "Add the account").click().run()
    assert not app.exception, app.exception
    assert f"Added {reviewer} as reviewer." in [s.value for s in app.success]
    added = accounts.get_user(store, reviewer)
    assert (added.role, added.created_by, added.disabled) == ("reviewer", ADMIN, False)
    assert reviewer in set(app.dataframe[0].value["name"])
    assert accounts.sign_in(store, reviewer, PASSWORD).role == "reviewer"

    app.selectbox(key="admin_access_user").set_value(reviewer)
    next(b for b in app.button if b.label == "Disable").click().run()
    assert not app.exception, app.exception
    assert f"{reviewer} is disabled." in [s.value for s in app.success]
    assert accounts.get_user(store, reviewer).disabled
    events = [(e.by, e.name, e.action) for e in accounts.account_events(store, limit=5)]
    assert events[:2] == [(ADMIN, reviewer, "disable"), (ADMIN, reviewer, "add")]
