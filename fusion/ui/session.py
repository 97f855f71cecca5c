"""The signed-in account of one browser session of the app, and the checks every page makes.

With settings.auth off the app has one local user, named in the sidebar, who may do everything
(role admin; the Admin page stays out of the navigation). With it on, a session holds an
accounts.SignedIn in st.session_state; every full run, every page and every write checks it
against the database (expiry, idle time, a disabled account, a changed password or role), so a
change an admin makes applies on the session's next action.
"""
from __future__ import annotations

import streamlit as st

from fusion.services import accounts, session_tokens
from fusion.ui import resources as streamlit_cache
from fusion.services.accounts import Account, SessionExpired, SignedIn
from fusion.core.errors import FusionError
from fusion.store.labeling import utcnow

KEY = "signed_in"         # st.session_state[KEY]: accounts.SignedIn
NOTICE = "sign_in_notice"  # why the last session ended, shown on the sign-in page
COOKIE_TO_WRITE = "session_cookie_to_write"   # a token to hand the browser, or "" to clear its cookie
COOKIE_ENDED = "session_cookie_ended"         # signed out: the cookie this session opened with is void
PAGE_TITLES = {"review": "Review", "dataset": "Dataset", "train": "Train", "evaluate": "Evaluate", "admin": "Admin"}


def auth_on() -> bool:
    return streamlit_cache.settings().auth


def sign_in(name: str, password: str) -> Account:
    """Check the password (rate-limited, see accounts.sign_in) and start this session's sign-in;
    the browser gets a signed token to stay signed in across a reload (write_cookie)."""
    address = st.context.ip_address
    account = accounts.sign_in(streamlit_cache.store(), name, password,
                               address=address if isinstance(address, str) else None)   # None on localhost
    now = utcnow()
    st.session_state[KEY] = SignedIn(account.name, now, now)
    st.session_state[COOKIE_TO_WRITE] = session_tokens.issue(streamlit_cache.settings(), account.name, now)
    st.session_state.pop(NOTICE, None)
    st.session_state.pop(COOKIE_ENDED, None)
    return account


def create_first_admin(name: str, password: str, repeated: str) -> Account:
    if password != repeated:
        raise FusionError("the two passwords differ; type the same one twice")
    accounts.create_first_admin(streamlit_cache.store(), name, password)
    return sign_in(name, password)


def sign_out() -> None:
    """The Sign out button: ends this account's sessions in every browser (accounts.sign_out)."""
    signed_in = st.session_state.get(KEY)
    if signed_in is not None:
        accounts.sign_out(streamlit_cache.store(), signed_in.name)
    end_session()


def end_session(notice: str | None = None) -> None:
    """Forget this session's sign-in, and the browser's cookie with it."""
    st.session_state.pop(KEY, None)
    st.session_state[COOKIE_TO_WRITE] = ""
    st.session_state[COOKIE_ENDED] = True    # this session still sees the cookie it was opened with
    if notice:
        st.session_state[NOTICE] = notice


def write_cookie() -> None:
    """Hand the browser the session cookie set or cleared since the last run. Streamlit reads
    cookies but cannot set them: a script in an st.iframe (same origin, our own HTML) does."""
    token = st.session_state.pop(COOKIE_TO_WRITE, None)
    if token is None:
        return
    age = streamlit_cache.settings().session_minutes * 60 if token else 0
    st.iframe(f"""<script>
        const secure = window.parent.location.protocol === "https:" ? "; Secure" : "";
        document.cookie = "{session_tokens.COOKIE}={token}; path=/; max-age={age}; SameSite=Strict" + secure;
        </script>""", height=1)


def _from_cookie() -> SignedIn | None:
    """The sign-in a reloaded page's cookie carries, if this workspace signed it and it is current."""
    if st.session_state.get(COOKIE_ENDED):
        return None
    found = session_tokens.read(streamlit_cache.settings(), st.context.cookies.get(session_tokens.COOKIE), utcnow())
    return SignedIn(found[0], found[1], utcnow()) if found else None


def active_account() -> Account | None:
    """This session's account, still valid, or None (signed out, with the reason as the notice).
    Each call counts as activity for the idle limit."""
    signed_in = st.session_state.get(KEY) or _from_cookie()
    if signed_in is None:
        return None
    try:
        account = accounts.check_session(streamlit_cache.store(), signed_in, streamlit_cache.settings().session_minutes)
    except SessionExpired as e:
        end_session(str(e))
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
