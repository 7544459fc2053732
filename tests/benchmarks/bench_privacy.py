"""Privacy (issue 29): what the audit costs a claim, and how fast an erasure goes while claims go on.

- ``claim_rate_with_vs_without_audit``: claim+submit cycles per second (16 client threads, one job per
  claim, as ``claim_http``) through this tree's server, which writes an audit entry for every claim that
  hands out jobs (one ``audit_entries`` row and an ``audit_images`` row per job, in a short transaction
  after the claim's), over the same through the tree of :data:`BEFORE_PRIVACY` (the commit before the
  privacy work, unpacked with ``git archive`` by :func:`harness.tree_of`; its server runs with its
  ``PYTHONPATH`` at the unpacked ``src``, and it must answer ``GET /v1/audit`` with 404 where this tree
  answers 200). Both servers run at once on one database, each claiming from its own software's table
  of the same :data:`CLAIM_IMAGES` images, in turns (this tree, before, this tree, before, ...;
  :data:`CLAIM_TURNS` turns of :data:`TURN_SECONDS` a side); the ratio is of the two medians. Printed
  beside it: each side's CPU per cycle (the API's and the client's over the measured time; MariaDB's,
  the process found by the server's ``@@pid_file``, over each whole turn, warm-up included, by the jobs
  done in it) and the audit entries this tree wrote during its turns, by the jobs it handed out meanwhile (both
  counted in MariaDB, warm-ups included; the other tree's turns must write none).
- ``erasure_images_per_second``: the images one ``POST /v1/erasures {"where": "origin = 'erase'"}``
  erases a second, from the receipt: ``erased / (finished_at - started_at)``, the server's own clock,
  from the request to the last step's commit. The server runs on MariaDB with its images in an S3 bucket
  served by ``rclone serve s3`` over a folder of this run (every image's object and thumbnail are files
  written there before rclone starts: a few bytes each, as an erasure never reads them). The database
  holds :data:`ERASE_IMAGES` images of origin ``erase`` (each with a job of two software: ``claims``, all
  done, and ``faces``, half done) and :data:`KEEP_IMAGES` of origin ``keep`` (each with a pending job of
  ``claims``), all inserted in bulk (``bulk.py``). The erasure runs while :data:`ERASE_CLIENTS` client
  threads claim (one job a claim) and submit from ``claims`` without pause, as they did before it
  started. Afterwards the run checks the work: the receipt says ``done`` with every image matched and
  erased, ``images`` and the job tables hold the ``keep`` images alone, and the served folder holds no
  file of an erased image and every file of a kept one (else it raises: no speed of wrong work).
- ``claim_p99_during_vs_without_erasure``: the 99th percentile of a claim request's latency (the claim
  alone, timed in the client; not the submit) among the claims sent while the erasure ran (between the
  receipt's ``started_at`` and ``finished_at``) over the same among the claims sent in the
  :data:`BASELINE_SECONDS` just before it and the :data:`BASELINE_SECONDS` just after it (taken together,
  so that a change in what else the machine does weighs on both sides), by the same threads, without a
  pause, on the same server and table. Printed beside it: the p50s, p99s and claim rates of both, the
  erasure's progress (how long its matching steps took, then the rate of each quarter of its erasing
  steps), the CPU each process kept busy in each window (the API, MariaDB, rclone, this client), in cores,
  and the server's warnings, if any.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_claims import RESULT_INFO, http_cycles
from bench_flow import _cpu_per_cycle
from bench_imports import ACCESS_KEY, SECRET_KEY, rclone_s3
from bulk import insert_images, insert_jobs
from harness import (
    MARIADB,
    Api,
    Figure,
    LoadResult,
    Server,
    cpu_seconds,
    drop_database,
    fresh_database,
    mariadb_pid,
    mysql,
    percentile,
    register,
    say,
    tree_of,
)

from heartbeat.db.models import JobStatus, job_table_name
from heartbeat.ingest.thumbnails import thumbnail_key

PRIVACY_DB = dataclasses.replace(MARIADB, database="heartbeat_bench_privacy")
BEFORE_PRIVACY = "888ea42"  # the parent of 80b513d, the commit that brought the audit and erasures
CLAIM_IMAGES = 40_000  # each side's pending jobs: more than either side claims in all its turns
CLAIM_CLIENTS = 16
CLAIM_TURNS, TURN_SECONDS = 6, 5.0
ERASE_IMAGES = 100_000
KEEP_IMAGES = 200_000  # pending jobs of `claims`: enough for the claims all through the erasure
ERASE_PREFIX, KEEP_PREFIX = "e", "k"  # image IDs: the prefix and 12 digits (bulk.py)
ERASE_ORIGIN, KEEP_ORIGIN = "erase", "keep"
CLAIMS, FACES = "claims", "faces"  # `claims` is claimed from throughout; `faces` has jobs of erased images alone
ERASE_CLIENTS = 16
BUCKET = "heartbeat"
OBJECT_BYTES = b"not a picture: an erasure never reads its bytes\n"
WARMUP_SECONDS = 2.0
BASELINE_SECONDS = 10.0
POLL_SECONDS = 0.5  # how often the receipt is read while the erasure runs
ERASURE_TIMEOUT_SECONDS = 3600.0


def privacy_figures(
    workdir: Path, free_port: Callable[[], int], *, erase_images: int = ERASE_IMAGES, keep_images: int = KEEP_IMAGES
) -> list[Figure]:
    """Both parts, one after the other on a database of their own (made anew for the erasure, whose
    check counts every image left)."""
    fresh_database(PRIVACY_DB)
    try:
        found = [claim_rate(workdir / "claims", (free_port(), free_port()))]
        fresh_database(PRIVACY_DB)
        found.extend(erasure_under_claims(workdir / "erasure", (free_port(), free_port()), erase_images, keep_images))
    finally:
        drop_database(PRIVACY_DB)
    return found


# --- the claim rate with and without the audit --------------------------------------------------


def audit_status(server: Server) -> int:
    """How the server answers ``GET /v1/audit`` (the tree before the privacy work: 404)."""
    api = Api(server)
    try:
        status, _ = api.request("GET", "/v1/audit?limit=1")
    finally:
        api.close()
    return status


def claim_rate(workdir: Path, ports: tuple[int, int]) -> Figure:
    before = tree_of(BEFORE_PRIVACY, workdir / "before")
    started = time.monotonic()
    with Server(PRIVACY_DB, workdir / "now", ports[0]) as now:  # it makes the tables, the audit's too
        with mysql(PRIVACY_DB) as connection:
            insert_images(connection, "a", 1, CLAIM_IMAGES)
        env = {"PYTHONPATH": str(before)}  # ahead of the editable install's path to this tree's src
        with Server(PRIVACY_DB, workdir / "before", ports[1], env=env) as then:
            register(now, "audit_now")
            register(then, "audit_before")
            statuses = audit_status(now), audit_status(then)
            if statuses != (200, 404):
                raise RuntimeError(
                    f"GET /v1/audit answered {statuses[0]} on this tree and {statuses[1]} on the server run from "
                    f"{before}: expected 200 and 404 (the tree before the audit)"
                )
            say(
                "privacy_claim_setup",
                f"{CLAIM_IMAGES} images, a software on each tree (this one, {BEFORE_PRIVACY}) "
                f"in {time.monotonic() - started:.0f} s",
            )
            rates: tuple[list[float], list[float]] = ([], [])
            loads: tuple[list[LoadResult], list[LoadResult]] = ([], [])
            database = mariadb_pid(PRIVACY_DB)
            database_seconds, done = [0.0, 0.0], [0, 0]  # MariaDB's CPU and the jobs done, each side, warm-ups too
            audit_rows = [0, 0]  # audit_entries, audit_images rows written during this tree's turns
            sides = ((now, "audit_now"), (then, "audit_before"))
            for _turn in range(CLAIM_TURNS):
                for side, ((server, software), rate, side_loads) in enumerate(zip(sides, rates, loads, strict=True)):
                    counted = _audit_counts(software)
                    cpu = cpu_seconds(database) if database else 0.0
                    load = http_cycles(server, software, threads=CLAIM_CLIENTS, seconds=TURN_SECONDS)
                    database_seconds[side] += (cpu_seconds(database) - cpu) if database else 0.0
                    if load.drained:
                        raise RuntimeError(f"{software} ran out of jobs: raise CLAIM_IMAGES")
                    rate.append(load.per_second)
                    # MariaDB's CPU is the one measured here, of the right server (see harness.mariadb_pid)
                    side_loads.append(dataclasses.replace(load, database_cpu_seconds=None))
                    changes = [after - before for after, before in zip(_audit_counts(software), counted, strict=True)]
                    done[side] += changes[2]
                    if server is now:
                        audit_rows = [audit_rows[0] + changes[0], audit_rows[1] + changes[1]]
                    elif changes[:2] != [0, 0]:
                        raise RuntimeError(f"audit rows were written during the turn of {BEFORE_PRIVACY}: {changes}")
    now_median, before_median = (statistics.median(rate) for rate in rates)
    say(
        "claim_http_audit",
        f"{now_median:.0f} cycles/s on this tree (turns: {_rates(rates[0])}), {before_median:.0f} before the audit "
        f"({BEFORE_PRIVACY}; turns: {_rates(rates[1])}); medians of {CLAIM_TURNS} turns of {TURN_SECONDS:g} s",
    )
    for side, (name, side_loads) in enumerate(zip(("now", "before"), loads, strict=True)):
        text = _cpu_per_cycle(side_loads)
        if database:
            text += f", MariaDB {database_seconds[side] * 1e3 / done[side]:.2f} ms/cycle (warm-ups included)"
        say(f"claim_http_audit_cpu_{name}", text)
    entries, images = audit_rows
    say(
        "claim_http_audit_entries",
        f"{entries} audit entries ({images} audit_images rows) written during this tree's turns, for {done[0]} "
        "jobs claimed and done in them (warm-ups included); none during the turns of the tree before",
    )
    if entries != done[0] or images != done[0]:
        raise RuntimeError(f"expected an audit entry and an audit_images row per claim of one job: {entries}, {images}")
    return Figure("claim_rate_with_vs_without_audit", now_median / before_median, ">= 0.9")


def _audit_counts(software: str) -> list[int]:
    """Rows of audit_entries and audit_images, and the done jobs of ``software``."""
    with mysql(PRIVACY_DB) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT COUNT(*) FROM audit_entries), (SELECT COUNT(*) FROM audit_images),"
            f" (SELECT COUNT(*) FROM `{job_table_name(software)}` WHERE status = %s)",
            (JobStatus.DONE.value,),
        )
        return [int(value) for value in cursor.fetchone()]


def _rates(values: list[float]) -> str:
    return ", ".join(f"{value:.0f}" for value in values)


# --- an erasure of 100,000 images from S3 while claims go on -------------------------------------


def _image_id(prefix: str, seq: int) -> str:
    return f"{prefix}{seq:012d}"  # as bulk.IMAGE_ID makes it


def _object_keys(image_id: str) -> tuple[str, str]:
    """The image's storage key as bulk.py writes it, and its thumbnail's."""
    return f"images/bench/{image_id}.jpg", thumbnail_key(image_id)


def write_objects(bucket_folder: Path, prefix: str, count: int) -> None:
    """A few bytes for each image's object and thumbnail, as files of the folder rclone serves as the bucket."""
    made: set[Path] = set()
    for seq in range(1, count + 1):
        for key in _object_keys(_image_id(prefix, seq)):
            path = bucket_folder / key
            if path.parent not in made:
                path.parent.mkdir(parents=True, exist_ok=True)
                made.add(path.parent)
            path.write_bytes(OBJECT_BYTES)


def stored_files(bucket_folder: Path) -> dict[str, int]:
    """The files of the served bucket, counted by the first letter of their name (an image ID's prefix)."""
    found: dict[str, int] = {}
    for _folder, _subfolders, files in os.walk(bucket_folder):
        for name in files:
            found[name[:1]] = found.get(name[:1], 0) + 1
    return found


class ClaimLoad:
    """``threads`` threads, each with its own keep-alive connection, claiming one job of ``software`` and
    submitting it, without pause, until :meth:`stop`; every claim's send time (``time.time()``, the server's
    clock on this machine) and latency (the claim request alone)."""

    def __init__(self, server: Server, software: str, threads: int):
        self._server = server
        self._software = software
        self._stopping = threading.Event()
        self._claims: list[list[tuple[float, float]]] = [[] for _ in range(threads)]
        self._errors: list[BaseException] = []
        self._ran_out = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, args=(index,), daemon=True, name=f"claims-{index}")
            for index in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def _work(self, index: int) -> None:
        api = Api(self._server)
        claim_path = f"/v1/software/{self._software}/claim"
        record = self._claims[index]
        try:
            while not self._stopping.is_set():
                sent, started = time.time(), time.perf_counter()
                jobs = api.call("POST", claim_path, {"max": 1})["jobs"]
                took = time.perf_counter() - started
                if not jobs:
                    self._ran_out.set()
                    return
                record.append((sent, took))
                job = jobs[0]
                path = f"/v1/software/{self._software}/jobs/{job['image_id']}/result"
                api.call("PUT", path, {"token": job["token"], "info": RESULT_INFO})
        except BaseException as error:
            self._errors.append(error)
        finally:
            api.close()

    def check(self) -> None:
        """Raise if a thread failed or the jobs ran out: the load is no longer what it was."""
        if self._errors:
            raise RuntimeError(f"a claim thread failed: {self._errors[0]!r}") from self._errors[0]
        if self._ran_out.is_set():
            raise RuntimeError(f"{self._software} ran out of pending jobs: raise KEEP_IMAGES")

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(60)
        self.check()

    def latencies(self, start: float, end: float) -> list[float]:
        """The latencies of the claims sent from ``start`` to ``end`` (``time.time()``)."""
        return [took for record in self._claims for sent, took in record if start <= sent < end]


class CpuSnapshot:
    """CPU seconds used so far by the API, MariaDB (when local), rclone and this process, and when."""

    def __init__(self, pids: dict[str, int | None]):
        self.at = time.monotonic()
        self.seconds = {name: cpu_seconds(pid) for name, pid in pids.items() if pid is not None}
        self.seconds["client"] = time.process_time()


def describe_cores(*windows: tuple[CpuSnapshot, CpuSnapshot]) -> str:
    """The cores each process kept busy over these windows (from, until) taken together."""
    wall = sum(until.at - start.at for start, until in windows)
    names = windows[0][0].seconds
    used = {name: sum(until.seconds[name] - start.seconds[name] for start, until in windows) for name in names}
    return ", ".join(f"{name} {seconds / wall:.2f}" for name, seconds in used.items())


def _describe_latencies(latencies: list[float], seconds: float) -> str:
    return (
        f"p50 {percentile(latencies, 0.5) * 1e3:.1f} ms, p99 {percentile(latencies, 0.99) * 1e3:.1f} ms, "
        f"max {max(latencies) * 1e3:.0f} ms over {len(latencies)} claims ({len(latencies) / seconds:.0f}/s)"
    )


def erasure_under_claims(workdir: Path, ports: tuple[int, int], erase_images: int, keep_images: int) -> list[Figure]:
    served = workdir / "served"
    bucket_folder = served / BUCKET
    started = time.monotonic()
    write_objects(bucket_folder, ERASE_PREFIX, erase_images)
    write_objects(bucket_folder, KEEP_PREFIX, keep_images)
    files_seconds = time.monotonic() - started
    s3_port, api_port = ports
    s3_flags = (
        *("--storage", f"s3://{BUCKET}", "--s3-endpoint", f"http://127.0.0.1:{s3_port}"),
        *("--s3-access-key", ACCESS_KEY, "--s3-secret-key", SECRET_KEY),
    )
    with (
        rclone_s3(served, s3_port) as (_client, rclone_pid),
        Server(PRIVACY_DB, workdir, api_port, *s3_flags) as server,
    ):
        started = time.monotonic()
        register(server, CLAIMS)  # no images yet: nothing to backfill
        register(server, FACES)
        with mysql(PRIVACY_DB) as connection, connection.cursor() as cursor:
            insert_images(connection, ERASE_PREFIX, 1, erase_images)
            insert_images(connection, KEEP_PREFIX, 1, keep_images)
            for prefix, origin in ((ERASE_PREFIX, ERASE_ORIGIN), (KEEP_PREFIX, KEEP_ORIGIN)):
                cursor.execute("UPDATE images SET origin = %s WHERE id LIKE %s", (origin, f"{prefix}%"))
            insert_jobs(connection, CLAIMS, ERASE_PREFIX, 1, erase_images, done_through=erase_images)
            insert_jobs(connection, CLAIMS, KEEP_PREFIX, 1, keep_images, done_through=0)
            insert_jobs(connection, FACES, ERASE_PREFIX, 1, erase_images, done_through=erase_images // 2)
            cursor.execute(f"ANALYZE TABLE images, `{job_table_name(CLAIMS)}`, `{job_table_name(FACES)}`")
            cursor.fetchall()
        say(
            "erasure_setup",
            f"{erase_images} images to erase (jobs: {CLAIMS} all done, {FACES} half done) and {keep_images} to keep "
            f"(a pending {CLAIMS} job each); their {2 * (erase_images + keep_images)} objects written as files in "
            f"{files_seconds:.0f} s, the rows in {time.monotonic() - started:.0f} s; S3 by rclone serve s3",
        )
        pids = {"API": server.pid, "MariaDB": mariadb_pid(PRIVACY_DB), "rclone": rclone_pid}
        api = Api(server, timeout_seconds=600)
        load = ClaimLoad(server, CLAIMS, ERASE_CLIENTS)
        try:
            time.sleep(WARMUP_SECONDS)
            baseline_start, baseline_cpu = time.time(), CpuSnapshot(pids)
            time.sleep(BASELINE_SECONDS)
            load.check()
            baseline_end, erasure_cpu = time.time(), CpuSnapshot(pids)
            posted = time.monotonic()
            receipt = api.call("POST", "/v1/erasures", {"where": f"origin = '{ERASE_ORIGIN}'"}, expect=202)
            progress = [(time.monotonic() - posted, receipt["matched"], receipt["erased"])]
            while receipt["status"] != "done":
                if time.monotonic() - posted > ERASURE_TIMEOUT_SECONDS:
                    raise RuntimeError(f"the erasure did not finish in {ERASURE_TIMEOUT_SECONDS:g} s: {receipt}")
                load.check()
                time.sleep(POLL_SECONDS)
                receipt = api.call("GET", f"/v1/erasures/{receipt['id']}")
                progress.append((time.monotonic() - posted, receipt["matched"], receipt["erased"]))
            wall = time.monotonic() - posted
            erased_cpu = CpuSnapshot(pids)
            after_start, after_cpu = time.time(), erased_cpu
            time.sleep(BASELINE_SECONDS)
            load.check()
            after_end, ended_cpu = time.time(), CpuSnapshot(pids)
        finally:
            load.stop()
            api.close()
        log_lines = server.log_path.read_text(errors="replace").splitlines()
        queued = sum(1 for line in log_lines if "waitress.queue: Task queue depth" in line)
        warnings = [
            line for line in log_lines if (" WARNING " in line or " ERROR " in line) and "waitress.queue" not in line
        ]
    baseline = load.latencies(baseline_start, baseline_end) + load.latencies(after_start, after_end)
    during = load.latencies(receipt["started_at"], receipt["finished_at"])
    erasure_seconds = receipt["finished_at"] - receipt["started_at"]
    check_erasure(receipt, bucket_folder, erase_images, keep_images)
    rate = receipt["erased"] / erasure_seconds
    say(
        "erasure",
        f"{receipt['erased']} images erased in {erasure_seconds:.1f} s by the receipt ({wall:.1f} s from the POST "
        f"to the poll that read done): {rate:.0f} images/s; receipt {receipt}",
    )
    say("erasure_progress", describe_progress(progress))
    baseline_seconds = baseline_end - baseline_start + after_end - after_start
    say("erasure_claim_without", _describe_latencies(baseline, baseline_seconds) + " (before and after it)")
    say("erasure_claim_during", _describe_latencies(during, erasure_seconds))
    say(
        "erasure_cpu_cores_without",
        describe_cores((baseline_cpu, erasure_cpu), (after_cpu, ended_cpu)) + " (before and after it)",
    )
    say("erasure_cpu_cores_during", describe_cores((erasure_cpu, erased_cpu)))
    say(
        "erasure_server_log",
        f"{queued} times waitress said a request waited for a thread ({ERASE_CLIENTS} clients and the poll); "
        + (f"{len(warnings)} other warnings or errors, the last: {warnings[-1]}" if warnings else "no other warning"),
    )
    return [
        Figure("erasure_images_per_second", rate, ""),
        Figure("claim_p99_during_vs_without_erasure", percentile(during, 0.99) / percentile(baseline, 0.99), "<= 2"),
    ]


def describe_progress(progress: list[tuple[float, int, int]]) -> str:
    """When the matching ended (the receipt's ``matched`` at its last value: every matching step comes
    first), then the rate of each quarter of the erasing steps, as the polls of the receipt saw them."""
    total = progress[-1][2]
    matched_at = next(at for at, matched, _erased in progress if matched == progress[-1][1])
    text = f"matched all by {matched_at:.1f} s (polled every {POLL_SECONDS:g} s)"
    rates, last_at, last_erased = [], matched_at, 0
    for quarter in (1, 2, 3, 4):
        at, erased = next((at, erased) for at, _matched, erased in progress if erased >= total * quarter / 4)
        rates.append(f"{(erased - last_erased) / max(at - last_at, 1e-9):.0f}")
        last_at, last_erased = at, erased
    return text + f"; then images erased a second in each quarter of the erasing: {', '.join(rates)}"


def check_erasure(receipt: dict[str, Any], bucket_folder: Path, erase_images: int, keep_images: int) -> None:
    """Raise unless the erasure did its whole work and nothing more (see the module's docstring)."""
    problems = []
    if (receipt["status"], receipt["matched"], receipt["erased"]) != ("done", erase_images, erase_images):
        problems.append(f"the receipt says {receipt}, not done with {erase_images} matched and erased")
    with mysql(PRIVACY_DB) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT origin, COUNT(*) FROM images GROUP BY origin")
        origins = {origin: int(count) for origin, count in cursor.fetchall()}
        if origins != {KEEP_ORIGIN: keep_images}:
            problems.append(f"images left by origin: {origins}, not {keep_images} {KEEP_ORIGIN!r} alone")
        for software, expected in ((CLAIMS, keep_images), (FACES, 0)):
            table = job_table_name(software)
            cursor.execute(f"SELECT COUNT(*), SUM(image_id LIKE %s) FROM `{table}`", (f"{KEEP_PREFIX}%",))
            total, kept = cursor.fetchone()
            if (int(total), int(kept or 0)) != (expected, expected):
                problems.append(f"{software} has {total} jobs ({kept} of kept images), not {expected} of kept ones")
    files = stored_files(bucket_folder)
    if files != {KEEP_PREFIX: 2 * keep_images}:
        problems.append(f"the bucket's files by prefix: {files}, not {2 * keep_images} of the kept images alone")
    if problems:
        raise RuntimeError("the erasure did not do its work: " + "; ".join(problems))
