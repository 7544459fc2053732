"""Proof, at start, that the engine honours ``SELECT ... FOR UPDATE SKIP LOCKED``.

Claims hand out a job only because a row one connection locked is skipped by every other. Some
MySQL-compatible engines accept the clause and do not honour it: TiDB (up to v8.5) drops the lock when
``SKIP LOCKED`` is added (tidb#69720), Dolt treats ``SKIP LOCKED`` as a no-op. On such an engine two
workers would be handed the same job without a word, so ``heartbeat serve`` refuses to start on it.

The proof: one connection locks the first row of a two-row table; a second asks for the first row with
``FOR UPDATE SKIP LOCKED`` and must get the second at once. Getting the locked row, or waiting for it,
is the fault, named in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pymysql

from heartbeat.db.database import error_code

PROBE_TABLE = "heartbeat_lock_probe"  # two rows, kept (a primary key, as a Galera cluster wants)
WAIT_SECONDS = 2  # how long the second connection may wait before the wait itself is the fault
LOCK_WAIT_ERRORS = frozenset({1205, 3572})  # lock wait timeout; MySQL's "would wait" under NOWAIT
ADVICE = "use MariaDB 10.6 or later, MySQL 8 or later, or a MariaDB Galera cluster"


class UnsafeEngine(Exception):
    """The engine does not lock rows as claims need: the one-line reason."""


def prove_skip_locked(connect: Callable[[], Any]) -> None:
    """Raise :class:`UnsafeEngine` unless a row locked on one connection from ``connect()`` (a new
    PyMySQL connection each call) is skipped by ``FOR UPDATE SKIP LOCKED`` on a second one. Errors of
    the database itself (unreachable, refused) are raised as they come."""
    holder, other = connect(), connect()
    try:
        with holder.cursor() as cursor:
            cursor.execute(f"CREATE TABLE IF NOT EXISTS {PROBE_TABLE} (id INT NOT NULL PRIMARY KEY)")
            cursor.execute(f"INSERT IGNORE INTO {PROBE_TABLE} (id) VALUES (1), (2)")
            holder.commit()
            holder.begin()
            cursor.execute(f"SELECT id FROM {PROBE_TABLE} ORDER BY id LIMIT 1 FOR UPDATE")
            (locked,) = cursor.fetchone()
        with other.cursor() as cursor:
            cursor.execute(f"SET SESSION innodb_lock_wait_timeout = {WAIT_SECONDS}")
            other.begin()
            try:
                cursor.execute(f"SELECT id FROM {PROBE_TABLE} ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED")
            except pymysql.err.OperationalError as error:
                if error_code(error) in LOCK_WAIT_ERRORS:
                    raise UnsafeEngine(
                        "the database waits for a row another connection locked instead of skipping it "
                        f"(FOR UPDATE SKIP LOCKED is not honoured): claims could not run side by side; {ADVICE}"
                    ) from None
                raise
            row = cursor.fetchone()
        if row is None or row[0] == locked:
            raise UnsafeEngine(
                "the database hands out a row another connection holds locked (FOR UPDATE SKIP LOCKED is "
                f"ignored): Heartbeat would give the same job to two workers; {ADVICE}"
            )
    finally:
        for connection in (other, holder):
            try:
                connection.rollback()
            finally:
                connection.close()
