"""Accounts and roles: who may sign in, with which role, and what each role may do.

Used when settings.auth is on (FUSION_AUTH=1); off, the app has one local user who may do
everything. Passwords are stored only as argon2id hashes (a random salt and the parameters
inside each hash). Sign-in attempts are kept in the database and rate-limited per name tried,
so the limit holds across browser sessions and server restarts, and a name that does not exist
is treated exactly like one that does.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select

from fusion.core.errors import FusionError
from fusion.store.schema import ROLES, AccountEventRow, SignInAttemptRow, UserRow
from fusion.store.labeling import Store, utcnow

# What each role may do. A permission belongs to the role named here and to every role after it
# in ROLES (annotator < reviewer < admin). Pages are permissions of the same name.
GRANTS = {
    "review": "annotator",    # Review page: upload, read, caption; decide items nobody decided, or re-decide one's own
    "dataset": "annotator",   # Dataset page: browse, edit labels (the same rule), history, export
    "overrule": "reviewer",   # accept, correct or skip an item someone else already decided (Review or Dataset)
    "import": "reviewer",     # import a folder or file into a project (Dataset page)
    "prelabel": "reviewer",   # queue pre-labeling of every undecided item (Review page)
    "check_labels": "reviewer",  # queue a check of every label and the dataset's map (Dataset page)
    "evaluate": "reviewer",   # Evaluate page
    "train": "admin",         # Train page: train, cancel, resume, promote, roll back
    "admin": "admin",         # Admin page: add accounts, set roles, disable, see failed sign-ins
}
PAGES = ("review", "dataset", "train", "evaluate", "admin")   # in the navigation's order


def may(role: str, permission: str) -> bool:
    return ROLES.index(role) >= ROLES.index(GRANTS[permission])


PAGES_BY_ROLE = {role: tuple(p for p in PAGES if may(role, p)) for role in ROLES}
DECIDED = ("accepted", "corrected")   # a human's decision: only a reviewer changes another's

MAX_FAILURES = 5                        # wrong passwords for one name within FAILURE_WINDOW lock it
FAILURE_WINDOW = timedelta(minutes=15)  # ... until the oldest of them is this old
KEEP_ATTEMPTS = timedelta(days=90)      # older sign-in attempts are deleted (a flood can't fill the disk)
IDLE_MINUTES = 30                       # a session with no action for this long ends (a shared workstation)
RESERVED_NAMES = ("model", "anonymous")  # the history already uses these for machine and unnamed writes
NAME_RULE = re.compile(r"^\w[\w .@'-]{0,63}$")
PASSWORD_LENGTH = (8, 1024)

_hasher = PasswordHasher()   # argon2id, RFC 9106 low-memory profile: 64 MiB, 3 passes, 4 lanes


class PermissionDenied(FusionError):
    """The signed-in role may not do this."""


class SignInRefused(FusionError):
    """A wrong name or password, a locked name, or a disabled account."""


class SessionExpired(FusionError):
    """The browser session has to sign in again."""


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    disabled: bool
    created_at: datetime
    created_by: str
    password_changed_at: datetime
    last_sign_in_at: datetime | None
    signed_out_at: datetime | None = None


@dataclass(frozen=True)
class SignedIn:
    """What a browser session holds after signing in; checked on every run (check_session)."""
    name: str
    signed_in_at: datetime
    last_seen: datetime


def _account(row: UserRow) -> Account:
    return Account(row.name, row.role, row.disabled, row.created_at, row.created_by, row.password_changed_at,
                   row.last_sign_in_at, row.signed_out_at)


def name_key(name: str) -> str:
    return name.strip().casefold()[:128]


# ---- roles ----------------------------------------------------------------------------------

def check_role(role: str) -> str:
    if role not in ROLES:
        raise FusionError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    return role


def require(role: str, permission: str) -> None:
    if not may(role, permission):
        raise PermissionDenied(f"{permission} needs the {GRANTS[permission]} role or higher; you are {role}")


def check_may_change(role: str, user: str, item) -> None:
    """Anyone who may review decides items nobody decided and re-decides their own; changing a
    decision someone else made needs the reviewer role."""
    if item.status in DECIDED and item.updated_by != user and not may(role, "overrule"):
        raise PermissionDenied(f"{item.updated_by} already decided this item ({item.status}: {item.label}); changing "
                               f"someone else's decision needs the {GRANTS['overrule']} role (you are {role})")


# ---- accounts -------------------------------------------------------------------------------

def check_name(name: str) -> str:
    name = name.strip()
    if not NAME_RULE.match(name):
        raise FusionError(f"a user name has 1 to 64 letters, digits, spaces or . _ @ ' - and starts with a letter "
                          f"or digit; got {name!r}")
    if name.casefold() in RESERVED_NAMES:
        raise FusionError(f"{name!r} is reserved (the history uses it); choose another name")
    return name


def check_password(password: str, name: str) -> str:
    low, high = PASSWORD_LENGTH
    if not low <= len(password) <= high:
        raise FusionError(f"a password needs {low} to {high} characters; this one has {len(password)}")
    if password.strip().casefold() == name.strip().casefold():
        raise FusionError("a password must not be the user name")
    return password


def _event(session, by: str, name: str, action: str, detail: str | None = None) -> None:
    session.add(AccountEventRow(at=utcnow(), by=by, name=name, action=action, detail=detail))


def _row(session, name: str) -> UserRow:
    row = session.scalar(select(UserRow).where(UserRow.name_key == name_key(name)))
    if row is None:
        raise FusionError(f"no account {name.strip()!r}")
    return row


def _enabled_admins(session) -> int:
    return session.scalar(select(func.count()).where(UserRow.role == "admin", UserRow.disabled.is_(False)))


def add_user(store: Store, name: str, password: str, role: str, by: str, *, first_admin: bool = False) -> Account:
    """A new account. `first_admin`: only while no enabled admin exists (the app's first run),
    checked inside the same write so two people racing to be first can't both be."""
    name, role = check_name(name), check_role(role)
    check_password(password, name)
    password_hash = _hasher.hash(password)   # ~0.1 s: before the write lock, not inside it
    now = utcnow()
    with store.db.write() as session:
        if first_admin and _enabled_admins(session):
            raise FusionError("an admin account exists already; ask an admin to add yours")
        if session.scalar(select(UserRow.id).where(UserRow.name_key == name_key(name))) is not None:
            raise FusionError(f"an account named {name!r} exists already (names ignore case)")
        row = UserRow(name=name, name_key=name_key(name), role=role, password_hash=password_hash, disabled=False,
                      created_at=now, created_by=by, password_changed_at=now)
        session.add(row)
        _event(session, by, name, "add", role)
    return _account(row)


def create_first_admin(store: Store, name: str, password: str) -> Account:
    return add_user(store, name, password, "admin", by=name.strip(), first_admin=True)


def has_admin(store: Store) -> bool:
    with store.db.read() as session:
        return _enabled_admins(session) > 0


def get_user(store: Store, name: str) -> Account | None:
    with store.db.read() as session:
        row = session.scalar(select(UserRow).where(UserRow.name_key == name_key(name)))
        return None if row is None else _account(row)


def list_users(store: Store) -> list[Account]:
    with store.db.read() as session:
        return [_account(r) for r in session.scalars(select(UserRow).order_by(UserRow.name_key))]


def _keep_an_admin(session, row: UserRow) -> None:
    if row.role == "admin" and not row.disabled and _enabled_admins(session) == 1:
        raise FusionError(f"{row.name} is the only enabled admin; make another account admin first")


def set_role(store: Store, name: str, role: str, by: str) -> Account:
    check_role(role)
    with store.db.write() as session:
        row = _row(session, name)
        if row.role != role:
            if role != "admin":
                _keep_an_admin(session, row)
            _event(session, by, row.name, "role", f"{row.role} -> {role}")
            row.role = role
        return _account(row)


def set_disabled(store: Store, name: str, disabled: bool, by: str) -> Account:
    """A disabled account can't sign in, and its open sessions end on their next action."""
    with store.db.write() as session:
        row = _row(session, name)
        if row.disabled != disabled:
            if disabled:
                _keep_an_admin(session, row)
            _event(session, by, row.name, "disable" if disabled else "enable")
            row.disabled = disabled
        return _account(row)


def set_password(store: Store, name: str, password: str, by: str) -> Account:
    """A new password; the account's open sessions end (the old one may have leaked)."""
    with store.db.read() as session:
        check_password(password, _row(session, name).name)
    password_hash = _hasher.hash(password)
    with store.db.write() as session:
        row = _row(session, name)
        row.password_hash, row.password_changed_at = password_hash, utcnow()
        _event(session, by, row.name, "password")
        return _account(row)


# ---- signing in -----------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _decoy_hash() -> str:
    """Verified against when the name does not exist, so that takes as long as a wrong password."""
    return _hasher.hash("no such account")


def _locked_for(session, key: str, now: datetime) -> timedelta | None:
    """How long `key` stays locked: MAX_FAILURES wrong passwords since FAILURE_WINDOW ago (and
    since its last success) lock it until the oldest of them leaves the window."""
    start = now - FAILURE_WINDOW
    last_ok = session.scalar(select(func.max(SignInAttemptRow.at)).where(
        SignInAttemptRow.name_key == key, SignInAttemptRow.outcome == "ok"))
    if last_ok is not None and last_ok > start:
        start = last_ok
    failures = session.scalars(select(SignInAttemptRow.at).where(
        SignInAttemptRow.name_key == key, SignInAttemptRow.outcome == "wrong", SignInAttemptRow.at > start)
        .order_by(SignInAttemptRow.at.desc()).limit(MAX_FAILURES)).all()
    if len(failures) < MAX_FAILURES:
        return None
    left = failures[-1] + FAILURE_WINDOW - now
    return left if left > timedelta(0) else None


def sign_in(store: Store, name: str, password: str, address: str | None = None,
            now: datetime | None = None) -> Account:
    """The account if the name and password match; SignInRefused with the reason otherwise.
    The messages never tell whether a name exists, except to someone who knows its password."""
    now = now or utcnow()
    key = name_key(name)
    # The attempt counts as a failure before the password is checked, so parallel guesses
    # can't all slip in under the limit; a right password turns it into "ok" below.
    with store.db.write() as session:
        session.execute(delete(SignInAttemptRow).where(SignInAttemptRow.at < now - KEEP_ATTEMPTS))
        locked = _locked_for(session, key, now)
        attempt = SignInAttemptRow(at=now, name_key=key, outcome="locked" if locked else "wrong",
                                   address=(address or None) and address[:64])
        session.add(attempt)
    if locked:
        minutes = math.ceil(locked.total_seconds() / 60)
        raise SignInRefused(f"too many failed sign-ins for {name.strip()!r}: try again in {minutes} minute"
                            f"{'s' if minutes != 1 else ''}, or ask an admin to reset the password")
    with store.db.read() as session:
        row = session.scalar(select(UserRow).where(UserRow.name_key == key))
        stored = row.password_hash if row is not None else _decoy_hash()
    try:
        matched = _hasher.verify(stored, password) and row is not None
    except (VerificationError, InvalidHashError):
        matched = False
    if not matched:
        raise SignInRefused("wrong user name or password")
    with store.db.write() as session:
        row = session.get(UserRow, row.id)
        session.get(SignInAttemptRow, attempt.id).outcome = "disabled" if row.disabled else "ok"
        if not row.disabled:
            row.last_sign_in_at = now
            if _hasher.check_needs_rehash(row.password_hash):   # hashed under older parameters
                row.password_hash = _hasher.hash(password)
        account = _account(row)
    if account.disabled:
        raise SignInRefused("this account is disabled; an admin can enable it")
    return account


def check_session(store: Store, signed_in: SignedIn, session_minutes: int, now: datetime | None = None) -> Account:
    """The session's account as the database has it now (its role may have changed), or
    SessionExpired saying why the session ended."""
    now = now or utcnow()
    idle = min(IDLE_MINUTES, session_minutes)
    if now - signed_in.signed_in_at > timedelta(minutes=session_minutes):
        raise SessionExpired(f"your session ended after {session_minutes} minutes (FUSION_SESSION_MINUTES); "
                             "sign in again")
    if now - signed_in.last_seen > timedelta(minutes=idle):
        raise SessionExpired(f"you were away for more than {idle} minutes; sign in again")
    account = get_user(store, signed_in.name)
    if account is None or account.disabled:
        raise SessionExpired("your account was disabled; ask an admin")
    if account.password_changed_at > signed_in.signed_in_at:
        raise SessionExpired("your password was changed; sign in with the new one")
    if account.signed_out_at and account.signed_out_at >= signed_in.signed_in_at:
        raise SessionExpired("you signed out; sign in again")
    return account


def sign_out(store: Store, name: str) -> None:
    """End every session of this account begun until now, in any browser: its session cookies
    stop signing it in (check_session)."""
    with store.db.write() as session:
        row = _row(session, name)
        row.signed_out_at = utcnow()


# ---- what an admin sees ---------------------------------------------------------------------

def failed_sign_ins(store: Store, limit: int = 50) -> list[SignInAttemptRow]:
    """The latest refused attempts (wrong password, locked name, disabled account), newest first."""
    with store.db.read() as session:
        return list(session.scalars(select(SignInAttemptRow).where(SignInAttemptRow.outcome != "ok")
                                    .order_by(SignInAttemptRow.at.desc(), SignInAttemptRow.id.desc()).limit(limit)))


def account_events(store: Store, limit: int = 100) -> list[AccountEventRow]:
    with store.db.read() as session:
        return list(session.scalars(select(AccountEventRow).order_by(AccountEventRow.id.desc()).limit(limit)))
