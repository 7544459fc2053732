"""Draining no-op jobs: Heartbeat's worker SDK against Celery on Redis, side by side on this machine.

What a team would otherwise pick for the work-queue half of Heartbeat is Celery with Redis as broker
and result backend. Each side here is a real worker process, as a user runs it, with a handler that
does nothing:

- Heartbeat: ``heartbeat worker run`` (the CLI) against a real ``heartbeat serve`` on MariaDB with
  local storage, the images' real bytes in it (``bulk.store_images``), once with ``--batch 1`` and
  once with ``--batch 50``. Each job gets everything the SDK promises: claimed under a lease kept
  alive, its bytes downloaded through the presigned URL and checked against the image's sha256 and
  size, the result submitted with the lease's token.
- Celery: ``celery worker --pool prefork -O fair`` on a tasks module written into the temporary
  folder, with ``task_acks_late`` (a task is acknowledged once done, as a Heartbeat lease is settled
  only by the submit) and every result stored in Redis.

Fairness:
- The same number of handlers at once (``workers``, 4 by default): Heartbeat's ``--concurrency``
  threads in one process, Celery's prefork processes. On two cores a no-op handler is all overhead,
  so the count is the one a user would pick for I/O-bound handlers; both get the same.
- The same jobs, timed over the same span: from the moment a ready worker faces ``jobs`` waiting
  jobs until every one is done as the system itself records it (Heartbeat's job table counted in
  MariaDB; Celery's results counted in their own Redis database), polled every ``POLL_SECONDS``.
  Neither a worker's start-up nor the enqueueing is timed. Heartbeat: the worker runs throughout;
  a round pauses its software, requeues the done jobs and starts the clock at the resume, which
  wakes the worker's waiting claim. Celery: the tasks are enqueued first, then a worker is started
  and the clock starts at its ``worker_ready`` signal, sent once it consumes (stamped in Redis by
  the tasks module). (Celery's own way to hold a running worker back, ``cancel_consumer`` and
  ``add_consumer``, was tried: after it that worker took 10 ms a task, a fifth of its usual rate.)
- The sides take turns: ``rounds`` rounds, each side once a round in a rotating order, so that
  whatever else the machine does falls on all of them alike. A first round warms every side up and
  is not counted. A side's rate is its jobs over its time, all rounds together.
- Beside the rates, the CPU time each part of a side used per job over the timed spans: on a quiet
  machine that, more than either rate, says where each side's time goes (MariaDB's is the whole
  server's, other sessions' queries included; the Celery worker's counts its pool processes; the
  CPU its start-up took before it signalled ready is not counted, as its time is not).
Redis: the broker and the results each in a database number of their own (``BROKER_DB``,
``RESULTS_DB``), flushed before and after; nothing else in Redis is touched.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import redis
from harness import Api, Server, cpu_seconds, mariadb_pid, mysql, register

from heartbeat.db.models import job_table_name
from heartbeat.worker import Client
from heartbeat.worker.download import check_content
from heartbeat.worker.models import Image as WorkerImage

REDIS_URL = "redis://127.0.0.1:6379"
BROKER_DB = 14
RESULTS_DB = 15
POLL_SECONDS = 0.01
ROUND_TIMEOUT_SECONDS = 600

HANDLER_MODULE = "drain_handler"
HANDLER_SOURCE = '''"""The no-op handler of the drain benchmark."""


def handle(image_bytes, image):
    return None
'''
TASKS_MODULE = "drain_tasks"
READY_KEY = "heartbeat_bench_worker_ready"
TASKS_SOURCE = f'''"""The no-op task of the drain benchmark."""

import time

import redis
from celery import Celery
from celery.signals import worker_ready

app = Celery("{TASKS_MODULE}", broker="{REDIS_URL}/{BROKER_DB}", backend="{REDIS_URL}/{RESULTS_DB}")
app.conf.task_acks_late = True


@app.task
def noop():
    return None


@worker_ready.connect
def note_ready(**kwargs):
    """When the worker begins to consume: the benchmark's clock starts here."""
    redis.Redis.from_url("{REDIS_URL}/{BROKER_DB}").set("{READY_KEY}", repr(time.time()))
'''


@dataclasses.dataclass
class Round:
    """One side's round: its seconds, and the CPU seconds each part of the side used meanwhile."""

    seconds: float
    cpu_seconds: dict[str, float]


class Side(Protocol):
    """One worker under test. :meth:`drain` makes ``jobs`` jobs wait, then lets a ready worker at
    them and times it from then until every one is done."""

    name: str

    def drain(self) -> Round: ...
    def close(self) -> None: ...


@dataclasses.dataclass
class Drain:
    """A side's jobs, seconds and CPU seconds by part, over the counted rounds."""

    jobs: int = 0
    seconds: float = 0.0
    rounds: list[float] = dataclasses.field(default_factory=list)
    cpu_seconds: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    @property
    def per_second(self) -> float:
        return self.jobs / self.seconds

    def add(self, jobs: int, round_: Round) -> None:
        self.jobs += jobs
        self.seconds += round_.seconds
        self.rounds.append(round_.seconds)
        self.cpu_seconds.update(round_.cpu_seconds)

    def describe(self, unit: str) -> str:
        each = ", ".join(f"{seconds:.2f}" for seconds in self.rounds)
        cpu = ", ".join(f"{part} {seconds * 1000 / self.jobs:.2f}" for part, seconds in self.cpu_seconds.items())
        return (
            f"{self.per_second:.0f} {unit}/s ({self.jobs} in {self.seconds:.2f} s; rounds of {each} s); "
            f"CPU ms per job: {cpu}"
        )


def _cpu(parts: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of each part's processes (those gone meanwhile count nothing)."""
    used = dict.fromkeys(parts, 0.0)
    for part, pids in parts.items():
        for pid in pids:
            with contextlib.suppress(OSError):
                used[part] += cpu_seconds(pid)
    return used


def _cpu_since(parts: dict[str, list[int]], before: dict[str, float]) -> dict[str, float]:
    return {part: seconds - before[part] for part, seconds in _cpu(parts).items()}


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its children (a prefork worker's pool processes)."""
    children = []
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            children += [int(child) for child in listing.read_text().split()]
    return [pid, *children]


def _pid_of(command_name: str) -> int | None:
    """A local server's process by its command name (``redis-server``), when it runs on this machine."""
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if comm.read_text().strip() == command_name:
                return int(comm.parent.name)
    return None


def drain_side_by_side(sides: list[Side], *, jobs: int, rounds: int) -> dict[str, Drain]:
    """``rounds`` counted rounds (after one warm-up) of ``jobs`` jobs per side, the sides in turn."""
    drains = {side.name: Drain() for side in sides}
    for number in range(rounds + 1):
        turn = number % len(sides)
        for side in sides[turn:] + sides[:turn]:
            round_ = side.drain()
            if number:  # round 0 warms up
                drains[side.name].add(jobs, round_)
    return drains


def _await_count(count: Callable[[], int], jobs: int, what: str, check: Callable[[], None]) -> float:
    """Poll ``count()`` until it reaches ``jobs``; the ``time.time()`` it was first seen there."""
    deadline = time.monotonic() + ROUND_TIMEOUT_SECONDS
    while (done := count()) < jobs:
        check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did {done} of {jobs} jobs in {ROUND_TIMEOUT_SECONDS} s")
        time.sleep(POLL_SECONDS)  # the count is read from outside: nothing to wait on
    return time.time()


class WorkerProcess:
    """A worker command run in ``cwd`` until :meth:`stop`, its output kept in ``log``."""

    def __init__(self, command: list[str], cwd: Path, log: Path):
        self.log = log
        with open(log, "ab") as output:
            self.process = subprocess.Popen(command, cwd=cwd, stdout=output, stderr=subprocess.STDOUT)

    def check_running(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace").splitlines()[-20:]
            raise RuntimeError(f"the worker exited with {self.process.returncode}:\n" + "\n".join(tail))

    def stop(self) -> None:
        """SIGTERM, as a deployment stops a worker; it finishes or gives back what it holds."""
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class HeartbeatSide:
    """``heartbeat worker run`` on a software of its own with a job per stored image, started once and
    left running: a round pauses the software, requeues its done jobs, and times from its resume."""

    def __init__(self, server: Server, workdir: Path, software: str, *, jobs: int, workers: int, batch: int):
        self.name = software
        self._jobs = jobs
        self._api = Api(server)
        register(server, software)  # every stored image gets a pending job
        self._api.call("POST", f"/v1/software/{software}/pause")
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / f"{HANDLER_MODULE}.py").write_text(HANDLER_SOURCE)
        command = [
            *(sys.executable, "-m", "heartbeat", "worker", "run", f"{HANDLER_MODULE}:handle"),
            *("--software", software, "--api", server.url, "--concurrency", str(workers), "--batch", str(batch)),
        ]
        self._worker = WorkerProcess(command, workdir, workdir / f"worker-{software}.log")
        self._database = mysql(server.auth)
        self._count = f"SELECT COUNT(*) FROM `{job_table_name(software)}` WHERE status = 'done'"
        database = mariadb_pid()
        self._parts = {"worker": [self._worker.process.pid], "API": [server.pid]}
        self._parts |= {"MariaDB (all of it)": [database]} if database else {}

    def drain(self) -> Round:
        self._worker.check_running()
        self._api.call("POST", f"/v1/software/{self.name}/pause")
        self._api.call("POST", f"/v1/software/{self.name}/requeue", {"status": "done"})
        cpu_before, started = _cpu(self._parts), time.time()
        self._api.call("POST", f"/v1/software/{self.name}/resume")  # wakes the worker's waiting claim
        finished = _await_count(self._done, self._jobs, self.name, self._worker.check_running)
        return Round(finished - started, _cpu_since(self._parts, cpu_before))

    def _done(self) -> int:
        with self._database.cursor() as cursor:
            cursor.execute(self._count)
            return int(cursor.fetchone()[0])

    def close(self) -> None:
        self._worker.stop()
        self._database.close()
        self._api.close()


class FetchSide:
    """The one part of a Heartbeat job that a no-op Celery task does not do, alone: each image's bytes
    fetched through a presigned URL and checked against its sha256 and size, with the SDK's own code
    (``Client.fetch``, ``check_content``), by ``workers`` threads of this process. No claim, no
    submit. The URLs are signed before a round (``GET /v1/images/{id}/url``) and not timed. With
    local storage the API serves the bytes (its blob route), so the API's CPU is part of it; with S3
    it would be the store's."""

    def __init__(self, server: Server, *, jobs: int, workers: int):
        self.name = "drain_fetch_only"
        self._server = server
        self._workers = workers
        with mysql(server.auth) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT id FROM images ORDER BY uploaded_date, id LIMIT %s", (jobs,))
            self._image_ids = [row[0] for row in cursor.fetchall()]
        self._client = Client(server.url)
        self._images = [self._client.image(image_id) for image_id in self._image_ids]
        self._parts = {"API": [server.pid], "fetchers (the bench process)": [os.getpid()]}

    def drain(self) -> Round:
        urls = [self._client.image_url(image_id).url for image_id in self._image_ids]
        work = queue.SimpleQueue[tuple[str, WorkerImage]]()
        for item in zip(urls, self._images, strict=True):
            work.put(item)
        failures: list[BaseException] = []

        def fetcher() -> None:
            with Client(self._server.url) as client:
                while True:
                    try:
                        url, image = work.get_nowait()
                    except queue.Empty:
                        return
                    try:
                        check_content(client.fetch(url), image)
                    except Exception as error:  # reported after the round, not lost in a thread
                        failures.append(error)
                        return

        threads = [threading.Thread(target=fetcher) for _ in range(self._workers)]
        cpu_before, started = _cpu(self._parts), time.time()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        finished = time.time()
        if failures:
            raise RuntimeError(f"a fetch failed: {failures[0]!r}")
        return Round(finished - started, _cpu_since(self._parts, cpu_before))

    def close(self) -> None:
        self._client.close()


class CelerySide:
    """A Celery prefork worker started on ``jobs`` tasks already enqueued; a round is timed from the
    moment it begins to consume (its ``worker_ready`` signal, which stamps the time in Redis)."""

    name = "celery"

    def __init__(self, workdir: Path, *, jobs: int, workers: int):
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / f"{TASKS_MODULE}.py").write_text(TASKS_SOURCE)
        self._workdir = workdir
        self._jobs = jobs
        self._command = [
            *(sys.executable, "-m", "celery", "-A", TASKS_MODULE, "worker", "--pool", "prefork"),
            *("--concurrency", str(workers), "-O", "fair", "--loglevel", "WARNING"),
        ]
        self._broker, self._results = (redis.Redis.from_url(f"{REDIS_URL}/{db}") for db in (BROKER_DB, RESULTS_DB))
        self._flush()

    def _flush(self) -> None:
        self._broker.flushdb()
        self._results.flushdb()

    def drain(self) -> Round:
        self._flush()
        enqueue = f"from {TASKS_MODULE} import noop\nfor _ in range({self._jobs}):\n    noop.delay()\n"
        subprocess.run([sys.executable, "-c", enqueue], cwd=self._workdir, check=True)
        worker = WorkerProcess(self._command, self._workdir, self._workdir / "celery-worker.log")
        try:
            _await_count(lambda: self._broker.exists(READY_KEY), 1, "the Celery worker's start", worker.check_running)
            redis_server = _pid_of("redis-server")
            parts = {"worker": _process_tree(worker.process.pid)}
            parts |= {"Redis": [redis_server]} if redis_server else {}
            cpu_before = _cpu(parts)
            finished = _await_count(self._results.dbsize, self._jobs, self.name, worker.check_running)
            cpu = _cpu_since(parts, cpu_before)
        finally:
            worker.stop()
        return Round(finished - float(self._broker.get(READY_KEY) or 0), cpu)

    def close(self) -> None:
        self._flush()
        self._broker.close()
        self._results.close()


def redis_problem() -> str | None:
    """Why Celery cannot run here (no Redis answering at ``REDIS_URL``), or None."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        return f"no Redis at {REDIS_URL}: {error}"
    return None
