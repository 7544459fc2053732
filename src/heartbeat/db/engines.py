"""The peewee databases Heartbeat runs on: SQLite in WAL mode (the embedded default) and a pooled
MySQL/MariaDB connection. :mod:`heartbeat.db.database` wraps one of them as the app's one seam."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import peewee
import pymysql
from playhouse.pool import PooledMySQLDatabase

from heartbeat.config import DbAuth
from heartbeat.private_files import create_private_file, private_dir, private_file

# Our own column type for JSON kept as text, and every text column: LONGTEXT on MySQL, whose TEXT
# holds only 64 KiB, so that large results, error texts and extra-table values fit.
FIELD_TYPES_SQLITE = {"JSONTEXT": "TEXT"}
FIELD_TYPES_MYSQL = {"JSONTEXT": "LONGTEXT", "TEXT": "LONGTEXT", "DOUBLE": "DOUBLE"}
# Image IDs, tokens, names and origins are compared byte for byte, as on SQLite: MySQL's default
# collations would take "aB3" for "Ab3", and their PAD SPACE ones "cam1 " for "cam1".
NO_PAD_BINARY_COLLATIONS = {"mariadb": "utf8mb4_nopad_bin", "mysql": "utf8mb4_0900_bin"}

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "normal",
    "busy_timeout": 30_000,
    "foreign_keys": 1,
}


class TimeLimits:
    """Statements that stop after a while: inside :meth:`time_limit`, each statement this thread runs
    on the engine may run ``seconds`` (then the engine's timeout error, see :func:`timed_out`). A
    thread's own setting, so that the queue's statements on other threads run as they always do."""

    def time_limit(self, seconds: float | None) -> contextlib.AbstractContextManager[None]:
        """Bound each statement of this thread in the ``with`` block to ``seconds`` (None: no bound)."""
        return self._limited(seconds)

    @contextlib.contextmanager
    def _limited(self, seconds: float | None) -> Iterator[None]:
        state = self._limit_state()
        previous = getattr(state, "seconds", None)
        state.seconds = seconds if previous is None else min(seconds or previous, previous)
        try:
            yield
        finally:
            state.seconds = previous
            state.deadline = None  # (SQLite) a cursor read after the block is not cut short

    def limit_seconds(self) -> float | None:
        """This thread's bound on a statement now, or None."""
        return getattr(self._limit_state(), "seconds", None)

    def _limit_state(self) -> threading.local:
        state: threading.local | None = self.__dict__.get("_time_limits")
        if state is None:
            state = self.__dict__.setdefault("_time_limits", threading.local())
        return state


class SqliteWithTimeLimits(TimeLimits, peewee.SqliteDatabase):
    """SQLite whose statements stop at their time limit: a progress handler, called every
    ``PROGRESS_STEPS`` virtual machine instructions, interrupts a statement past its deadline
    (``sqlite3.OperationalError: interrupted``; the connection stays usable)."""

    PROGRESS_STEPS = 10_000

    def _add_conn_hooks(self, conn: Any) -> None:
        super()._add_conn_hooks(conn)  # type: ignore[misc]  # peewee's private hook, not in its stubs
        conn.set_progress_handler(self._past_deadline, self.PROGRESS_STEPS)

    def _past_deadline(self) -> int:
        deadline = getattr(self._limit_state(), "deadline", None)
        return 1 if deadline is not None and time.monotonic() > deadline else 0

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        # A lazily read cursor goes on running the statement as its rows are fetched: the deadline
        # counts from the statement's start, and holds until the next statement of the thread.
        seconds = self.limit_seconds()
        self._limit_state().deadline = None if seconds is None else time.monotonic() + seconds
        return super().execute_sql(sql, params)  # type: ignore[no-untyped-call]  # untyped in peewee's stubs


def sqlite_database(path: str | Path) -> peewee.SqliteDatabase:
    """An SQLite database in WAL mode whose transactions take the write lock up front.

    ``BEGIN IMMEDIATE`` makes a claim's read and its update one serialised step. The file and its
    folder are this user's alone (0600, 0700); SQLite makes its -wal and -shm files as the database's.
    """
    if str(path) != ":memory:":
        private_dir(Path(path).parent)
        create_private_file(path)
        for companion in ("-wal", "-shm"):
            private_file(f"{path}{companion}")
    return SqliteWithTimeLimits(
        str(path),
        pragmas=SQLITE_PRAGMAS,
        lock_type="IMMEDIATE",
        timeout=30,
        field_types=FIELD_TYPES_SQLITE,
    )


class QuickPooledMySQLDatabase(TimeLimits, PooledMySQLDatabase):  # type: ignore[misc]  # peewee has no type hints
    """Peewee's pool, minus a round trip per request: a connection handed back moments ago is handed
    out again without a ping; only one that sat idle for ``PING_AFTER_IDLE_SECONDS`` is pinged first.
    A connection that died in between fails its statement, and ``Database.transaction`` reconnects.

    A statement under a time limit carries it: MariaDB's ``SET STATEMENT max_statement_time=S FOR``
    (any statement), MySQL's ``MAX_EXECUTION_TIME`` hint (SELECT only, which is all MySQL bounds)."""

    PING_AFTER_IDLE_SECONDS = 5.0
    mariadb = True  # set once the server's version is known (``database.probe_features``)

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        seconds = self.limit_seconds()
        if seconds is not None:
            sql = self._limited_sql(sql, seconds)
        return super().execute_sql(sql, params)

    def _limited_sql(self, sql: str, seconds: float) -> str:
        if self.mariadb:
            return f"SET STATEMENT max_statement_time={seconds:.6f} FOR {sql}"
        if sql[:7].upper() == "SELECT ":
            return f"SELECT /*+ MAX_EXECUTION_TIME({max(1, round(seconds * 1000))}) */ {sql[7:]}"
        return sql

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._returned_at: dict[int, float] = {}

    def _is_closed(self, conn: Any) -> bool:
        key = self.conn_key(conn)
        if time.monotonic() - self._returned_at.get(key, 0.0) < self.PING_AFTER_IDLE_SECONDS:
            closed = not conn.open
        else:
            closed = bool(super()._is_closed(conn))
        if closed:
            self._returned_at.pop(key, None)  # the pool drops it
        return closed

    def _close(self, conn: Any, close_conn: bool = False) -> None:
        if close_conn:
            self._returned_at.pop(self.conn_key(conn), None)
        else:
            self._returned_at[self.conn_key(conn)] = time.monotonic()
        super()._close(conn, close_conn)


# A transaction that reads as of one moment and writes nothing (an export): MySQL/MariaDB's InnoDB
# takes its snapshot at START TRANSACTION WITH CONSISTENT SNAPSHOT (REPEATABLE READ, the level this
# transaction is set to whatever the session's default); SQLite in WAL mode at the first read of a
# deferred transaction, which the second statement makes at once.
SNAPSHOT_BEGIN_MYSQL = (
    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
)
SNAPSHOT_BEGIN_SQLITE = ("BEGIN DEFERRED", "SELECT COUNT(*) FROM sqlite_master")


def mysql_database(auth: DbAuth, *, max_connections: int = 32) -> peewee.Database:
    """A pooled MySQL/MariaDB connection, one connection per thread at a time."""
    return QuickPooledMySQLDatabase(
        auth.database,
        host=auth.host,
        port=auth.port,
        user=auth.user,
        password=auth.password,
        charset="utf8mb4",
        max_connections=max_connections,
        stale_timeout=300,
        timeout=30,
        field_types=FIELD_TYPES_MYSQL,
    )


# Errors of a statement stopped at its time limit: SQLite's SQLITE_INTERRUPT, MariaDB's
# ER_STATEMENT_TIMEOUT, MySQL's ER_QUERY_TIMEOUT.
SQLITE_INTERRUPT = 9
STATEMENT_TIMEOUT_ERRORS = frozenset({1969, 3024})


def timed_out(error: BaseException) -> bool:
    """Whether ``error`` (a peewee or driver error) is a statement stopped at its time limit."""
    original = getattr(error, "orig", error)
    if getattr(original, "sqlite_errorcode", None) == SQLITE_INTERRUPT:
        return True
    args: tuple[Any, ...] = getattr(original, "args", ())
    return bool(args) and args[0] in STATEMENT_TIMEOUT_ERRORS


# MySQL/MariaDB's "Unknown database" (the database named in db_auth does not exist), and "Access
# denied to database", which is what a user without rights on it is told whether or not it exists.
UNKNOWN_DATABASE_ERROR = 1049
DATABASE_ACCESS_DENIED_ERROR = 1044


def create_database_sql(name: str) -> str:
    """The statement that makes the database ``name`` for Heartbeat (each table sets its own collation)."""
    quoted = name.replace("`", "``")
    return f"CREATE DATABASE IF NOT EXISTS `{quoted}` CHARACTER SET utf8mb4"


def create_mysql_database(auth: DbAuth) -> None:
    """Create ``auth.database`` on its server, as ``auth.user``, when it is missing.

    Raises :class:`pymysql.err.OperationalError` when the user may not (1044, 1045) or the server
    does not answer.
    """
    connection = pymysql.connect(
        host=auth.host, port=auth.port, user=auth.user, password=auth.password, charset="utf8mb4", connect_timeout=30
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(create_database_sql(auth.database))
    finally:
        connection.close()


def account_of(auth: DbAuth) -> str:
    """The account the server matched ``auth.user`` to, quoted for a GRANT (``'hb'@'127.0.0.1'``, or
    ``'hb'@'%'``): the user's host part is the account's, not the client's. ``'user'@'%'`` when the
    server cannot be asked."""
    try:
        connection = pymysql.connect(
            host=auth.host, port=auth.port, user=auth.user, password=auth.password, connect_timeout=30
        )
    except pymysql.MySQLError:
        return f"'{auth.user}'@'%'"
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT CURRENT_USER()")
            user, _, host = str(cursor.fetchone()[0]).rpartition("@")
    finally:
        connection.close()
    return f"'{user}'@'{host}'"
