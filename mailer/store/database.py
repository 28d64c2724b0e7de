"""Engine, sessions and the SQLite pragmas that make one file safe for several processes."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 5000


def make_engine(url: str, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url, busy_timeout_ms)
    # pre_ping: a connection that died with a database restart is replaced, not handed out.
    # connect_timeout: an unreachable host answers 503 in seconds instead of hanging a request.
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10,
                         connect_args={"connect_timeout": 5})


def _sqlite_engine(url: str, busy_timeout_ms: int) -> Engine:
    path = url.split("///", 1)[1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # A writer waits this long for another's write lock, then gets "database is locked",
    # which the web app answers with 503 and Retry-After.
    engine = create_engine(url, connect_args={"timeout": busy_timeout_ms / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not the driver, decide where transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # Writers take the write lock up front: a deferred transaction that reads and then
        # writes fails at once with SQLITE_BUSY instead of waiting for the busy timeout.
        # Read-only work (health checks) uses read_only() and a plain BEGIN.
        # Through SQLAlchemy, not the raw driver: "database is locked" must arrive wrapped as
        # sqlalchemy.exc.OperationalError, which the web app answers with 503.
        read_only = conn.get_execution_options().get("mailer_read_only")
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


class Database:
    """The engine and two ways in: a write transaction, or a read-only one."""

    def __init__(self, url: str, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS):
        self.url = url
        self.engine = make_engine(url, busy_timeout_ms)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self._read_session = sessionmaker(
            self.engine.execution_options(mailer_read_only=True), expire_on_commit=False
        )

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on error."""
        with self._session.begin() as session:
            yield session

    @contextmanager
    def read_only(self) -> Iterator[Session]:
        with self._read_session() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
