"""Fixtures: a real database (SQLite, or MariaDB when HEARTBEAT_TEST_DB=mysql), real local storage,
the app behind Falcon's test client, and a clock the tests move by hand.

HEARTBEAT_TEST_DB=mysql reads HEARTBEAT_TEST_DB_AUTH (a db_auth.json) or uses root@127.0.0.1:3306
with database ``heartbeat_test``. If that server cannot be reached the run stops with an error:
a MySQL suite is never skipped silently.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import falcon.testing
import peewee
import pymysql
import pytest
import requests

from heartbeat.app import create_app
from heartbeat.config import DbAuth, Settings
from heartbeat.db.database import connect, database_proxy, is_mysql
from heartbeat.db.models import create_base_tables, forget_models
from heartbeat.storage import open_storage
from helpers import free_port

BACKEND = os.environ.get("HEARTBEAT_TEST_DB", "sqlite")


def mysql_auth() -> DbAuth:
    path = os.environ.get("HEARTBEAT_TEST_DB_AUTH")
    if path:
        return DbAuth.from_file(path)
    return DbAuth(host="127.0.0.1", port=3306, user="root", password="", database="heartbeat_test")


def _create_mysql_database(auth: DbAuth) -> None:
    try:
        connection = pymysql.connect(
            host=auth.host, port=auth.port, user=auth.user, password=auth.password, connect_timeout=5
        )
    except pymysql.MySQLError as error:
        pytest.exit(f"HEARTBEAT_TEST_DB=mysql but MariaDB/MySQL at {auth.host}:{auth.port} is unreachable: {error}", 3)
    with connection, connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{auth.database}` CHARACTER SET utf8mb4")


def pytest_report_header() -> str:
    return f"heartbeat database backend: {BACKEND}"


@pytest.fixture(scope="session")
def db_auth(tmp_path_factory: pytest.TempPathFactory) -> DbAuth | None:
    if BACKEND == "sqlite":
        return None
    if BACKEND != "mysql":
        pytest.exit(f"HEARTBEAT_TEST_DB must be sqlite or mysql, not {BACKEND!r}", 3)
    auth = mysql_auth()
    _create_mysql_database(auth)
    return auth


@pytest.fixture(scope="session")
def db_auth_file(db_auth: DbAuth | None, tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """The test database as a db_auth.json, for servers and commands run as subprocesses."""
    if db_auth is None:
        return None
    path = tmp_path_factory.mktemp("auth") / "db_auth.json"
    path.write_text(json.dumps(dataclasses.asdict(db_auth)))
    return path


@pytest.fixture(scope="session")
def session_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def connected(db_auth: DbAuth | None, session_data_dir: Path) -> peewee.Database:
    return connect(data_dir=session_data_dir, db_auth=db_auth)


def reset_database() -> None:
    """Every table dropped and the base tables made anew."""
    database = database_proxy
    database.connect(reuse_if_open=True)
    tables = database.get_tables()
    if is_mysql(database):
        database.execute_sql("SET FOREIGN_KEY_CHECKS = 0")
    quote = "`" if is_mysql(database) else '"'
    for table in tables:
        database.execute_sql(f"DROP TABLE IF EXISTS {quote}{table}{quote}")
    forget_models()
    create_base_tables()
    database.close()


@pytest.fixture
def database(connected: peewee.Database) -> Iterator[peewee.Database]:
    reset_database()
    yield connected
    if not connected.is_closed():
        connected.close()


class FakeClock:
    """Unix time that moves only when a test says so."""

    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path, db_auth: DbAuth | None) -> Settings:
    return Settings(data_dir=tmp_path / "data", db_auth=db_auth)


@pytest.fixture
def storage(settings: Settings, clock: FakeClock) -> Any:
    return open_storage(settings, clock)


@pytest.fixture
def app(settings: Settings, database: peewee.Database, storage: Any, clock: FakeClock) -> falcon.App:
    return create_app(settings, database=database, storage=storage, clock=clock)


@pytest.fixture
def client(app: falcon.App) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(app)


class LiveServer:
    """``heartbeat serve`` as a real process on a free loopback port."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, data_dir: Path, log_path: Path):
        self.process = process
        self.url = url
        self.data_dir = data_dir
        self.log_path = log_path

    def log(self) -> str:
        """What the server printed (its access log among it)."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def start_server(
    database: peewee.Database, db_auth_file: Path | None, tmp_path: Path
) -> Iterator[Callable[..., LiveServer]]:
    """Start servers on the test database (tables already reset); all are stopped afterwards."""
    servers: list[LiveServer] = []

    def start(*extra_args: str, data_dir: Path | None = None) -> LiveServer:
        port = free_port()
        data_dir = data_dir or tmp_path / f"server-{len(servers)}"
        command = [sys.executable, "-m", "heartbeat", "serve", "--port", str(port), "--data-dir", str(data_dir)]
        if db_auth_file is not None:
            command += ["--db-auth", str(db_auth_file)]
        # The log goes to a file: a pipe nobody reads fills up and blocks the server mid-request.
        log_path = tmp_path / f"server-{len(servers)}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen([*command, *extra_args], stdout=log, stderr=subprocess.STDOUT)
        server = LiveServer(process, f"http://127.0.0.1:{port}", data_dir, log_path)
        servers.append(server)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {server.log()}")
            try:
                if requests.get(f"{server.url}/v1/health", timeout=1).status_code == 200:
                    return server
            except requests.ConnectionError:
                time.sleep(0.05)  # the port is not open yet; nothing to wait on but the clock
        raise RuntimeError("server did not answer within 30 s")

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def create_token(db_auth_file: Path | None) -> Callable[..., str]:
    """``heartbeat token create`` on the test database (or the SQLite in ``data_dir``); returns the secret."""

    def create(role: str, data_dir: Path, *extra_args: str) -> str:
        db = ["--db-auth", str(db_auth_file)] if db_auth_file else ["--data-dir", str(data_dir)]
        command = [sys.executable, "-m", "heartbeat", "token", "create", "--role", role, *db, *extra_args]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()

    return create
