"""PostgreSQL as a team's store: what a server that is missing, refuses us or goes away does, and
what many writers at once do (the store's other tests run on it too: see conftest.database_url)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from fusion.store.database import DatabaseUnavailable
from fusion.core.errors import FusionError
from fusion.core.settings import REPO_ROOT, load_settings
from fusion.store.labeling import Store

from helpers import png_bytes, wait_for


def cli(home, url, *args):
    return subprocess.run([sys.executable, "-m", "fusion", "--home", str(home), *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, env={"PATH": "/usr/bin:/bin", "FUSION_DATABASE_URL": url}, timeout=120)


def test_a_server_that_is_down_refuses_a_password_or_lacks_the_database_is_one_error_line(postgres, tmp_path):
    postgres.execute("CREATE ROLE ann LOGIN PASSWORD 'right'")
    base = f"127.0.0.1:{postgres.port}"
    cases = {"postgresql://postgres@127.0.0.1:1/fusion": "can't be reached",
             f"postgresql://ann:wrong@{base}/postgres": "refused the user name or password",
             f"postgresql://postgres@{base}/no_such_db": "no such database",
             "postgresql:///?bad=": "can't use the database",
             "mysql://a@b/c": "SQLite or PostgreSQL",
             "not a url": "not a database URL"}
    for url, expected in cases.items():
        with pytest.raises(FusionError, match=expected):
            Store(load_settings(home=tmp_path, database_url=url))
        if url.startswith("postgresql://") and "bad=" not in url:
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


def _add_in_rounds(url, home, rounds, barrier, results):
    from fusion.imaging.images import check_image_file
    from fusion.store.labeling import NewItem

    settings = load_settings(home=home, database_url=url)
    store = Store(settings)
    for n in range(rounds):
        barrier.wait()
        image = check_image_file(png_bytes(n), settings)
        try:
            [(_, outcome)] = store.add_items("p", [NewItem(image, f"{n}.png")], user="ann")
        except Exception as e:      # what the test is about: never a raw error
            outcome = f"{type(e).__name__}: {e}"
        results.put((n, outcome))


def test_four_people_adding_the_same_new_image_at_once_add_it_once(postgres, tmp_path):
    import multiprocessing

    url = postgres.new_database()
    store = Store(load_settings(home=tmp_path, database_url=url))
    store.create_project("p", {"a": "", "b": ""}, user="ann")
    store.db.engine.dispose()                 # no connection of the parent's crosses the fork
    context = multiprocessing.get_context("fork")
    rounds, writers = 20, 4
    barrier, results = context.Barrier(writers), context.Queue()
    processes = [context.Process(target=_add_in_rounds, args=(url, tmp_path, rounds, barrier, results))
                 for _ in range(writers)]
    for p in processes:
        p.start()
    outcomes = [results.get(timeout=120) for _ in range(rounds * writers)]
    for p in processes:
        p.join(30)
    for n in range(rounds):
        seen = sorted(o for m, o in outcomes if m == n)
        assert seen == ["added"] + ["already in the project"] * (writers - 1), (n, seen)
    assert store.list_items("p", limit=0).total == rounds
    assert len(store.history("p", store.list_items("p", limit=1).items[0].id)) == 1


def _team_project(settings, store, pages: int = 36):
    """A project of demo pages, labeled, with their text: enough for a small training job."""
    import io

    from fusion.demo.documents import LABELS, render_item
    from fusion.imaging.images import check_image_file
    from fusion.store.labeling import NewItem

    store.create_project("team", LABELS, user="ann")
    new = []
    for i in range(pages):
        page, item = render_item(i, seed=5)
        buffer = io.BytesIO()
        page.save(buffer, "PNG")
        new.append(NewItem(check_image_file(buffer.getvalue(), settings), f"{i}.png", label=item.label,
                           ocr_text=item.text))
    store.add_items("team", new, user="ann")


def _worker(settings, idle_exit: float):
    import os

    env = os.environ | {"FUSION_HOME": str(settings.home), "FUSION_DATABASE_URL": settings.database_url,
                        "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "fusion", "worker", "--idle-exit", str(idle_exit), "--device", "cpu"],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_three_workers_drain_twenty_jobs_each_run_once_and_a_killed_ones_job_is_resumable(postgres, tmp_path):
    import signal

    from fusion.jobs.queue import FINISHED, Jobs
    from fusion.ml.train import TrainConfig

    settings = load_settings(home=tmp_path, database_url=postgres.new_database(), device="cpu")
    store = Store(settings)
    _team_project(settings, store)
    jobs = Jobs(store)
    train = jobs.submit("team", "train", TrainConfig(epochs=300, patience=1000, batch_size=2).job_params(), "ann")
    queued = [train.id] + [jobs.submit("team", "zero_shot", {}, "ann").id for _ in range(19)]
    workers = [_worker(settings, idle_exit=600) for _ in range(3)]   # still there when the kill comes
    try:
        running = wait_for(lambda: (j := jobs.get(train.id)).status == "running" and len(j.curve or []) >= 2 and j,
                            240, "two epochs of the training job")
        victim = next(w for w in workers if w.pid == running.worker_pid)
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
        # The others reap it (its process is gone from this machine) and drain the queue.
        wait_for(lambda: all(jobs.get(i).status in FINISHED for i in queued), 300, "every job to end")
        killed = jobs.get(train.id)
        assert killed.status == "failed" and "stopped while running" in killed.error, killed
        assert [jobs.get(i).status for i in queued[1:]] == ["succeeded"] * 19
        hosts_pids = {(jobs.get(i).worker_host, jobs.get(i).worker_pid) for i in queued}
        assert len(hosts_pids) >= 2                                     # the queue was shared
        for i in queued:                                                 # and no job ran twice
            assert sum("started by worker" in line for line in jobs.log_tail(i, 200)) == 1, jobs.log_tail(i, 200)
        resumed = jobs.resume(train.id, "ann")
        assert resumed.status == "queued" and resumed.resume_of == train.id and len(resumed.curve) >= 2
    finally:
        for w in workers:
            w.kill()
            w.wait(30)
