"""Fleets: what waiting workers cost uploads and the database, and what a second server process adds.

- ``fleet_upload_p99_vs_idle``: the p99 latency of uploads (4 client threads, ~100 KB JPEGs) while 200
  workers long-poll a software that has no work, over the same uploads with no worker waiting; one
  ``heartbeat serve --processes 2`` on MariaDB for both, measured back to back.
- ``waiting_db_qps``: the statements per second the server sends MariaDB while 200, then 800, workers
  wait, beside the same for an idle server; ``waiting_db_qps_800_vs_200`` says whether it grows with the
  fleet (it should not: each process looks for the waiting claims' work a few times a second, and
  turned-away claims come back to it at most ``RETURNS_PER_SECOND`` times a second). The server logs in
  as a MariaDB user of its own, whose statements MariaDB counts (``userstat``,
  ``information_schema.USER_STATISTICS``), so that nothing else on the machine is counted.
- ``claim_rate_2_vs_1_processes``: claim+submit cycles per second (16 client threads, one job per claim,
  as ``claim_http``) against ``--processes 2`` over ``--processes 1``, each on its own software's table
  of the same size.

The waiting workers run in a process of their own (spawned), so that their threads do not take this
process's interpreter from the clients being timed. Each worker does what the SDK does: a claim that
waits up to 20 s, and on ``Retry-After`` a pause of that many seconds times a random 1 to 1.5.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import multiprocessing
import random
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import urllib3
from bench_claims import http_cycles
from bulk import insert_images
from harness import Api, Figure, Server, mysql, percentile, register, say

from heartbeat.config import DbAuth

SPAWN = multiprocessing.get_context("spawn")
UPLOAD_THREADS = 4
SETTLE_SECONDS = 8  # after a fleet starts: its first claims have all been answered or are waiting
CLAIM_THREADS = 16
WARMUP_UPLOADS = 40


def _fleet(host: str, port: int, workers: int, stop: Any, ready: Any) -> None:
    """``workers`` threads long-polling ``idle`` until ``stop`` (runs in a spawned process)."""

    def work() -> None:
        rng = random.Random()
        connection = http.client.HTTPConnection(host, port, timeout=60)
        body = json.dumps({"wait_seconds": 20})
        while not stop.is_set():
            try:
                connection.request("POST", "/v1/software/idle/claim", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                stop.wait(1)
                continue
            retry_after = response.getheader("Retry-After")
            if retry_after is not None:
                stop.wait(int(retry_after) * rng.uniform(1.0, 1.5))

    threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    ready.set()
    stop.wait()


class Fleet:
    """``workers`` waiting workers in a spawned process, for the length of a ``with`` block."""

    def __init__(self, server: Server, workers: int):
        self._stop, ready = SPAWN.Event(), SPAWN.Event()
        self._process = SPAWN.Process(target=_fleet, args=(server.host, server.port, workers, self._stop, ready))
        self._process.start()
        ready.wait(60)
        time.sleep(SETTLE_SECONDS)  # the fleet's first claims settle: no event tells when

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._process.join(60)


class CountedUser:
    """A MariaDB user of the benchmark's own for ``auth.database``, whose statements MariaDB counts."""

    NAME = "heartbeat_fleet"

    def __init__(self, auth: DbAuth):
        self._admin = auth
        self.auth = dataclasses.replace(auth, user=self.NAME, password=secrets.token_hex(16))

    def __enter__(self) -> CountedUser:
        with mysql(self._admin) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT @@userstat")
            self._userstat = cursor.fetchone()[0]
            cursor.execute("SET GLOBAL userstat = 1")
            for host in ("localhost", "127.0.0.1"):
                cursor.execute(f"DROP USER IF EXISTS '{self.NAME}'@'{host}'")
                cursor.execute(f"CREATE USER '{self.NAME}'@'{host}' IDENTIFIED BY %s", (self.auth.password,))
                cursor.execute(f"GRANT ALL ON `{self._admin.database}`.* TO '{self.NAME}'@'{host}'")
        return self

    def __exit__(self, *exc_info: object) -> None:
        with mysql(self._admin) as connection, connection.cursor() as cursor:
            for host in ("localhost", "127.0.0.1"):
                cursor.execute(f"DROP USER IF EXISTS '{self.NAME}'@'{host}'")
            cursor.execute(f"SET GLOBAL userstat = {int(self._userstat)}")

    def statements(self) -> int:
        with mysql(self._admin) as connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT SELECT_COMMANDS + UPDATE_COMMANDS + OTHER_COMMANDS FROM information_schema.USER_STATISTICS"
                " WHERE USER = %s",
                (self.NAME,),
            )
            row = cursor.fetchone()
        return int(row[0]) if row else 0

    def statements_per_second(self, seconds: float) -> float:
        """Statements per second the user sent over the next ``seconds``."""
        before = self.statements()
        time.sleep(seconds)  # the window being measured
        return (self.statements() - before) / seconds


def upload_latencies(server: Server, pictures: list[bytes]) -> list[float]:
    """Seconds per upload, ``UPLOAD_THREADS`` at a time, every picture once."""
    latencies: list[float] = []
    lock = threading.Lock()
    queue = list(enumerate(pictures))

    def upload() -> None:
        api = Api(server)
        while True:
            with lock:
                if not queue:
                    break
                index, data = queue.pop()
            body, content_type = urllib3.encode_multipart_formdata({"file": (f"fleet-{index}.jpg", data, "image/jpeg")})
            began = time.monotonic()
            status, answer = api.request("POST", "/v1/images", body, content_type)
            elapsed = time.monotonic() - began
            if status != 201:
                raise RuntimeError(f"upload answered {status}: {answer}")
            with lock:
                latencies.append(elapsed)
        api.close()

    threads = [threading.Thread(target=upload) for _ in range(UPLOAD_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def waiting_fleet(auth: DbAuth, workdir: Path, port: int, pictures: list[bytes], qps_seconds: float) -> list[Figure]:
    half = len(pictures) // 2
    with CountedUser(auth) as user, Server(user.auth, workdir, port, "--processes", "2") as server:
        api = Api(server)
        api.call("POST", "/v1/software", {"name": "idle", "origins": ["nowhere"]}, expect=201)
        api.close()
        idle_qps = user.statements_per_second(qps_seconds)
        upload_latencies(server, pictures[:WARMUP_UPLOADS])  # not measured: the first requests' start-up costs
        alone = upload_latencies(server, pictures[WARMUP_UPLOADS:half])
        with Fleet(server, 200):
            qps_200 = user.statements_per_second(qps_seconds)
            crowded = upload_latencies(server, pictures[half:])
        with Fleet(server, 800):
            qps_800 = user.statements_per_second(qps_seconds)
    say("waiting_db_qps", f"idle server {idle_qps:.1f}/s, 200 waiting workers {qps_200:.1f}/s, 800: {qps_800:.1f}/s")
    say(
        "fleet_upload_latency",
        f"p50 {percentile(alone, 0.5) * 1000:.0f} ms, p99 {percentile(alone, 0.99) * 1000:.0f} ms alone; "
        f"p50 {percentile(crowded, 0.5) * 1000:.0f} ms, p99 {percentile(crowded, 0.99) * 1000:.0f} ms "
        "with 200 waiting workers",
    )
    return [
        Figure("fleet_upload_p99_vs_idle", percentile(crowded, 0.99) / percentile(alone, 0.99), "<= 2"),
        Figure("waiting_db_qps_800_vs_200", qps_800 / max(qps_200, 1.0), "<= 1.2"),
    ]


def processes_claim_rate(auth: DbAuth, workdir: Path, ports: tuple[int, int], images: int, seconds: float) -> Figure:
    with mysql(auth) as connection:
        insert_images(connection, "p", 1, images)
    rates = []
    for processes, port in zip((1, 2), ports, strict=True):
        name = f"processes_{processes}"
        with Server(auth, workdir / name, port, "--processes", str(processes)) as server:
            register(server, name)
            load = http_cycles(server, name, threads=CLAIM_THREADS, seconds=seconds)
        rates.append(load.per_second)
        say(f"claim_http_{processes}_process", f"{load.per_second:.0f} cycles/s")
    return Figure("claim_rate_2_vs_1_processes", rates[1] / rates[0], ">= 1")
