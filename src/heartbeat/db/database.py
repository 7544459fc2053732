"""The seam to the database: one proxy, connected by data dir (SQLite) or by db_auth (MySQL)."""

from __future__ import annotations

from pathlib import Path

import peewee
from playhouse.pool import PooledMySQLDatabase

from heartbeat.config import DbAuth

database_proxy = peewee.DatabaseProxy()

# Our own column type for JSON kept as text: LONGTEXT on MySQL so that large results fit.
FIELD_TYPES_SQLITE = {"JSONTEXT": "TEXT"}
FIELD_TYPES_MYSQL = {"JSONTEXT": "LONGTEXT", "DOUBLE": "DOUBLE"}

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


def mysql_database(auth: DbAuth, *, max_connections: int = 32) -> peewee.Database:
    """A pooled MySQL/MariaDB connection, one connection per thread at a time."""
    return PooledMySQLDatabase(
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


def connect(*, data_dir: str | Path, db_auth: DbAuth | None) -> peewee.Database:
    """Open the configured database, bind the models to it and create missing tables."""
    from heartbeat.db.models import create_base_tables

    database = mysql_database(db_auth) if db_auth else sqlite_database(Path(data_dir) / "heartbeat.db")
    database_proxy.initialize(database)
    create_base_tables()
    return database


def is_mysql(database: peewee.Database | peewee.DatabaseProxy) -> bool:
    target = database.obj if isinstance(database, peewee.DatabaseProxy) else database
    return isinstance(target, peewee.MySQLDatabase)
