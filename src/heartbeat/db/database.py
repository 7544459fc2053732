"""The seam to the database: one proxy, connected by data dir (SQLite) or by db_auth (MySQL),
and :func:`transaction`, the one place that retries deadlocks and lost connections."""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import peewee
from playhouse.pool import PooledMySQLDatabase

from heartbeat.config import DbAuth

log = logging.getLogger(__name__)
database_proxy = peewee.DatabaseProxy()

# MySQL/MariaDB error codes after which the whole transaction may simply run again: InnoDB rolled
# it back (lock wait timeout, deadlock), or the connection died (server gone away, lost connection,
# MariaDB's "connection was killed", MySQL's "disconnected for inactivity").
DEADLOCK_ERRORS = frozenset({1205, 1213})
LOST_CONNECTION_ERRORS = frozenset({2006, 2013, 1927, 4031})
TRANSACTION_ATTEMPTS = 5
P = ParamSpec("P")
T = TypeVar("T")

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


def sqlite_database(path: str | Path) -> peewee.SqliteDatabase:
    """An SQLite database in WAL mode whose transactions take the write lock up front.

    ``BEGIN IMMEDIATE`` makes a claim's read and its update one serialised step.
    """
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return peewee.SqliteDatabase(
        str(path),
        pragmas=SQLITE_PRAGMAS,
        lock_type="IMMEDIATE",
        timeout=30,
        field_types=FIELD_TYPES_SQLITE,
    )


class QuickPooledMySQLDatabase(PooledMySQLDatabase):
    """Peewee's pool, minus a round trip per request: a connection handed back moments ago is handed
    out again without a ping; only one that sat idle for ``PING_AFTER_IDLE_SECONDS`` is pinged first.
    A connection that died in between fails its statement, and :func:`transaction` reconnects."""

    PING_AFTER_IDLE_SECONDS = 5.0

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


# Connections a server process may hold besides one per thread: the lease reaper, the claim watcher.
BACKGROUND_CONNECTIONS = 4


def connect(*, data_dir: str | Path, db_auth: DbAuth | None, threads: int = 16) -> peewee.Database:
    """Open the configured database, bind the models to it and create missing tables.

    ``threads``: how many server threads will use it (a MySQL pool holds one connection for each).
    """
    from heartbeat.db.models import create_base_tables, set_table_settings

    if db_auth:
        database = mysql_database(db_auth, max_connections=threads + BACKGROUND_CONNECTIONS)
    else:
        database = sqlite_database(Path(data_dir) / "heartbeat.db")
    database_proxy.initialize(database)
    set_table_settings([f"DEFAULT CHARSET=utf8mb4 COLLATE={_binary_collation(database)}"] if db_auth else [])
    create_base_tables()
    return database


def close_all(database: peewee.Database) -> None:
    """Close every connection of ``database`` (a pool's idle ones too): the process is done with it."""
    if isinstance(database, PooledMySQLDatabase):
        database.close_all()
    else:
        database.close()


def server_version(database: peewee.Database) -> tuple[str, tuple[int, int]]:
    """Which MySQL-family server answers, ``"mariadb"`` or ``"mysql"``, and its (major, minor) version."""
    (version,) = database.execute_sql("SELECT VERSION()").fetchone()
    numbers = tuple(int(part) for part in version.split("-")[0].split(".")[:2])
    return ("mariadb" if "mariadb" in version.lower() else "mysql"), (numbers[0], numbers[1])


def _binary_collation(database: peewee.Database) -> str:
    with database.connection_context():
        flavour, version = server_version(database)
    if flavour == "mysql" and version < (8, 0):
        return "utf8mb4_bin"  # no NO PAD binary collation before MySQL 8
    return NO_PAD_BINARY_COLLATIONS[flavour]


def quoted(name: str, database: peewee.Database | None = None) -> str:
    """A table or column name quoted as the connected database quotes it."""
    quote = (database or database_proxy.obj).quote
    return f"{quote[0]}{name}{quote[-1]}"


def placeholder(database: peewee.Database | None = None) -> str:
    """The parameter marker of the connected database's driver (``?`` or ``%s``)."""
    return str((database or database_proxy.obj).param)


def is_mysql(database: peewee.Database | peewee.DatabaseProxy) -> bool:
    target = database.obj if isinstance(database, peewee.DatabaseProxy) else database
    return isinstance(target, peewee.MySQLDatabase)


def _retry_reason(error: peewee.PeeweeException) -> str | None:
    """``"deadlock"``, ``"lost connection"``, or None for an error that running again would not cure."""
    if not is_mysql(database_proxy):
        return None  # SQLite waits for its lock (busy_timeout) and has no connection to lose
    code = error.args[0] if error.args and isinstance(error.args[0], int) else None
    if code in DEADLOCK_ERRORS:
        return "deadlock"
    if code in LOST_CONNECTION_ERRORS or isinstance(error, peewee.InterfaceError):
        return "lost connection"
    return None


def close_for_good(database: peewee.Database) -> None:
    """Throw away this thread's connection (never back into the pool): it is broken, or may be."""
    try:
        if hasattr(database, "manual_close"):
            database.manual_close()
        else:
            database.close()
    except peewee.PeeweeException:
        pass  # it was broken already; all that matters is that it is gone


def _reconnect() -> None:
    """A new connection for this thread in place of its broken one."""
    close_for_good(database_proxy.obj)
    database_proxy.obj.connect(reuse_if_open=True)


def transaction(function: Callable[P, T]) -> Callable[P, T]:
    """Run ``function`` in one transaction, and on MySQL/MariaDB run it again from the start after a
    deadlock, a lock wait timeout or a lost connection (up to ``TRANSACTION_ATTEMPTS`` times).

    ``function`` must do nothing but database work: it may run more than once. Called inside a
    transaction that is already open, it joins it, and the outermost ``transaction`` retries.
    A lost connection during COMMIT leaves the first attempt's outcome unknown: the functions
    wrapped here are written so that running them again is safe (a conditional UPDATE finds
    nothing left to change, a claim's unreturned tokens simply expire).
    """

    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        if database_proxy.in_transaction():
            return function(*args, **kwargs)
        attempt = 1
        while True:
            try:
                with database_proxy.atomic():
                    return function(*args, **kwargs)
            except (peewee.OperationalError, peewee.InterfaceError) as error:
                reason = _retry_reason(error)
                if reason is None or attempt >= TRANSACTION_ATTEMPTS:
                    raise
                log.info("%s in %s (attempt %d): running it again", reason, function.__qualname__, attempt)
                if reason == "lost connection":
                    _reconnect()
                else:
                    # Both sides of a deadlock retry; a random pause keeps them from meeting again.
                    time.sleep(random.uniform(0, 0.02 * 2**attempt))
                attempt += 1

    return run
