"""The signed-in account of one browser session of the app, and the checks every page makes.

With settings.auth off the app has one local user, named in the sidebar, who may do everything
(role admin; the Admin page stays out of the navigation). With it on, a session holds an
accounts.SignedIn in st.session_state; every full run, every page and every write checks it
against the database (expiry, idle time, a disabled account, a changed password or role), so a
change an admin makes applies on the session's next action.
"""
from __future__ import annotations

import streamlit as st

from fusion.services import accounts
from fusion.ui import resources as streamlit_cache
from fusion.services.accounts import Account, SessionExpired, SignedIn
from fusion.core.errors import FusionError
from fusion.store.labeling import utcnow

KEY = "signed_in"         # st.session_state[KEY]: accounts.SignedIn
NOTICE = "sign_in_notice"  # why the last session ended, shown on the sign-in page
PAGE_TITLES = {"review": "Review", "dataset": "Dataset", "train": "Train", "evaluate": "Evaluate", "admin": "Admin"}


def auth_on() -> bool:
    return streamlit_cache.settings().auth


def sign_in(name: str, password: str) -> Account:
    """Check the password (rate-limited, see accounts.sign_in) and start this session's sign-in."""
    address = st.context.ip_address
    account = accounts.sign_in(streamlit_cache.store(), name, password,
                               address=address if isinstance(address, str) else None)   # None on localhost
    now = utcnow()
    st.session_state[KEY] = SignedIn(account.name, now, now)
    st.session_state.pop(NOTICE, None)
    return account


def create_first_admin(name: str, password: str, repeated: str) -> Account:
    if password != repeated:
        raise FusionError("the two passwords differ; type the same one twice")
    accounts.create_first_admin(streamlit_cache.store(), name, password)
    return sign_in(name, password)


def sign_out(notice: str | None = None) -> None:
    st.session_state.pop(KEY, None)
    if notice:
        st.session_state[NOTICE] = notice


def active_account() -> Account | None:
    """This session's account, still valid, or None (signed out, with the reason as the notice).
    Each call counts as activity for the idle limit."""
    signed_in = st.session_state.get(KEY)
    if signed_in is None:
        return None
    try:
        account = accounts.check_session(streamlit_cache.store(), signed_in, streamlit_cache.settings().session_minutes)
    except SessionExpired as e:
        sign_out(str(e))
        return None
    st.session_state[KEY] = SignedIn(signed_in.name, signed_in.signed_in_at, utcnow())
    return account


def current_role() -> str:
    if not auth_on():
        return "admin"
    account = active_account()
    if account is None:
        raise SessionExpired(st.session_state.get(NOTICE) or "you are not signed in; sign in first")
    return account.role


def current_user() -> str:
    """Who this session's writes are recorded as: the signed-in account, or with accounts off
    the name typed in the sidebar. Call it at the moment of writing, also in callbacks and
    fragments (they run without the page's top), so an ended session writes nothing."""
    if not auth_on():
        return st.session_state.get("user") or "anonymous"
    account = active_account()
    if account is None:
        raise SessionExpired(st.session_state.get(NOTICE) or "you are not signed in; sign in first")
    return account.name


def may(permission: str) -> bool:
    try:
        return accounts.may(current_role(), permission)
    except SessionExpired:
        return False


def require_page(page: str) -> None:
    """Call at the top of every page, after streamlit_cache.require_app_shell: the navigation
    already leaves out pages a role may not use; this stops a page that runs anyway (a legacy
    pages-directory deep link) before it shows or writes anything."""
    if not auth_on():
        return
    account = active_account()
    if account is None:
        st.error(st.session_state.get(NOTICE) or "Sign in to use FusionLab.")
        st.stop()
    if not accounts.may(account.role, page):
        st.error(f"{PAGE_TITLES.get(page, page)} needs the {accounts.GRANTS[page]} role or higher; "
                 f"you are signed in as {account.name} ({account.role}).")
        st.stop()


def check_may_change(item) -> None:
    """Before a decision on `item`: PermissionDenied if this role may not change it (see accounts)."""
    accounts.check_may_change(current_role(), current_user(), item)


def why_may_not_change(item) -> str | None:
    """Why this session may not decide `item` (for disabling the buttons up front), or None."""
    try:
        check_may_change(item)
    except FusionError as e:
        return str(e)
    return None
