"""A command that meets a database error says in one line which kind it is: unreachable (try
again later), or a statement refused (a bug), never a traceback and never 'unreachable' for both."""

from __future__ import annotations

import sqlite3

import peewee
import pytest

import heartbeat.cli
from heartbeat.cli import main
from heartbeat.db.database import Database


def failing(error: Exception):
    def command(_args: object) -> int:
        raise error

    return command


def sqlite_error(sql: str, path: str = ":memory:") -> peewee.OperationalError:
    """The peewee error that SQLite gives for ``sql``."""
    database = peewee.SqliteDatabase(path)
    try:
        database.execute_sql(sql)
    except peewee.OperationalError as error:
        return error
    raise AssertionError(f"{sql} ran")


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (lambda: sqlite_error("SELECT (" * 300 + "1" + ")" * 300), "refused a statement (a bug"),
        (lambda: sqlite_error("SELEC 1"), "refused a statement (a bug"),
        (lambda: sqlite_error("SELECT 1", "/nonexistent/dir/x.db"), "unreachable"),
        (lambda: peewee.OperationalError(2003, "Can't connect to MySQL server"), "unreachable"),
        (lambda: peewee.InterfaceError("(0, '')"), "unreachable"),
    ],
)
def test_a_database_error_is_one_line_naming_its_kind(monkeypatch, capsys, error, said):
    monkeypatch.setattr(heartbeat.cli, "token", failing(error()))
    assert main(["token", "list"]) == 1
    printed = capsys.readouterr().err
    assert printed.startswith("error: the database ") and said in printed and printed.count("\n") == 1, printed


def test_a_statement_sqlite_interrupted_is_a_timeout_not_an_outage():
    connection = sqlite3.connect(":memory:")
    connection.set_progress_handler(lambda: 1, 1)
    try:
        connection.execute("SELECT 1")
    except sqlite3.OperationalError as error:
        assert Database.fault(peewee.OperationalError(error, *error.args)) == "timeout"
