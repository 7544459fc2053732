"""Opening the configured database: MySQL/MariaDB from ``db_auth``, else SQLite in the data dir; its
features probed once, the models bound to it and the missing tables created."""

from __future__ import annotations

import logging
from pathlib import Path

import peewee
import pymysql

from heartbeat.config import DbAuth, SettingError
from heartbeat.db.database import Database, Features, error_code
from heartbeat.db.engines import (
    DATABASE_ACCESS_DENIED_ERROR,
    NO_PAD_BINARY_COLLATIONS,
    UNKNOWN_DATABASE_ERROR,
    account_of,
    create_database_sql,
    create_mysql_database,
    mysql_database,
    sqlite_database,
)
from heartbeat.db.models import bind_models, create_base_tables

log = logging.getLogger(__name__)

# Connections a server process may hold besides one per thread: the lease reaper, the claim watcher,
# the event sequencer and watcher, the webhook senders (4), and one to spare.
BACKGROUND_CONNECTIONS = 10
# Room a statement needs besides a result's JSON text (escaping may double the text's length).
STATEMENT_OVERHEAD_BYTES = 64 * 1024


class DatabaseMissing(SettingError):
    """The configured database does not exist, and this command creates none (or could not)."""


SQLITE_FILE = "heartbeat.db"


def sqlite_path(data_dir: str | Path) -> Path:
    """Where the embedded database of ``data_dir`` lives."""
    return Path(data_dir) / SQLITE_FILE


def connect(
    *,
    data_dir: str | Path,
    db_auth: DbAuth | None,
    threads: int = 16,
    create: bool = True,
    query_seconds: float | None = None,
) -> Database:
    """Open the configured database (MySQL/MariaDB when ``db_auth`` is given, else SQLite in
    ``data_dir``), probe its features, bind the models to it and create missing tables.

    ``threads``: how many server threads will use it (a MySQL pool holds one connection for each).
    ``query_seconds``: how long a query's statement may run (:meth:`Database.time_limit`).
    ``create``: make the database when it does not exist (the SQLite file and its folder; on MySQL,
    ``CREATE DATABASE`` when the user may); else, and when the user may not, :class:`DatabaseMissing`
    says which database is missing (and what to run to create it).
    """
    if db_auth:
        engine = mysql_database(db_auth, max_connections=threads + BACKGROUND_CONNECTIONS)
    else:
        path = sqlite_path(data_dir)
        if not create and not path.exists():
            raise DatabaseMissing(f"no Heartbeat database in {data_dir} ({path} does not exist)")
        engine = sqlite_database(path)
    try:
        engine.connect()
    except peewee.OperationalError as error:
        code = error_code(error)
        if not db_auth or code not in (UNKNOWN_DATABASE_ERROR, DATABASE_ACCESS_DENIED_ERROR):
            raise
        if code == DATABASE_ACCESS_DENIED_ERROR and not create:
            raise
        _create_missing(db_auth, create)
        engine.connect()
    try:
        database = Database(engine, probe_features(engine), query_seconds=query_seconds)
    finally:
        engine.close()
    if database.features.multi_writer:
        # A job claimed through one node and submitted through another: each statement first waits
        # until this node has applied what the cluster committed before it (read your writes).
        with database.connection():
            engine.connect_params["init_command"] = causal_reads(engine)
        database.close_all()  # the connections made so far have no such setting
    bind_models(database)
    with database.connection():
        create_base_tables(database)
    return database


def _create_missing(auth: DbAuth, create: bool) -> None:
    """Create the missing MySQL database ``auth.database``, or :class:`DatabaseMissing` saying what to run."""
    where = f"database {auth.database!r} does not exist on {auth.host}:{auth.port}"
    statement = create_database_sql(auth.database)
    if not create:
        raise DatabaseMissing(f"{where} (this command creates none: `heartbeat serve` does, or run {statement})")
    try:
        create_mysql_database(auth)
    except pymysql.err.OperationalError as error:
        grant = f"GRANT ALL ON `{auth.database.replace('`', '``')}`.* TO {account_of(auth)}"
        raise DatabaseMissing(
            f"database {auth.database!r} on {auth.host}:{auth.port} is missing or not allowed to user "
            f"{auth.user!r}, who may not create it ({error.args[-1]}); as a MySQL/MariaDB administrator, "
            f"run: {statement}; {grant};"
        ) from None
    log.info("created the database %s on %s:%s", auth.database, auth.host, auth.port)


def probe_features(engine: peewee.Database) -> Features:
    """Ask the server what it is and what it allows."""
    if not isinstance(engine, peewee.MySQLDatabase):
        return Features(mysql=False, skip_locked=False, max_result_bytes=None, collation=None)
    version, packet = engine.execute_sql("SELECT VERSION(), @@max_allowed_packet").fetchone()
    flavour = "mariadb" if "mariadb" in version.lower() else "mysql"
    engine.mariadb = flavour == "mariadb"  # how it bounds a statement's time
    major, minor = (int(part) for part in version.split("-")[0].split(".")[:2])
    # no NO PAD binary collation before MySQL 8
    collation = "utf8mb4_bin" if flavour == "mysql" and major < 8 else NO_PAD_BINARY_COLLATIONS[flavour]
    return Features(
        mysql=True,
        skip_locked=(major, minor) >= ((10, 6) if flavour == "mariadb" else (8, 0)),
        max_result_bytes=int(packet) // 2 - STATEMENT_OVERHEAD_BYTES,
        collation=collation,
        multi_writer=_multi_writer(engine),
        node_share=_node_share(engine),
    )


def _multi_writer(engine: peewee.Database) -> bool:
    """Whether the server is a node of a cluster where every node takes writes: Galera with
    ``wsrep_on``, or MySQL Group Replication in multi-primary mode."""
    settings = _cluster_settings(engine)
    return settings.get("wsrep_on") == "ON" or settings.get("group_replication_single_primary_mode") == "OFF"


def _node_share(engine: peewee.Database) -> tuple[int, int] | None:
    """On a Galera node: (its index among the nodes, how many there are), else None."""
    if _cluster_settings(engine).get("wsrep_on") != "ON":
        return None
    sql = "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_local_index', 'wsrep_cluster_size')"
    status = {str(name): str(value) for name, value in engine.execute_sql(sql).fetchall()}
    try:
        index, size = int(status["wsrep_local_index"]), int(status["wsrep_cluster_size"])
    except (KeyError, ValueError):
        return None
    return (index, size) if 0 <= index < size else None


def causal_reads(engine: peewee.Database) -> str:
    """The statement that makes a session of a multi-writer cluster read what the cluster committed
    before each of its statements: Galera's causality check for reads and for UPDATE and DELETE
    (``wsrep_sync_wait`` 1 + 2), else Group Replication's ``BEFORE`` consistency."""
    if _cluster_settings(engine).get("wsrep_on") == "ON":
        return "SET SESSION wsrep_sync_wait = 3"
    return "SET SESSION group_replication_consistency = 'BEFORE'"


def _cluster_settings(engine: peewee.Database) -> dict[str, str]:
    sql = "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('wsrep_on', 'group_replication_single_primary_mode')"
    return {str(name): str(value).upper() for name, value in engine.execute_sql(sql).fetchall()}
