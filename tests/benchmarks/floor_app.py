"""The floor of this stack: a bare Falcon app on waitress that runs the statements Heartbeat's claim
and submit run, behind the same routes, and nothing else.

Run as ``python floor_app.py --port P --db-auth FILE [--threads 16]``; ``bench_floor.py`` starts it.
Each request takes a pooled PyMySQL connection (one per waitress thread, as Heartbeat's pool gives
one) and runs, in order, what MariaDB's general log shows Heartbeat run for a software without
limits and without pipelines (the texts are Heartbeat's own where it has them as text: the
candidate query of :class:`heartbeat.queue.statements.JobTable`):

claim (``POST /v1/software/{name}/claim``): the token check, BEGIN, the software's settings (a share
lock), the candidate (``FOR UPDATE SKIP LOCKED``), the lease's UPDATE, COMMIT, the image's row;

submit (``PUT /v1/software/{name}/jobs/{image_id}/result``): the token check, BEGIN, the job's row
(``FOR UPDATE``), the settings (a share lock), the UPDATE to done, the counter's UPDATE, the
``job.done`` event's INSERT, the registry's ``after`` read (pipelines), COMMIT.

listing (``GET /v1/images?where=...``, with ``--query FILE``): the token check, the registry read, and
the page's statement that Heartbeat's own code made for the expression (``bench_results.sql_of``,
written to FILE as ``{"sql", "params"}``); its first 100 rows as JSON objects.

What it leaves out is what Heartbeat's ratio to it measures: middleware (request log, metrics,
security headers, the connection guard), the token and open-server rules in Python, JSON schema
checks, peewee, URL signing, the registry's and the outbox's Python, error mapping.
"""

from __future__ import annotations

import argparse
import json
import secrets
import threading
import time
from typing import Any

import falcon
import pymysql
import waitress

from heartbeat.catalog.images import IMAGE_COLUMNS  # the page's columns, in the order Heartbeat selects them
from heartbeat.db.models import JobStatus, Stage, job_table_name

LEASE_SECONDS = 600
LOCAL = threading.local()


def connection(auth: dict[str, Any]) -> pymysql.Connection:
    if getattr(LOCAL, "connection", None) is None:
        LOCAL.connection = pymysql.connect(
            host=auth["host"],
            port=auth["port"],
            user=auth["user"],
            password=auth["password"],
            database=auth["database"],
            autocommit=True,
        )
    return LOCAL.connection


def candidate_sql(table: str) -> str:
    """Heartbeat's own candidate query, with PyMySQL's parameter marker."""
    return (
        f"SELECT image_id, status, token, attempts FROM `{table}`"
        f" WHERE stage = {int(Stage.READY)} AND available_at <= %s"
        " ORDER BY sort_priority, uploaded_date, image_id LIMIT %s FOR UPDATE SKIP LOCKED"
    )


SETTINGS = (
    "SELECT paused, version, lease_seconds, max_attempts, recompute, max_in_flight, rate_limit, rate_window"
    " FROM `software` WHERE name = %s LOCK IN SHARE MODE"
)
TOKENS = "SELECT 1 FROM `api_tokens` LIMIT 1"
IMAGE = (
    "SELECT id, filename, uploaded_date, origin, other_data, sha256, size, content_type, width, height,"
    " storage_key, priority, orientation FROM `images` WHERE id IN (%s)"
)
JOB = (
    "SELECT image_id, status, info, attempts, claimed_at, lease_expires_at, finished_at, error, version,"
    " claimed_version, token FROM `{table}` WHERE image_id IN (%s) FOR UPDATE"
)
TAKE = (
    "UPDATE `{table}` SET status = 'claimed', attempts = attempts + 1, claimed_at = %s, lease_expires_at = %s,"
    " available_at = %s, claimed_version = %s, error = NULL, token = CASE image_id WHEN %s THEN %s END"
    f" WHERE image_id IN (%s) AND stage = {int(Stage.READY)} AND available_at <= %s"
)
DONE = (
    f"UPDATE `{{table}}` SET status = 'done', stage = {int(Stage.FINISHED)}, error = NULL, finished_at = %s,"
    " version = claimed_version, info = CASE image_id WHEN %s THEN %s END"
    " WHERE image_id IN (%s) AND token = CASE image_id WHEN %s THEN %s END AND status = 'claimed'"
)
COUNT = (
    "UPDATE `job_counts` SET count = count + CASE status WHEN 'open' THEN -1 WHEN %s THEN 1 END"
    " WHERE software = %s AND slot = %s AND status IN ('open', %s)"
)
EVENT = "INSERT INTO `events` (type, time, software, image_id, data) VALUES ('job.done', %s, %s, %s, %s)"
REGISTRY_AFTER = "SELECT name, after FROM `software`"
REGISTRY = (
    "SELECT id, name, lease_seconds, max_attempts, tables, created_at, paused, after, origins, version, recompute,"
    " max_in_flight, rate_limit, rate_window FROM `software` ORDER BY name"
)
PAGE = 100


class Claim:
    def __init__(self, auth: dict[str, Any]):
        self._auth = auth

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        media = req.get_media(default_when_empty={})
        wanted = int(media.get("max", 1))
        table = job_table_name(name)
        db = connection(self._auth)
        with db.cursor() as cursor:
            cursor.execute(TOKENS)
            cursor.fetchall()
            db.begin()
            cursor.execute(SETTINGS, (name,))
            _paused, version, lease_seconds, *_ = cursor.fetchone()
            now = time.time()
            cursor.execute(candidate_sql(table), (now, wanted))
            rows = cursor.fetchall()
            jobs = []
            for image_id, _status, _token, attempts in rows:
                token = secrets.token_urlsafe(24)
                expires = now + (lease_seconds or LEASE_SECONDS)
                values = (now, expires, expires, version, image_id, token, image_id, now)
                cursor.execute(TAKE.format(table=table), values)
                jobs.append((image_id, token, attempts + 1, expires, version))
            db.commit()
            images = {}
            if jobs:
                cursor.execute(IMAGE, (jobs[0][0],))
                images = {row[0]: row for row in cursor.fetchall()}
        resp.media = {
            "jobs": [
                {
                    "image_id": image_id,
                    "token": token,
                    "attempt": attempt,
                    "lease_expires_at": expires,
                    "version": version,
                    "url": f"/blobs/{images[image_id][10]}",
                    "image": {"id": image_id, "filename": images[image_id][1], "uploaded_date": images[image_id][2]},
                }
                for image_id, token, attempt, expires, version in jobs
                if image_id in images
            ]
        }


class Result:
    def __init__(self, auth: dict[str, Any]):
        self._auth = auth

    def on_put(self, req: falcon.Request, resp: falcon.Response, name: str, image_id: str) -> None:
        media = req.get_media()
        table = job_table_name(name)
        info = json.dumps(media["info"], separators=(",", ":"))
        db = connection(self._auth)
        with db.cursor() as cursor:
            cursor.execute(TOKENS)
            cursor.fetchall()
            db.begin()
            cursor.execute(JOB.format(table=table), (image_id,))
            row = cursor.fetchone()
            cursor.execute(SETTINGS, (name,))
            version = cursor.fetchone()[1]
            now = time.time()
            done = cursor.execute(DONE.format(table=table), (now, image_id, info, image_id, image_id, media["token"]))
            if done != 1:
                db.rollback()
                raise falcon.HTTPConflict(description="stale token")
            counter = f"done@{row[9]}"
            cursor.execute(COUNT, (counter, name, secrets.randbelow(16), counter))
            data = json.dumps({"status": "done", "version": version, "attempt": row[3], "info": media["info"]})
            cursor.execute(EVENT, (now, name, image_id, data))
            cursor.execute(REGISTRY_AFTER)
            cursor.fetchall()
            db.commit()
        resp.media = {"image_id": image_id, "status": JobStatus.DONE.value, "version": row[9], "finished_at": now}


class Images:
    """The listing: one page of the statement in ``statement`` (``{"sql", "params"}``), whatever the query string."""

    def __init__(self, auth: dict[str, Any], statement: dict[str, Any]):
        self._auth = auth
        # as Heartbeat sends a listing's statement: under the database's time limit (``db/engines.py``)
        self._sql = "SET STATEMENT max_statement_time=30.000000 FOR " + statement["sql"]
        self._params = tuple(statement["params"])

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        db = connection(self._auth)
        with db.cursor() as cursor:
            cursor.execute(TOKENS)
            cursor.fetchall()
            cursor.execute(REGISTRY)
            cursor.fetchall()
            cursor.execute(self._sql, self._params)
            rows = cursor.fetchall()
        images = []
        for row in rows[:PAGE]:
            image = dict(zip(IMAGE_COLUMNS, row, strict=True))
            image["other_data"] = None if image["other_data"] is None else json.loads(image["other_data"])
            images.append(image)
        resp.media = {"images": images, "next_cursor": images[-1]["id"] if len(rows) > PAGE else None}


class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db-auth", required=True)
    parser.add_argument("--threads", type=int, default=16)  # heartbeat serve's default
    parser.add_argument("--query", help="a JSON file: the listing's statement, {sql, params}")
    args = parser.parse_args()
    with open(args.db_auth) as file:
        auth = json.load(file)
    app = falcon.App()
    app.add_route("/v1/health", Health())
    app.add_route("/v1/software/{name}/claim", Claim(auth))
    app.add_route("/v1/software/{name}/jobs/{image_id}/result", Result(auth))
    if args.query:
        with open(args.query) as file:
            app.add_route("/v1/images", Images(auth, json.load(file)))
    waitress.serve(app, host="127.0.0.1", port=args.port, threads=args.threads, _quiet=True)


if __name__ == "__main__":
    main()
