"""The start-up proof that the engine honours ``FOR UPDATE SKIP LOCKED`` (the contract's *Engines*).

No engine that ignores the clause runs here, so stand-ins play them: the driver's connection wrapped
so that the probe's statement loses ``SKIP LOCKED`` (an engine that waits for the lock instead, as a
plain ``FOR UPDATE``) or the whole locking clause (one that hands out the locked row, as TiDB and
Dolt do). MariaDB itself passes.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from conftest import BACKEND
from heartbeat.db.lock_probe import UnsafeEngine, prove_skip_locked
from helpers import free_port

pytestmark = pytest.mark.skipif(BACKEND != "mysql", reason="MariaDB/MySQL only (HEARTBEAT_TEST_DB=mysql)")

IGNORES = {"waits": " SKIP LOCKED", "hands-out": " FOR UPDATE SKIP LOCKED"}


class Rewriting:
    """A PyMySQL connection whose statements lose ``dropped`` (the stand-in for an engine that ignores it)."""

    def __init__(self, connection: Any, dropped: str):
        self._connection = connection
        self._dropped = dropped

    def cursor(self) -> Any:
        cursor = self._connection.cursor()
        execute = cursor.execute
        cursor.execute = lambda sql, *args: execute(sql.replace(self._dropped, ""), *args)
        return cursor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


def standing_in(database: Any, dropped: str) -> Callable[[], Any]:
    return lambda: Rewriting(database.new_connection(), dropped)


def test_mariadb_skips_the_locked_row(database):
    prove_skip_locked(database.new_connection)


@pytest.mark.parametrize("fault", IGNORES, ids=IGNORES)
def test_an_engine_that_ignores_skip_locked_is_named(database, fault):
    with pytest.raises(UnsafeEngine) as refused:
        prove_skip_locked(standing_in(database, IGNORES[fault]))
    message = str(refused.value)
    assert "FOR UPDATE SKIP LOCKED" in message and "\n" not in message
    assert ("waits for a row" if fault == "waits" else "same job to two workers") in message


@pytest.mark.parametrize("fault", IGNORES, ids=IGNORES)
def test_serve_on_such_an_engine_stops_with_one_line_and_serves_nothing(database, db_auth_file, tmp_path, fault):
    """The real ``heartbeat serve``, its driver wrapped in the process as the stand-in."""
    port = free_port()
    args = ["serve", "--port", str(port), "--db-auth", str(db_auth_file), "--data-dir", str(tmp_path)]
    script = textwrap.dedent(
        f"""
        import sys
        import pymysql.cursors
        execute = pymysql.cursors.Cursor.execute
        def rewritten(self, sql, *args):
            return execute(self, sql.replace({IGNORES[fault]!r}, ""), *args)
        pymysql.cursors.Cursor.execute = rewritten
        from heartbeat.cli import main
        sys.exit(main({args!r}))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the database "), done.stderr
    assert "SKIP LOCKED" in lines[0]
    assert "serving on" not in done.stdout
