"""Sign in (accounts on): name and password; on a workspace with no admin yet, create the first one."""
from __future__ import annotations

import streamlit as st

from fusion.services import accounts
from fusion.ui import session as app_session
from fusion.ui import resources as streamlit_cache
from fusion.core.errors import FusionError

streamlit_cache.require_app_shell()
store = streamlit_cache.store()

# A form of a readable width, not stretched across a wide screen.
_, middle, _ = st.columns([1, 2, 1])
with middle:
    st.title("FusionLab")
    notice = st.session_state.get(app_session.NOTICE)
    if notice:
        st.info(notice)

    if not accounts.has_admin(store):
        st.subheader("Create the first admin account")
        st.caption("Accounts are on (FUSION_AUTH) and this workspace has no admin yet. The first account made here is "
                   "an admin, who then adds everyone else on the Admin page. From a shell: "
                   "`python -m fusion users add NAME --role admin`.")
        with st.form("first_admin", clear_on_submit=True):
            name = st.text_input("User name", key="first_admin_name")
            password = st.text_input("Password (8 characters or more)", type="password", key="first_admin_password")
            repeated = st.text_input("The same password again", type="password", key="first_admin_repeat")
            if st.form_submit_button("Create the admin account and sign in", type="primary"):
                try:
                    app_session.create_first_admin(name, password, repeated)
                except FusionError as e:
                    st.error(str(e))
                else:
                    st.rerun()
        st.stop()

    st.subheader("Sign in")
    with st.form("sign_in", clear_on_submit=True):
        name = st.text_input("User name", key="sign_in_name")
        password = st.text_input("Password", type="password", key="sign_in_password")
        if st.form_submit_button("Sign in", type="primary", icon=":material/login:"):
            try:
                app_session.sign_in(name, password)
            except FusionError as e:
                st.error(str(e))
            else:
                st.rerun()
