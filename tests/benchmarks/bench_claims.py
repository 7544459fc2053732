"""Claim and submit: through the HTTP API, straight in SQL, and the naive claim of the 2019 original.

``claim_http_vs_sql`` divides the HTTP rate by the SQL rate. The comparison is fair in this way:
both sides run in this one Python process with the same number of threads (16), each thread holding
one persistent connection (an HTTP keep-alive connection to ``heartbeat serve``, or a PyMySQL
connection to MariaDB, the client library the API itself uses), both work on the same database, each
on its own software's job table made the same way (a job per image of the same images), and both are
measured for the same time after the same warm-up. The SQL side runs the statements the API cannot do
without, as ``heartbeat.queue`` writes them:

1. the claim, one transaction: the ``SELECT ... FOR UPDATE SKIP LOCKED`` of the earliest claimable
   job along the claim index, then the conditional ``UPDATE`` that takes it (state and token checked);
2. the image's row, which the claim's answer carries;
3. the submit: the conditional ``UPDATE`` to ``done`` (token and state checked), in autocommit.

Everything else the API does per request (the registry and token reads, the row read back after the
submit, the access log, JSON, HTTP) is what the ratio measures.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import secrets
import threading
import time
from typing import Any

import pymysql
from harness import Api, LoadResult, Server, mysql, run_load

from heartbeat.config import DbAuth
from heartbeat.db.models import Stage, job_table_name
from heartbeat.queue import LEASE_EXPIRED

LEASE_SECONDS = 600
RESULT_INFO = {"faces": [{"x": 10, "y": 8, "w": 20, "h": 20}]}

CANDIDATE = (
    "SELECT image_id, status, token, attempts FROM `{table}`"
    f" WHERE stage = {int(Stage.READY)} AND available_at <= %s"
    " ORDER BY sort_priority, uploaded_date, image_id LIMIT 1 FOR UPDATE SKIP LOCKED"
)
TAKE = (
    "UPDATE `{table}` SET status = 'claimed', token = %s, attempts = attempts + 1, claimed_at = %s,"
    " lease_expires_at = %s, available_at = %s, error = NULL"
    f" WHERE image_id = %s AND status = %s AND stage = {int(Stage.READY)} AND available_at <= %s"
    " AND token <=> %s"
)
IMAGE_ROW = "SELECT * FROM images WHERE id = %s"
SUBMIT = (
    f"UPDATE `{{table}}` SET status = 'done', stage = {int(Stage.FINISHED)}, info = %s, error = NULL,"
    " finished_at = %s WHERE image_id = %s AND token = %s"
    f" AND (status = 'claimed' OR (status = 'failed' AND error = '{LEASE_EXPIRED}'))"
)

# The 2019 original: the earliest pending row, then an UPDATE of it; no lock, no condition.
NAIVE_SELECT = (
    f"SELECT image_id FROM `{{table}}` WHERE stage = {int(Stage.READY)} AND status = 'pending'"
    " ORDER BY sort_priority, uploaded_date, image_id LIMIT 1"
)
NAIVE_TAKE = "UPDATE `{table}` SET status = 'claimed', token = %s, attempts = attempts + 1 WHERE image_id = %s"
NAIVE_DONE = f"UPDATE `{{table}}` SET status = 'done', stage = {int(Stage.FINISHED)}, info = %s WHERE image_id = %s"


def _statements(software: str, *templates: str) -> list[str]:
    return [template.format(table=job_table_name(software)) for template in templates]


def sql_cycles(auth: DbAuth, software: str, *, threads: int, seconds: float) -> LoadResult:
    """Claim+submit cycles per second, each cycle the API's own statements (see the module's docstring)."""
    candidate, take, image_row, submit = _statements(software, CANDIDATE, TAKE, IMAGE_ROW, SUBMIT)
    info = json.dumps(RESULT_INFO, separators=(",", ":"))

    def cycle(connection: pymysql.Connection) -> int | None:
        with connection.cursor() as cursor:
            now = time.time()
            connection.begin()
            cursor.execute(candidate, (now,))
            row = cursor.fetchone()
            if row is None:
                connection.commit()
                return None
            image_id, status, old_token, _attempts = row
            token = secrets.token_urlsafe(24)
            expires = now + LEASE_SECONDS
            taken = cursor.execute(take, (token, now, expires, expires, image_id, status, now, old_token))
            connection.commit()
            if taken != 1:
                return 0
            cursor.execute(image_row, (image_id,))
            cursor.fetchone()
            if cursor.execute(submit, (info, time.time(), image_id, token)) != 1:
                raise RuntimeError(f"the submit of {image_id} changed nothing")
        return 1

    return run_load(threads, lambda: mysql(auth), cycle, seconds=seconds)


def http_cycles(
    server: Server, software: str, *, threads: int, seconds: float, max_jobs: int = 1, warmup_seconds: float = 1
) -> LoadResult:
    """Images per second claimed and submitted over HTTP: ``max_jobs`` per claim, submitted one by one
    (``PUT .../result``) when it is 1, else all at once (``POST .../results``)."""
    claim_path = f"/v1/software/{software}/claim"

    def cycle(api: Api) -> int | None:
        jobs = api.call("POST", claim_path, {"max": max_jobs})["jobs"]
        if not jobs:
            return None
        if max_jobs == 1:
            job = jobs[0]
            path = f"/v1/software/{software}/jobs/{job['image_id']}/result"
            api.call("PUT", path, {"token": job["token"], "info": RESULT_INFO})
            return 1
        results = [{"image_id": job["image_id"], "token": job["token"], "info": RESULT_INFO} for job in jobs]
        answer = api.call("POST", f"/v1/software/{software}/results", {"results": results})
        return sum(1 for result in answer["results"] if result["status"] == "done")

    return run_load(threads, lambda: Api(server), cycle, seconds=seconds, warmup_seconds=warmup_seconds, server=server)


@dataclasses.dataclass
class NaiveOutcome:
    result: LoadResult
    handed_out: int
    images: int
    handed_out_twice: int  # images given to more than one worker


def naive_2019(auth: DbAuth, software: str, *, threads: int, seconds: float) -> NaiveOutcome:
    """The 2019 claim under the same concurrency: how often it hands one image to two workers."""
    select, take, done = _statements(software, NAIVE_SELECT, NAIVE_TAKE, NAIVE_DONE)
    handed: list[str] = []
    lock = threading.Lock()
    info = json.dumps(RESULT_INFO)

    def cycle(connection: pymysql.Connection) -> int | None:
        with connection.cursor() as cursor:
            cursor.execute(select)
            row = cursor.fetchone()
            if row is None:
                return None
            cursor.execute(take, (secrets.token_urlsafe(24), row[0]))
            with lock:
                handed.append(row[0])
            cursor.execute(done, (info, row[0]))
        return 1

    result = run_load(threads, lambda: mysql(auth), cycle, seconds=seconds, warmup_seconds=0)
    counts: collections.Counter[Any] = collections.Counter(handed)
    twice = sum(1 for count in counts.values() if count > 1)
    return NaiveOutcome(result, len(handed), len(counts), twice)


def pipeline_check_cpu_seconds(server: Server, software: str, workdir: Any, calls: int = 2000) -> float:
    """CPU seconds per call of what pipelines add to each submit of a software without dependencies:
    ``Pipelines.downstream_closure`` (``queue/pipeline.py``), one short SELECT of every software's
    ``after`` (a claim of such a software runs no pipeline statement at all). Run here, in this
    process, on the same MariaDB."""
    from heartbeat.db.connect import connect
    from heartbeat.db.models import Software
    from heartbeat.queue import JobQueue

    database = connect(data_dir=workdir, db_auth=server.auth)
    downstream_closure = JobQueue(database, time.time).pipelines.downstream_closure  # what each submit runs
    with database.connection():
        row = Software.get(Software.name == software)
        downstream_closure(row)  # warm
        started = time.process_time()
        for _ in range(calls):
            downstream_closure(row)
        return (time.process_time() - started) / calls
