"""The database connection: SQLite in WAL mode by default, any SQLAlchemy URL if the settings name
one, and its schema brought to the newest migration when opened.

SQLite allows one writer at a time. Write transactions start with BEGIN IMMEDIATE, so a writer
waits for the lock up front (busy timeout) instead of failing half-way when a read upgrades to a
write; readers never wait (WAL).
"""
from __future__ import annotations

import fcntl
import threading
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session

from fusion.core.errors import FusionError
from fusion.core.settings import Settings

BUSY_TIMEOUT_S = 60  # how long a writer waits for another's lock before giving up


def database_url(settings: Settings) -> str:
    return settings.database_url or f"sqlite:///{settings.home / 'fusion.db'}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # BEGIN is issued by _begin below, not by the driver
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # a saved correction survives a power cut too
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB per connection (default 2): 100k items' indexes stay hot
    cursor.close()


def _begin(connection) -> None:
    write = connection.get_execution_options().get("write", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _sqlite_file(url: str) -> str | None:
    """The database file of a SQLite URL, or None (another database, or in memory)."""
    path = url.split(":///", 1)[-1] if url.startswith("sqlite") else ""
    return path if path and path != ":memory:" else None


def create_database_engine(url: str) -> Engine:
    # hide_parameters: a failed statement's message (in tracebacks, job logs, a job's error) would
    # otherwise quote the values it wrote: page text and captions.
    if url.startswith("sqlite"):
        if path := _sqlite_file(url):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S}, hide_parameters=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _begin)
        return engine
    return create_engine(url, pool_pre_ping=True, hide_parameters=True)


@lru_cache(maxsize=1)
def _migrations_head() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(Path(__file__).parent / "migrations")).get_current_head()


def schema_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade_schema(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (newest by default). Two processes opening an old workspace
    at once are safe: the second waits for the first's write lock, then finds nothing to do."""
    if revision == "head" and schema_revision(engine) == _migrations_head():
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.execution_options(write=True).begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


class DatabaseUnavailable(FusionError):
    """The database server can't be reached or refuses us: nothing was read or written."""


def shown_url(url: str) -> str:
    """The URL as messages may show it: its password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a database URL)"


CONNECTION_TROUBLE = ("connection refused", "could not connect", "connection failed", "server closed the connection",
                      "terminating connection", "authentication failed", "does not exist", "timeout", "resolve")


def _is_connection_error(error: Exception) -> bool:
    return any(words in str(error).lower() for words in CONNECTION_TROUBLE)


def unavailable(error: Exception, url: str) -> DatabaseUnavailable:
    """One line that says what is wrong with the connection and what to check."""
    where = shown_url(url)
    detail = str(getattr(error, "orig", None) or error).strip().splitlines()[0] if str(error).strip() else ""
    low = detail.lower()
    if "authentication failed" in low:
        why = "it refused the user name or password"
    elif "does not exist" in low and "database" in low:
        why = f"there is no such database on that server (create it first: createdb {make_url(url).database})"
    elif "role" in low and "does not exist" in low:
        why = "there is no such user on that server"
    elif _is_connection_error(error):
        why = "the server can't be reached or closed the connection (is it running, and are the host and port right?)"
    else:
        why = detail
    return DatabaseUnavailable(f"can't use the database {where}: {why}; check FUSION_DATABASE_URL")


class Database:
    def __init__(self, url: str):
        self.url = url
        try:
            self.engine = create_database_engine(url)
        except ArgumentError:
            raise FusionError("FUSION_DATABASE_URL is not a database URL; use "
                              "postgresql://USER:PASSWORD@HOST:PORT/DATABASE, or leave it empty for SQLite") from None
        except NoSuchModuleError:
            raise FusionError(f"FusionLab stores its data in SQLite or PostgreSQL, not {make_url(url).drivername} "
                              "(FUSION_DATABASE_URL)") from None
        except ModuleNotFoundError as e:
            raise FusionError(f"no driver for {make_url(url).drivername} is installed ({e.name}); FusionLab "
                              "stores its data in SQLite or PostgreSQL (postgresql://...)") from None
        self._writer = self.engine.execution_options(write=True)
        path = _sqlite_file(url)
        self._turns = f"{path}.writers" if path else None
        self._held = threading.local()
        try:
            upgrade_schema(self.engine)
        except DBAPIError as e:
            if url.startswith("sqlite"):
                raise
            raise unavailable(e, url) from None
        except Exception as e:
            if "newer" in str(e) or "Can't locate revision" in str(e):
                raise FusionError(f"the database {shown_url(url)} was made by a newer FusionLab; upgrade this one") from None
            raise

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._server_errors(), Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._writers_take_turns(), self._server_errors(), \
                Session(self._writer, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _writers_take_turns(self) -> Iterator[None]:
        """SQLite: writers on this machine queue on a file lock before BEGIN IMMEDIATE. SQLite's own
        busy handler sleeps between tries (up to 100 ms a sleep), so with 8 writers an unlucky one
        waited 1-2 s; the kernel wakes a writer waiting here as the lock is released. A write
        inside a write of the same thread skips it (it would wait for itself)."""
        if self._turns is None or getattr(self._held, "turn", False):
            yield
            return
        with open(self._turns, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._held.turn = True
            try:
                yield
            finally:
                self._held.turn = False
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextmanager
    def _server_errors(self) -> Iterator[None]:
        """A server that went away or refuses us mid-session: DatabaseUnavailable, one line."""
        try:
            yield
        except OperationalError as e:
            if self.url.startswith("sqlite") or not (e.connection_invalidated or _is_connection_error(e)):
                raise
            raise unavailable(e, self.url) from None


@lru_cache(maxsize=8)
def open_database(url: str) -> Database:
    return Database(url)
