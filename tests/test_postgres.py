"""PostgreSQL as a team's store: what a server that is missing, refuses us or goes away does, and
what many writers at once do (the store's other tests run on it too: see conftest.database_url)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from fusion.database import DatabaseUnavailable
from fusion.errors import FusionError
from fusion.settings import REPO_ROOT, load_settings
from fusion.store import Store


def cli(home, url, *args):
    return subprocess.run([sys.executable, "-m", "fusion", "--home", str(home), *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, env={"PATH": "/usr/bin:/bin", "FUSION_DATABASE_URL": url}, timeout=120)


def test_a_server_that_is_down_refuses_a_password_or_lacks_the_database_is_one_error_line(postgres, tmp_path):
    postgres.execute("CREATE ROLE ann LOGIN PASSWORD 'right'")
    base = f"127.0.0.1:{postgres.port}"
    cases = {f"postgresql://postgres@127.0.0.1:1/fusion": "can't be reached",
             f"postgresql://ann:wrong@{base}/postgres": "refused the user name or password",
             f"postgresql://postgres@{base}/no_such_db": "no such database",
             "postgresql:///?bad=": "",
             "mysql://a@b/c": "SQLite or PostgreSQL",
             "not a url": "not a database URL"}
    for url, expected in cases.items():
        with pytest.raises(FusionError, match=expected):
            Store(load_settings(home=tmp_path, database_url=url))
        if url.startswith("postgresql://") and expected:
            run = cli(tmp_path, url, "project", "list")
            assert run.returncode == 2, run.stderr
            assert run.stderr.startswith("error: ") and len(run.stderr.strip().splitlines()) == 1, run.stderr
            assert expected in run.stderr and "wrong" not in run.stderr   # the password is masked


def test_a_server_that_goes_away_mid_session_is_one_clear_error_and_then_works_again(postgres, tmp_path):
    url = postgres.new_database()
    store = Store(load_settings(home=tmp_path, database_url=url))
    store.create_project("p", {"a": "", "b": ""}, user="ann")
    name = url.rsplit("/", 1)[1]
    postgres.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
    # The pool's pre-ping notices the dropped connections and reconnects: no error at all.
    assert store.project_names() == ["p"]
    postgres.execute(f"ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS false")
    postgres.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
    with pytest.raises(DatabaseUnavailable, match="can't use the database"):
        store.project_names()
    postgres.execute(f"ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS true")
    assert store.project_names() == ["p"]


def test_the_app_says_on_one_line_that_the_database_server_is_down(postgres, tmp_path, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FUSION_HOME", str(tmp_path))
    monkeypatch.setenv("FUSION_DATABASE_URL", "postgresql://postgres:secret@127.0.0.1:1/fusion")
    st.cache_resource.clear()   # the settings and store other tests' apps cached in this process
    try:
        app = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=60).run()
    finally:
        st.cache_resource.clear()
    assert not app.exception, app.exception
    assert [e.value for e in app.error] == [
        "can't use the database postgresql://postgres:***@127.0.0.1:1/fusion: the server can't be reached or closed "
        "the connection (is it running, and are the host and port right?); check FUSION_DATABASE_URL"]
