"""What every benchmark shares: its own MariaDB database, a real ``heartbeat serve`` process, a small
keep-alive JSON client, a load of N threads run for a while, and the ``name: value`` lines.

Every load runs in this one Python process as threads, each with one persistent connection (an HTTP
keep-alive connection to the API, or a PyMySQL connection to MariaDB): the HTTP and the SQL side of a
comparison pay for the same kind of client.
"""

from __future__ import annotations

import dataclasses
import http.client
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import PIL.Image
import pymysql
import requests

from heartbeat.config import DbAuth

MARIADB = DbAuth(host="127.0.0.1", port=3306, user="root", password="", database="heartbeat_bench")
REPOSITORY = Path(__file__).resolve().parents[2]
JPEG_SIZE = (640, 480)
JPEG_QUALITY = 75  # with the texture below: about 100 KB, like a webcam frame


# --- figures -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Figure:
    """One benchmark's ratio and its goal, for the line it prints and the summary at the end."""

    name: str
    value: float
    goal: str  # ">= 0.8", "<= 1.5"; "" for a figure given for information
    detail: str = ""

    @property
    def met(self) -> bool:
        if not self.goal:
            return True  # given for information: nothing to miss
        sign, bound = self.goal.split()
        return self.value >= float(bound) if sign == ">=" else self.value <= float(bound)

    def line(self) -> str:
        return f"{self.name}: {self.value:.2f} ({f'goal {self.goal}' if self.goal else 'for information'})"


def say(name: str, value: str) -> None:
    """One ``name: value`` line, at once (the run is long; nothing waits in a buffer)."""
    print(f"{name}: {value}", flush=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --- the database ------------------------------------------------------------------------------


def mysql(auth: DbAuth, *, database: bool = True) -> pymysql.Connection:
    """A PyMySQL connection in autocommit mode, as Peewee's pool hands them to the API."""
    return pymysql.connect(
        host=auth.host,
        port=auth.port,
        user=auth.user,
        password=auth.password,
        database=auth.database if database else None,
        charset="utf8mb4",
        autocommit=True,
    )


def drop_database(auth: DbAuth) -> None:
    if not auth.database.startswith("heartbeat_bench"):
        raise ValueError(f"benchmarks use databases named heartbeat_bench*, not {auth.database!r}")
    with mysql(auth, database=False) as connection, connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{auth.database}`")


def fresh_database(auth: DbAuth) -> None:
    """Drop and create ``auth.database``: every run starts from nothing."""
    drop_database(auth)
    with mysql(auth, database=False) as connection, connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{auth.database}` CHARACTER SET utf8mb4")


def mariadb_version() -> str:
    with mysql(MARIADB, database=False) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT VERSION()")
        return str(cursor.fetchone()[0])


# --- the server --------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mariadb_pid(auth: DbAuth = MARIADB) -> int | None:
    """The process of the MariaDB server at ``auth``'s host and port, found by its ``pid_file``, when it runs
    on this machine (not the first ``mariadbd`` process: the Galera test nodes run the same binary)."""
    with mysql(auth, database=False) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT @@pid_file")
        pid_file = Path(str(cursor.fetchone()[0]))
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if Path(f"/proc/{pid}/stat").exists() else None


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` (resident now) and ``VmHWM`` (its peak) of a process, in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


class Server:
    """``heartbeat serve`` as its own process on MariaDB, with local storage under ``workdir``."""

    def __init__(self, auth: DbAuth, workdir: Path, port: int, *extra_args: str, env: dict[str, str] | None = None):
        workdir.mkdir(parents=True, exist_ok=True)
        auth_file = workdir / "db_auth.json"
        auth_file.write_text(json.dumps(dataclasses.asdict(auth)))
        self.auth = auth
        self.host, self.port = "127.0.0.1", port
        self.url = f"http://{self.host}:{port}"
        self.log_path = workdir / "server.log"
        command = [
            *(sys.executable, "-m", "heartbeat", "serve", "--port", str(port)),
            *("--data-dir", str(workdir / "data"), "--db-auth", str(auth_file)),
            *("--storage", f"local:{workdir / 'images'}", *extra_args),
        ]
        # The log goes to a file: a pipe nobody reads fills up and blocks the server mid-request.
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=None if env is None else os.environ | env
            )
        self._await_health()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _await_health(self) -> None:
        await_health(self.process, self.url, self.log_path, "heartbeat serve")

    def __enter__(self) -> Server:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        self.stop()
        if exc_type is not None:  # the log goes with the temporary folder: show why first
            tail = self.log_path.read_text(errors="replace").splitlines()[-40:]
            print("\n".join(["heartbeat serve's last log lines:", *tail]), file=sys.stderr)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def await_health(process: subprocess.Popen[bytes], url: str, log_path: Path, name: str) -> None:
    """Wait until the server ``process`` started answers ``GET {url}/v1/health`` (60 s at most);
    raises with its log if it exits first."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited:\n{log_path.read_text()}")
        try:
            if requests.get(f"{url}/v1/health", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.1)  # the port is not open yet: nothing else to wait on
        except requests.Timeout:
            pass  # open, but the server processes are still starting
    raise RuntimeError(f"{name} did not answer within 60 s")


def tree_of(commit: str, into: Path) -> Path:
    """The ``src`` folder of ``commit``, unpacked under ``into`` (``git archive``: nothing in the
    repository or its working tree changes). A :class:`Server` runs that tree with
    ``env={"PYTHONPATH": str(tree_of(...))}``, ahead of the editable install's path to this tree's src."""
    archive = subprocess.run(
        ["git", "-C", str(REPOSITORY), "archive", "--format=tar", commit, "src"], check=True, capture_output=True
    ).stdout
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


class Api:
    """A JSON client over one keep-alive HTTP connection; one per thread, as a worker would hold it."""

    def __init__(self, server: Server, timeout_seconds: float = 120):
        self._server = server
        self._timeout = timeout_seconds
        self._connection = self._connect()

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self._server.host, self._server.port, timeout=self._timeout)

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = "") -> tuple[int, Any]:
        headers = {"Content-Type": content_type} if content_type else {}
        for attempt in (1, 2):
            try:
                self._connection.request(method, path, body=body, headers=headers)
                response = self._connection.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionError):
                # The server closed an idle keep-alive connection: once more on a new one.
                self._connection.close()
                self._connection = self._connect()
                if attempt == 2:
                    raise
        return response.status, json.loads(data) if data else None

    def call(self, method: str, path: str, media: Any = None, expect: int = 200) -> Any:
        body = None if media is None else json.dumps(media).encode()
        status, answer = self.request(method, path, body, "application/json" if body else "")
        if status != expect:
            raise RuntimeError(f"{method} {path} answered {status}: {answer}")
        return answer

    def close(self) -> None:
        self._connection.close()


def register(server: Server, name: str) -> None:
    """Register a software through the API (its table is backfilled with a job per existing image)."""
    api = Api(server, timeout_seconds=600)
    api.call("POST", "/v1/software", {"name": name, "lease_seconds": 600}, expect=201)
    api.close()


# --- loads -------------------------------------------------------------------------------------

# A step does one unit of work on its thread's own state and says how many items it finished;
# None means there was no work left.
Step = Callable[[Any], int | None]


@dataclasses.dataclass
class LoadResult:
    items: int
    seconds: float
    drained: bool  # the work ran out before the time was up
    server_cpu_seconds: float = 0.0
    client_cpu_seconds: float = 0.0
    database_cpu_seconds: float | None = None  # the whole MariaDB server, other sessions' work included

    @property
    def per_second(self) -> float:
        return self.items / self.seconds


def run_load(
    threads: int,
    make_state: Callable[[], Any],
    step: Step,
    *,
    seconds: float | None,
    warmup_seconds: float = 1.0,
    server: Server | None = None,
) -> LoadResult:
    """``threads`` threads repeat ``step`` for ``warmup_seconds`` (not counted) and then ``seconds``,
    or with ``seconds`` None until every thread has found no more work."""
    counts = [0] * threads
    stop = threading.Event()
    drained = threading.Event()  # every thread found no more work (or one failed)
    finished: list[int] = []
    errors: list[BaseException] = []
    states = [make_state() for _ in range(threads)]

    def work(index: int) -> None:
        try:
            while not stop.is_set():
                done = step(states[index])
                if done is None:
                    break
                counts[index] += done
        except BaseException as error:
            errors.append(error)
            drained.set()
        finished.append(index)
        if len(finished) == threads:
            drained.set()

    workers = [threading.Thread(target=work, args=(index,), daemon=True) for index in range(threads)]
    for worker in workers:
        worker.start()
    drained.wait(warmup_seconds)
    started, before = time.monotonic(), sum(counts)
    database = mariadb_pid()
    server_cpu, client_cpu = (cpu_seconds(server.pid) if server else 0.0), time.process_time()
    database_cpu = cpu_seconds(database) if database else 0.0
    ran_dry = drained.wait(seconds) and seconds is not None
    elapsed, items = time.monotonic() - started, sum(counts) - before
    server_cpu = (cpu_seconds(server.pid) - server_cpu) if server else 0.0
    client_cpu = time.process_time() - client_cpu
    database_cpu = (cpu_seconds(database) - database_cpu) if database else None
    stop.set()
    for worker in workers:
        worker.join()
    for state in states:
        if hasattr(state, "close"):
            state.close()
    if errors:
        raise errors[0]
    return LoadResult(items, elapsed, ran_dry, server_cpu, client_cpu, database_cpu)


def describe_load(result: LoadResult, unit: str) -> str:
    """The rate, and the CPU time it cost the API, this client process and MariaDB per item.

    MariaDB's is its whole server's: queries of other sessions running meanwhile are counted too."""
    text = f"{result.per_second:.0f} {unit}/s"
    if result.items:
        per_item_ms = 1000 / result.items
        if result.server_cpu_seconds:
            text += f", API CPU {result.server_cpu_seconds * per_item_ms:.2f} ms/item"
        text += f", client CPU {result.client_cpu_seconds * per_item_ms:.2f} ms/item"
        if result.database_cpu_seconds is not None:
            text += f", MariaDB CPU {result.database_cpu_seconds * per_item_ms:.2f} ms/item"
    if result.drained:
        text += " (ran out of work early: measured until then)"
    return text


# --- images ------------------------------------------------------------------------------------


def jpegs(count: int) -> list[bytes]:
    """``count`` distinct ~100 KB 640x480 JPEGs (see :func:`jpeg_variants`)."""
    return list(jpeg_variants(count))


def jpeg_variants(count: int) -> Iterator[bytes]:
    """``count`` distinct ~100 KB 640x480 JPEGs, one at a time: one picture made by Pillow (random texture,
    smoothed, so that it compresses like a photo), each copy with its own comment segment, so that each has
    its own sha256 and none is taken for a duplicate, while all cost the same to check and to thumbnail."""
    noise = PIL.Image.frombytes("RGB", (160, 120), os.urandom(160 * 120 * 3))
    out = io.BytesIO()
    noise.resize(JPEG_SIZE, PIL.Image.Resampling.BICUBIC).save(out, "JPEG", quality=JPEG_QUALITY)
    picture = out.getvalue()
    start_of_image, rest = picture[:2], picture[2:]
    for index in range(count):
        comment = f"heartbeat benchmark {index} {os.urandom(8).hex()}".encode()
        segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment  # JPEG COM marker
        yield start_of_image + segment + rest
