"""Admin (accounts on, admin role): add accounts, set roles, disable or enable, reset passwords;
recent failed sign-ins and every account change."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from fusion.services import accounts
from fusion.ui import session as app_session
from fusion.ui import resources as streamlit_cache
from fusion.core.errors import FusionError
from fusion.store.schema import ROLES

streamlit_cache.require_app_shell()
app_session.require_page("admin")
store = streamlit_cache.store()


def act(change, done: str) -> None:
    """Run one account change as the signed-in admin. Done: rerun, so every list on the page has
    it, and say so there; refused: say why here."""
    try:
        change(app_session.current_user())
    except FusionError as e:
        st.error(str(e))
    else:
        st.session_state["admin_done"] = done
        st.rerun()


def same_twice(password: str, repeated: str) -> str:
    if password != repeated:
        raise FusionError("the two passwords differ; type the same one twice")
    return password


st.title("Admin")
st.caption("What each role may use: " + " · ".join(
    f"**{role}**: {', '.join(app_session.PAGE_TITLES[p] for p in accounts.PAGES_BY_ROLE[role])}" for role in ROLES)
    + ". Reviewers may also change decisions others made, import files and pre-label.")
if "admin_done" in st.session_state:
    st.success(st.session_state.pop("admin_done"))
names = [a.name for a in accounts.list_users(store)]
add, role_tab, access_tab, password_tab = st.tabs(["Add an account", "Set a role", "Disable or enable",
                                                   "Reset a password"])
with add, st.form("add_account", clear_on_submit=True):
    name = st.text_input("User name", key="admin_new_name")
    role = st.selectbox("Role", ROLES, key="admin_new_role")
    password = st.text_input("Password (8 characters or more)", type="password", key="admin_new_password")
    repeated = st.text_input("The same password again", type="password", key="admin_new_repeat")
    if st.form_submit_button("Add the account", type="primary", icon=":material/person_add:"):
        act(lambda by: accounts.add_user(store, name, same_twice(password, repeated), role, by),
            f"Added {name.strip()} as {role}.")
with role_tab, st.form("set_role"):
    name = st.selectbox("Account", names, key="admin_role_user")
    role = st.selectbox("Role", ROLES, key="admin_role_role")
    if st.form_submit_button("Set the role", disabled=not names):
        act(lambda by: accounts.set_role(store, name, role, by), f"{name} is now {role}.")
with access_tab, st.form("access"):
    name = st.selectbox("Account", names, key="admin_access_user")
    st.caption("A disabled account can't sign in, and its open sessions end at their next action.")
    disable, enable = st.columns(2)
    if disable.form_submit_button("Disable", disabled=not names):
        act(lambda by: accounts.set_disabled(store, name, True, by), f"{name} is disabled.")
    if enable.form_submit_button("Enable", disabled=not names):
        act(lambda by: accounts.set_disabled(store, name, False, by), f"{name} is enabled.")
with password_tab, st.form("reset_password", clear_on_submit=True):
    name = st.selectbox("Account", names, key="admin_password_user")
    password = st.text_input("New password", type="password", key="admin_password_new")
    repeated = st.text_input("The same password again", type="password", key="admin_password_repeat")
    st.caption("The account's open sessions end; it signs in with the new password.")
    if st.form_submit_button("Set the password", disabled=not names):
        act(lambda by: accounts.set_password(store, name, same_twice(password, repeated), by),
            f"{name} has a new password.")

st.subheader("Accounts")
st.dataframe(pd.DataFrame([{"name": a.name, "role": a.role, "enabled": not a.disabled,
                            "last sign-in (UTC)": a.last_sign_in_at, "created (UTC)": a.created_at,
                            "created by": a.created_by}
                           for a in accounts.list_users(store)],
                          columns=["name", "role", "enabled", "last sign-in (UTC)", "created (UTC)", "created by"]),
             hide_index=True, width="stretch", key="admin_accounts")

left, right = st.columns(2)
with left:
    st.subheader("Recent failed sign-ins")
    st.caption(f"{accounts.MAX_FAILURES} wrong passwords for one name within "
               f"{accounts.FAILURE_WINDOW.seconds // 60} minutes lock that name for up to as long.")
    st.dataframe(pd.DataFrame([{"when (UTC)": a.at, "name tried": a.name_key, "outcome": a.outcome,
                                "address": a.address or ""} for a in accounts.failed_sign_ins(store)],
                              columns=["when (UTC)", "name tried", "outcome", "address"]),
                 hide_index=True, width="stretch", key="admin_failures")
with right:
    st.subheader("Account changes")
    st.dataframe(pd.DataFrame([{"when (UTC)": e.at, "by": e.by, "account": e.name, "what": e.action,
                                "detail": e.detail or ""} for e in accounts.account_events(store)],
                              columns=["when (UTC)", "by", "account", "what", "detail"]),
                 hide_index=True, width="stretch", key="admin_events")
