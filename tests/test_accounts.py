"""fusion.services.accounts on a real (fresh) SQLite store: salted argon2id hashes, the sign-in rate limit
kept in the database, session expiry, the roles' table, the admin's changes and the users CLI."""
from __future__ import annotations

import io
from datetime import timedelta
from types import SimpleNamespace

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, text

from fusion.services import accounts
from fusion.services.accounts import PermissionDenied, SessionExpired, SignedIn, SignInRefused
from fusion.core.errors import FusionError
from fusion.store.schema import UserRow
from fusion.core.settings import load_settings
from fusion.store.labeling import Store, utcnow


@pytest.fixture
def store(tmp_path, database_url):
    return Store(load_settings(home=tmp_path, database_url=database_url))


@pytest.fixture
def quick_hashes(monkeypatch):
    """argon2id with small parameters (the same code path, ~2 ms instead of ~0.25 s a hash), for
    tests about what happens around the hash; the hashing tests use the real parameters."""
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    accounts._decoy_hash.cache_clear()
    yield
    accounts._decoy_hash.cache_clear()


def test_hashes_are_salted_argon2id_and_only_the_right_password_signs_in(store):
    accounts.add_user(store, "Rita", "correct horse", "admin", by="setup")
    accounts.add_user(store, "bob", "correct horse", "annotator", by="Rita")
    with store.db.read() as session:
        hashes = list(session.scalars(select(UserRow.password_hash)))
    assert len(set(hashes)) == 2 and all(h.startswith("$argon2id$") for h in hashes)   # same password, new salt
    assert "correct horse" not in "".join(hashes)

    assert accounts.sign_in(store, "rita", "correct horse").name == "Rita"   # names ignore case
    with pytest.raises(SignInRefused, match="wrong user name or password"):
        accounts.sign_in(store, "Rita", "correct horsE")
    with pytest.raises(SignInRefused, match="wrong user name or password"):   # same words: existence not told
        accounts.sign_in(store, "nobody", "correct horse")
    assert accounts.get_user(store, "rita").last_sign_in_at is not None


def test_a_hash_made_with_older_parameters_is_replaced_at_sign_in(store):
    accounts.add_user(store, "ann", "first password", "annotator", by="setup")
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("first password")
    with store.db.write() as session:
        session.scalar(select(UserRow)).password_hash = weak
    accounts.sign_in(store, "ann", "first password")
    with store.db.read() as session:
        rehashed = session.scalar(select(UserRow.password_hash))
    assert rehashed != weak and not PasswordHasher().check_needs_rehash(rehashed)
    assert accounts.sign_in(store, "ann", "first password").name == "ann"


def test_failed_sign_ins_lock_a_name_for_a_while_also_after_a_restart(store, quick_hashes):
    from fusion.store.database import open_database

    accounts.add_user(store, "ann", "right password", "annotator", by="setup")
    start = utcnow()
    for k in range(accounts.MAX_FAILURES - 1):   # a success clears the count
        with pytest.raises(SignInRefused, match="wrong"):
            accounts.sign_in(store, "ann", "guess", now=start + timedelta(seconds=k))
    accounts.sign_in(store, "ann", "right password", now=start + timedelta(seconds=10))
    for name in ("ann", "no-such-user"):        # an unknown name locks the same way
        for k in range(accounts.MAX_FAILURES):
            with pytest.raises(SignInRefused, match="wrong"):
                accounts.sign_in(store, name, "guess", now=start + timedelta(seconds=20 + k))

    open_database.cache_clear()     # as after a server restart: the count is in the database
    restarted = Store(store.settings)
    for name, password in (("ann", "right password"), ("no-such-user", "guess")):
        with pytest.raises(SignInRefused, match=r"too many failed sign-ins for '.+': try again in 15 minutes"):
            accounts.sign_in(restarted, name, password, address="10.0.0.7", now=start + timedelta(seconds=30))
    with pytest.raises(SignInRefused, match="try again in 1 minute,"):    # locked attempts don't extend it
        accounts.sign_in(restarted, "ann", "right password", now=start + timedelta(minutes=14, seconds=30))
    assert accounts.sign_in(restarted, "ann", "right password", now=start + timedelta(minutes=15, seconds=25))

    failed = accounts.failed_sign_ins(restarted)
    assert [f.outcome for f in failed[:3]] == ["locked", "locked", "locked"] and failed[1].address == "10.0.0.7"
    assert sum(f.outcome == "wrong" for f in failed) == 2 * accounts.MAX_FAILURES + accounts.MAX_FAILURES - 1


def test_a_disabled_account_cant_sign_in(store, quick_hashes):
    accounts.add_user(store, "boss", "boss password", "admin", by="setup")
    accounts.add_user(store, "ann", "right password", "annotator", by="boss")
    accounts.set_disabled(store, "ann", True, by="boss")
    with pytest.raises(SignInRefused, match="wrong user name or password"):   # a wrong password tells nothing
        accounts.sign_in(store, "ann", "guess")
    with pytest.raises(SignInRefused, match="disabled"):
        accounts.sign_in(store, "ann", "right password")
    accounts.set_disabled(store, "ann", False, by="boss")
    assert accounts.sign_in(store, "ann", "right password").role == "annotator"


def test_sessions_end_after_their_time_when_idle_or_when_an_admin_changes_the_account(store, quick_hashes):
    accounts.add_user(store, "boss", "boss password", "admin", by="setup")
    accounts.add_user(store, "ann", "right password", "annotator", by="boss")
    now = utcnow()
    fresh = SignedIn("ann", now, now)
    assert accounts.check_session(store, fresh, 480, now=now + timedelta(minutes=5)).role == "annotator"
    with pytest.raises(SessionExpired, match="ended after 480 minutes"):
        accounts.check_session(store, SignedIn("ann", now, now + timedelta(minutes=479)), 480,
                               now=now + timedelta(minutes=481))
    with pytest.raises(SessionExpired, match="away for more than 30 minutes"):
        accounts.check_session(store, fresh, 480, now=now + timedelta(minutes=31))

    accounts.set_role(store, "ann", "reviewer", by="boss")     # applies to the open session at once
    assert accounts.check_session(store, fresh, 480, now=now).role == "reviewer"
    accounts.set_password(store, "ann", "a new password", by="boss")   # after `fresh` signed in
    later = utcnow()
    with pytest.raises(SessionExpired, match="password was changed"):
        accounts.check_session(store, fresh, 480, now=later)
    accounts.set_disabled(store, "ann", True, by="boss")
    with pytest.raises(SessionExpired, match="disabled"):
        accounts.check_session(store, SignedIn("ann", later, later), 480, now=later)


def test_roles_pages_and_who_may_change_a_decision():
    assert accounts.PAGES_BY_ROLE == {"annotator": ("review", "dataset"),
                                      "reviewer": ("review", "dataset", "evaluate"),
                                      "admin": ("review", "dataset", "train", "evaluate", "admin")}
    assert [r for r in ("annotator", "reviewer", "admin") if accounts.may(r, "import")] == ["reviewer", "admin"]
    with pytest.raises(PermissionDenied, match="train needs the admin role or higher; you are reviewer"):
        accounts.require("reviewer", "train")

    decided = SimpleNamespace(status="corrected", updated_by="rita", label="burn")
    accounts.check_may_change("annotator", "rita", decided)                  # one's own decision
    accounts.check_may_change("reviewer", "ann", decided)                    # a reviewer overrules
    accounts.check_may_change("annotator", "ann", SimpleNamespace(status="predicted", updated_by="model", label=None))
    with pytest.raises(PermissionDenied, match="rita already decided this item .corrected: burn.; .* reviewer role"):
        accounts.check_may_change("annotator", "ann", decided)


def test_admin_changes_are_checked_and_recorded(store, quick_hashes):
    assert not accounts.has_admin(store)
    accounts.create_first_admin(store, "boss", "boss password")
    with pytest.raises(FusionError, match="an admin account exists already"):
        accounts.create_first_admin(store, "intruder", "intruder password")
    for bad, message in ((("BOSS", "other password", "annotator"), "exists already .names ignore case."),
                         (("model", "model password", "annotator"), "reserved"),
                         (("", "some password", "annotator"), "a user name has 1 to 64"),
                         (("eve", "short", "annotator"), "8 to 1024 characters; this one has 5"),
                         (("eve", "eve", "annotator"), "8 to 1024"),
                         (("evelynnn", "Evelynnn", "annotator"), "must not be the user name"),
                         (("eve", "eve password", "owner"),
                          "unknown role 'owner'; roles are annotator, reviewer, admin")):
        with pytest.raises(FusionError, match=message):
            accounts.add_user(store, *bad, by="boss")
    with pytest.raises(FusionError, match="boss is the only enabled admin"):
        accounts.set_role(store, "boss", "reviewer", by="boss")
    with pytest.raises(FusionError, match="boss is the only enabled admin"):
        accounts.set_disabled(store, "boss", True, by="boss")
    with pytest.raises(FusionError, match="no account 'ghost'"):
        accounts.set_role(store, "ghost", "admin", by="boss")
    accounts.add_user(store, "eve", "eve password", "annotator", by="boss")
    accounts.set_role(store, "eve", "admin", by="boss")
    accounts.set_role(store, "boss", "reviewer", by="eve")                 # another admin exists now

    assert [(u.name, u.role) for u in accounts.list_users(store)] == [("boss", "reviewer"), ("eve", "admin")]
    events = [(e.by, e.name, e.action, e.detail) for e in reversed(accounts.account_events(store))]
    assert events == [("boss", "boss", "add", "admin"), ("boss", "eve", "add", "annotator"),
                      ("boss", "eve", "role", "annotator -> admin"), ("eve", "boss", "role", "admin -> reviewer")]
    with pytest.raises(Exception, match="append-only"), store.db.engine.begin() as c:
        c.execute(text("UPDATE account_events SET by = 'someone else'"))


def test_users_cli_adds_lists_sets_roles_and_disables(store, quick_hashes, monkeypatch, capsys):
    from fusion.cli.main import main

    home = ["--home", str(store.settings.home)]
    monkeypatch.setattr("sys.stdin", io.StringIO("cli password\n"))
    assert main([*home, "users", "add", "Rita", "--role", "admin", "--user", "ops"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("other password\n"))
    assert main([*home, "users", "add", "bob", "--user", "ops"]) == 0
    assert main([*home, "users", "set-role", "bob", "reviewer", "--user", "Rita"]) == 0
    assert main([*home, "users", "disable", "bob", "--user", "Rita"]) == 0
    assert main([*home, "users", "disable", "rita"]) == 2
    capsys.readouterr()
    assert main([*home, "users", "list"]) == 0
    assert capsys.readouterr().out.splitlines() == ["bob  reviewer  (disabled)", "Rita  admin"]
    assert accounts.sign_in(store, "rita", "cli password").role == "admin"
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main([*home, "users", "add", "carl"]) == 2
    assert "no password" in capsys.readouterr().err


def test_session_tokens_are_signed_expire_and_end_at_sign_out(store, quick_hashes):
    """The cookie that keeps a browser signed in across a reload: signed by the workspace, never
    the password, void once altered, expired, signed by another workspace, or signed out."""
    import base64
    import json

    from fusion.services import session_tokens

    accounts.add_user(store, "Rita", "correct horse", "admin", by="setup")
    settings, now = store.settings, utcnow()
    token = session_tokens.issue(settings, "Rita", now)
    assert "correct horse" not in token
    assert session_tokens.read(settings, token, now) == ("Rita", now)
    assert (store.settings.home / "session.key").stat().st_mode & 0o077 == 0      # its owner's only

    payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps(claims | {"name": "admin2"}).encode()).decode().rstrip("=")
    for bad in (f"{forged}.{signature}", token[:-2] + "AA", "", None, "no-dot", "a.b.c"):
        assert session_tokens.read(settings, bad, now) is None, bad
    later = now + timedelta(minutes=settings.session_minutes + 1)
    assert session_tokens.read(settings, token, later) is None                   # expired with the session
    other = load_settings(home=settings.home / "other", database_url=settings.database_url)
    assert session_tokens.read(other, token, now) is None                        # another workspace's key

    signed_in = SignedIn("Rita", now, now)
    assert accounts.check_session(store, signed_in, 60).name == "Rita"
    accounts.sign_out(store, "Rita")
    with pytest.raises(SessionExpired, match="signed out"):
        accounts.check_session(store, signed_in, 60)
    after = utcnow() + timedelta(seconds=1)                                       # a new sign-in still works
    assert accounts.check_session(store, SignedIn("Rita", after, after), 60, now=after).name == "Rita"
