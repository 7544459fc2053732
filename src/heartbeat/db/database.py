"""The seam to the database: one :class:`Database`, made by :func:`heartbeat.db.connect.connect` and
passed to whatever needs it. It owns the connections, the retrying :meth:`Database.transaction`, quoting and parameter
markers, and the server's :class:`Features`, probed once at connect.

The peewee models (``db/models.py``) are bound to the connected database too (by ``connect``), so
that model queries and the hand-written statements run on the same connection of a thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Concatenate, Literal, ParamSpec, Protocol, TypeVar

import peewee
import playhouse.migrate
from playhouse.pool import PooledMySQLDatabase

from heartbeat.db.engines import (
    SNAPSHOT_BEGIN_MYSQL,
    SNAPSHOT_BEGIN_SQLITE,
    TimeLimits,
    timed_out,
)
from heartbeat.errors import StatementTimeout

log = logging.getLogger(__name__)

# MySQL/MariaDB error codes after which the whole transaction may simply run again: InnoDB rolled
# it back (lock wait timeout, deadlock, and 1467, a deadlock on a table's AUTO-INC lock), or the
# connection died (server gone away, lost connection, MariaDB's "connection was killed", MySQL's
# "disconnected for inactivity").
DEADLOCK_ERRORS = frozenset({1205, 1213, 1467})
# "Table definition has changed, please retry transaction": the transaction read a table made (a
# software registered) after its snapshot began; a new transaction reads it.
TABLE_CHANGED_ERRORS = frozenset({1412})
LOST_CONNECTION_ERRORS = frozenset({2006, 2013, 1927, 4031})
# MySQL/MariaDB errors that mean the server cannot serve now, besides the above and the client's own
# (2000 to 2999: cannot connect, gone away): too many connections (1040, 1203), shutting down (1053,
# 1077), a statement killed (1317); SQLite's: busy or locked (5, 6), out of memory (7), read-only (8),
# I/O error (10), disk full (13), cannot open the file (14), locking protocol (15). Any other error
# (a syntax error, an expression too complex) is a fault of the statement: retrying will not help.
# A Galera node that is not part of the primary component answers 1047 ("WSREP has not yet prepared
# node for application use") until it rejoins.
UNAVAILABLE_ERRORS = TABLE_CHANGED_ERRORS | LOST_CONNECTION_ERRORS | {1040, 1047, 1053, 1077, 1203, 1317}
CLIENT_ERRORS = range(2000, 3000)
SQLITE_UNAVAILABLE_ERRORS = frozenset({5, 6, 7, 8, 10, 13, 14, 15})
TRANSACTION_ATTEMPTS = 5

P = ParamSpec("P")
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Features:
    """What the connected server does, as far as Heartbeat's statements care; probed once at connect."""

    mysql: bool  # MySQL/MariaDB (else SQLite)
    skip_locked: bool  # ``SELECT ... FOR UPDATE SKIP LOCKED``: MariaDB >= 10.6, MySQL >= 8.0
    max_result_bytes: int | None  # the largest result JSON a statement can carry (max_allowed_packet); None: no limit
    collation: str | None  # the binary, NO PAD collation of every table on MySQL
    # Every node takes writes (a Galera cluster, MySQL Group Replication): a row lock is its node's
    # alone, and two nodes' transactions that changed one row conflict at commit (certification).
    multi_writer: bool = False
    # On a Galera cluster: this node's index among the nodes and their number when it connected
    # (``wsrep_local_index``, ``wsrep_cluster_size``), for spreading hot rows between nodes.
    node_share: tuple[int, int] | None = None

    @property
    def claims_hold_locks(self) -> bool:
        """Whether a claim's candidate read keeps others off its rows until commit: MySQL's ``SKIP
        LOCKED`` locks what it reads (not on a multi-writer cluster, where another node's commit would
        abort the holder of any row it changed: there each row is taken by a conditional UPDATE);
        SQLite's ``BEGIN IMMEDIATE`` keeps every other writer out."""
        return (self.skip_locked and not self.multi_writer) or not self.mysql

    @property
    def update_lock(self) -> str:
        """The suffix of a read whose rows this transaction will change (``FOR UPDATE``; SQLite's
        transactions hold the write lock already)."""
        return " FOR UPDATE" if self.mysql else ""

    @property
    def share_lock(self) -> str:
        """The suffix of a read that must see what concurrent writers commit (``LOCK IN SHARE MODE``)."""
        return " LOCK IN SHARE MODE" if self.mysql else ""

    @property
    def table_settings(self) -> list[str]:
        """What every CREATE TABLE carries."""
        return [f"DEFAULT CHARSET=utf8mb4 COLLATE={self.collation}"] if self.collation else []


class Database:
    """One connected database. Thread-safe: each thread has its own connection (from a pool on MySQL)."""

    def __init__(self, engine: peewee.Database, features: Features, *, query_seconds: float | None = None):
        self.engine = engine
        self.features = features
        self.param = str(engine.param)  # the driver's parameter marker: "?" or "%s"
        # How long a statement of a query (``time_limit``) may run, in seconds; None: no bound.
        self.query_seconds = query_seconds
        self._local = threading.local()  # this thread's callbacks due after its transaction commits

    # -- time limits --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def time_limit(self) -> Iterator[None]:
        """Each statement this thread runs in the ``with`` block stops after ``query_seconds``: then
        :class:`~heartbeat.errors.StatementTimeout` (503, with a time to retry after)."""
        try:
            limits = self.engine if isinstance(self.engine, TimeLimits) else None
            with limits.time_limit(self.query_seconds) if limits else contextlib.nullcontext():
                yield
        except (peewee.OperationalError, peewee.InternalError) as error:
            if timed_out(error):
                raise StatementTimeout(
                    f"the query ran longer than {self.query_seconds:g} s, the most one statement may "
                    "(HEARTBEAT_QUERY_SECONDS); narrow it, or try again when the server is less busy"
                ) from None
            raise

    @staticmethod
    def fault(error: Exception) -> Literal["unavailable", "contention", "timeout"] | None:
        """What a database error says about the database: ``"unavailable"`` (unreachable, busy, down,
        full: a later try may succeed), ``"contention"`` (a deadlock, a lock wait timeout, or a
        Galera certification conflict, all error 1213 or 1205: other transactions won, the database
        is fine), ``"timeout"`` (a statement stopped at its time limit), or None (a fault of the
        statement itself, which no retry cures)."""
        if timed_out(error):
            return "timeout"
        if isinstance(error, peewee.InterfaceError):
            return "unavailable"
        original = getattr(error, "orig", None)
        sqlite_code = getattr(original, "sqlite_errorcode", None)
        if sqlite_code is not None:
            return "unavailable" if sqlite_code & 0xFF in SQLITE_UNAVAILABLE_ERRORS else None
        code = error_code(error)
        if code in DEADLOCK_ERRORS:
            return "contention"
        if code is None or code in UNAVAILABLE_ERRORS or code in CLIENT_ERRORS:
            return "unavailable"  # no code: pymysql's own errors, of the connection
        return None

    # -- statements ---------------------------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement on this thread's connection; returns the DB-API cursor."""
        return self.engine.execute_sql(sql, params)

    def quote(self, name: str) -> str:
        """A table or column name quoted as this database quotes it."""
        quote = self.engine.quote
        return f"{quote[0]}{name}{quote[-1]}"

    def params(self, count: int) -> str:
        """``count`` parameter markers for an ``IN (...)`` list, parenthesised: ``(?, ?, ?)``."""
        return f"({', '.join(self.param for _ in range(count))})"

    def create_tables(self, models: Sequence[type[peewee.Model]]) -> None:
        """CREATE TABLE IF NOT EXISTS for each model, with the server's table settings."""
        for model in models:
            model._meta.table_settings = self.features.table_settings
        self.engine.create_tables(list(models), safe=True)

    def add_missing_columns(self, model: type[peewee.Model]) -> list[str]:
        """Add the model's columns that its existing table lacks (a table made by an older release;
        each such column is nullable or has a default); returns their names."""
        table = model._meta.table_name
        existing = {column.name for column in self.engine.get_columns(table)}
        missing = [field for field in model._meta.sorted_fields if field.column_name not in existing]
        if missing:
            migrator = playhouse.migrate.SchemaMigrator.from_database(self.engine)
            playhouse.migrate.migrate(*(migrator.add_column(table, field.column_name, field) for field in missing))
        return [field.column_name for field in missing]

    def widen_columns(self, model: type[peewee.Model]) -> list[str]:
        """Widen the model's VARCHAR columns that its existing table has narrower (a table made by an
        older release); returns their names. MySQL only: SQLite holds text to no declared length.
        (playhouse.migrate's MySQL ``alter_column_type`` names the column twice, which MySQL refuses.)"""
        if not self.features.mysql:
            return []
        table = model._meta.table_name
        lengths = dict(
            self.execute(
                "SELECT column_name, character_maximum_length FROM information_schema.columns"
                " WHERE table_schema = DATABASE() AND table_name = %s",
                (table,),
            ).fetchall()
        )
        narrow = [
            field
            for field in model._meta.sorted_fields
            if isinstance(field, peewee.CharField)
            and lengths.get(field.column_name, field.max_length) < field.max_length
        ]
        for field in narrow:
            context = self.engine.get_sql_context()
            sql, params = context.literal(f"ALTER TABLE {self.quote(table)} MODIFY ").sql(field.ddl(context)).query()
            self.engine.execute_sql(sql, params)
        return [field.column_name for field in narrow]

    def add_missing_indexes(self, model: type[peewee.Model]) -> list[str]:
        """Create the model's indexes that its existing table lacks (a table made by an older release);
        returns their names. (``CREATE TABLE IF NOT EXISTS`` leaves an existing table as it is.)"""
        existing = {index.name for index in self.engine.get_indexes(model._meta.table_name)}
        schema: Any = model._schema  # type: ignore[attr-defined]  # peewee's schema manager, untyped
        added = []
        for index in model._meta.fields_to_index():
            name = getattr(index, "_name", None)
            if isinstance(index, peewee.ModelIndex) and name not in existing:
                self.engine.execute(schema._create_index(index, safe=False))
                added.append(str(name))
        return added

    def tables(self) -> list[str]:
        return list(self.engine.get_tables())

    # -- connections --------------------------------------------------------------------------------

    def connection(self) -> contextlib.AbstractContextManager[Any]:
        """A connection for this thread for the ``with`` block (one it had already is kept open)."""
        return self.engine.connection_context()

    def connect(self) -> None:
        """Make sure this thread has a connection."""
        self.engine.connect(reuse_if_open=True)

    def new_connection(self) -> Any:
        """A driver connection of its own, outside the pool and this thread's (for a probe at start);
        the caller closes it."""
        return getattr(self.engine, "_connect")()  # noqa: B009 (peewee's, not in its type stubs)

    def close(self) -> None:
        """Hand this thread's connection back (to the pool on MySQL)."""
        if not self.engine.is_closed():
            self.engine.close()

    def is_closed(self) -> bool:
        return bool(self.engine.is_closed())

    def close_for_good(self) -> None:
        """Throw away this thread's connection (never back into the pool): it is broken, or may be."""
        try:
            if hasattr(self.engine, "manual_close"):
                self.engine.manual_close()
            else:
                self.engine.close()
        except peewee.PeeweeException:
            pass  # it was broken already; all that matters is that it is gone

    def close_all(self) -> None:
        """Close every connection (a pool's idle ones too): the process is done with the database."""
        if isinstance(self.engine, PooledMySQLDatabase):
            self.engine.close_all()
        else:
            self.engine.close()

    # -- transactions -------------------------------------------------------------------------------

    def in_transaction(self) -> bool:
        return bool(self.engine.in_transaction())

    def atomic(self) -> Any:
        """A transaction (or a savepoint inside one) that is not retried: for tests and one-off tools."""
        return self.engine.atomic()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read-only transaction on this thread's connection for the ``with`` block: every statement
        in it reads the database as of the moment it began, whatever commits meanwhile, however long
        it lasts. It always ends (rolled back: it wrote nothing), on an error or a generator closed
        midway too; a connection that cannot even roll back is thrown away.

        It is for reads: inside it, :meth:`transaction` joins it (MySQL refuses a write in it) and
        :meth:`atomic` raises ValueError.
        Raises RuntimeError when this thread's connection is in a transaction already.
        """
        if self.engine.in_transaction():
            raise RuntimeError("a snapshot needs a connection with no transaction open")
        self.connect()
        with contextlib.ExitStack() as stack:
            stack.callback(self._end_snapshot)  # last: the connection may have to be closed, out of peewee's stack
            stack.enter_context(self.engine.manual_commit())  # peewee knows a transaction is open, begins none
            for statement in SNAPSHOT_BEGIN_MYSQL if self.features.mysql else SNAPSHOT_BEGIN_SQLITE:
                self.execute(statement)
            yield

    def _end_snapshot(self) -> None:
        try:
            self.execute("ROLLBACK")
        except (peewee.OperationalError, peewee.InterfaceError) as error:
            log.info("a snapshot could not be rolled back (%s): its connection is dropped", error)
            self.close_for_good()

    def transaction(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``function(*args, **kwargs)`` in one transaction, and on MySQL/MariaDB run it again from
        the start after a deadlock, a lock wait timeout or a lost connection (up to
        ``TRANSACTION_ATTEMPTS`` times).

        ``function`` must do nothing but database work: it may run more than once. Called inside a
        transaction that is already open, it joins it, and the outermost ``transaction`` retries.
        A lost connection during COMMIT leaves the first attempt's outcome unknown: the functions run
        here are written so that running them again is safe (a conditional UPDATE finds nothing left
        to change, a claim's unreturned tokens simply expire).
        """
        if self.engine.in_transaction():
            return function(*args, **kwargs)
        attempt = 1
        while True:
            callbacks: dict[Callable[[], None], Callable[[], None]] = {}
            rollbacks: dict[Callable[[], None], Callable[[], None]] = {}
            self._local.after_commit, self._local.after_rollback = callbacks, rollbacks
            try:
                try:
                    with self.engine.atomic():
                        result = function(*args, **kwargs)
                except BaseException:
                    self._local.after_commit = self._local.after_rollback = None
                    for callback in rollbacks.values():
                        callback()
                    raise
                self._local.after_commit = self._local.after_rollback = None
                for callback in callbacks.values():
                    callback()
                return result
            except (peewee.OperationalError, peewee.InterfaceError) as error:
                reason = self._retry_reason(error)
                if reason is None or attempt >= TRANSACTION_ATTEMPTS:
                    raise
                name = getattr(function, "__qualname__", "a transaction")
                log.info("%s in %s (attempt %d): running it again", reason, name, attempt)
                if reason == "lost connection":
                    self.close_for_good()
                    self.connect()
                else:
                    # Both sides of a deadlock retry; a random pause keeps them from meeting again.
                    time.sleep(random.uniform(0, 0.02 * 2**attempt))
                attempt += 1
            finally:
                self._local.after_commit = self._local.after_rollback = None

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once this thread's :meth:`transaction` commits (once however often it is
        asked for in that transaction; never if it rolls back); outside one, now."""
        callbacks = getattr(self._local, "after_commit", None)
        if callbacks is None or not self.engine.in_transaction():
            callback()
        else:
            callbacks[callback] = callback

    def after_rollback(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` if this thread's :meth:`transaction` fails (each attempt that fails, before
        it is run again; also when its COMMIT was lost, whose outcome is unknown); outside one, never."""
        callbacks = getattr(self._local, "after_rollback", None)
        if callbacks is not None and self.engine.in_transaction():
            callbacks[callback] = callback

    def _retry_reason(self, error: peewee.PeeweeException) -> str | None:
        """``"deadlock"``, ``"table made since it began"``, ``"lost connection"``, or None for an error that
        running again would not cure."""
        if not self.features.mysql:
            return None  # SQLite waits for its lock (busy_timeout) and has no connection to lose
        code = error.args[0] if error.args and isinstance(error.args[0], int) else None
        if code in DEADLOCK_ERRORS:
            return "deadlock"
        if code in TABLE_CHANGED_ERRORS:
            return "table made since it began"
        if code in LOST_CONNECTION_ERRORS or isinstance(error, peewee.InterfaceError):
            return "lost connection"
        return None


class HasDatabase(Protocol):
    _database: Database


S = TypeVar("S", bound=HasDatabase)


def transactional(method: Callable[Concatenate[S, P], T]) -> Callable[Concatenate[S, P], T]:
    """A method run through its object's ``self._database.transaction`` (retried as that says)."""

    def run(self: S, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._database.transaction(method, self, *args, **kwargs)

    return functools.update_wrapper(run, method)  # type: ignore[return-value]  # the wrapper is the method's shape


def error_code(error: Exception) -> int | None:
    """The MySQL (or SQLite) error number a driver's error carries, if any."""
    args = error.args
    return args[0] if args and isinstance(args[0], int) else None
