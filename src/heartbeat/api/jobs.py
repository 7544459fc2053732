"""The worker protocol: claim, extend, submit (one or a batch), fail, release, and reading jobs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import falcon
import peewee

from heartbeat import jsontext
from heartbeat.api import schemas
from heartbeat.api.components import RETRY_AFTER, STRING_OR_NULL, obj, page, paging, ref
from heartbeat.api.components import query as parameter
from heartbeat.api.errors import status_of
from heartbeat.api.params import check, check_storable, page_limit, query, read_body, signed_url_base, token_of
from heartbeat.api.routing import Operation, Parts, Reply, Route, json_body
from heartbeat.auth.roles import Access
from heartbeat.catalog.images import Catalog, describe_image
from heartbeat.catalog.registry import Registry
from heartbeat.config import Settings
from heartbeat.db.database import Database
from heartbeat.db.models import JobStatus, Software
from heartbeat.db.paging import UPLOAD_ORDER
from heartbeat.errors import HeartbeatError, StaleToken
from heartbeat.metrics import Metrics
from heartbeat.privacy import actions
from heartbeat.privacy.audit import Audit
from heartbeat.queue import ClaimedJob, JobQueue, PreparedResult, Verdict, WaitingClaim, describe_job
from heartbeat.queue.waiting import WaitingClaims
from heartbeat.storage import Storage

log = logging.getLogger(__name__)

CONTENDED_RETRY_AFTER_SECONDS = 1  # a claim that lost to other transactions each time: ask again then

CLAIMED = Reply(
    200,
    obj({"jobs": {"type": "array", "items": ref("ClaimedJob")}}),
    headers={
        "Retry-After": RETRY_AFTER | {"description": "with no jobs: no room to wait; claim again after this long"}
    },
)

JUDGED = obj(
    {
        "results": {
            "type": "array",
            "items": obj(
                {
                    "image_id": STRING_OR_NULL,
                    "status": {"enum": [str(verdict) for verdict in Verdict]},
                    "description": {"type": "string"},
                },
                ("image_id", "status"),
            ),
        }
    }
)


class JobClaims:
    """``POST /v1/software/{name}/claim``: lease jobs, or wait up to ``wait_seconds`` for one.

    Waiting is bounded per process by :class:`WaitingClaims`; a claim that finds no job and no room to
    wait is answered at once with ``{"jobs": []}`` and a ``Retry-After`` header.
    """

    def __init__(
        self,
        registry: Registry,
        queue: JobQueue,
        catalog: Catalog,
        waiting: WaitingClaims,
        storage: Storage,
        settings: Settings,
        metrics: Metrics,
        audit: Audit,
    ):
        self._metrics = metrics
        self._audit = audit
        self._registry = registry
        self._queue = queue
        self._catalog = catalog
        self._waiting = waiting
        self._storage = storage
        self._settings = settings

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        media = read_body(req, schemas.CLAIM, optional=True)
        software = self._registry.get(name)
        max_jobs, lease_seconds = int(media.get("max", 1)), media.get("lease_seconds")
        wait_seconds = float(media.get("wait_seconds", 0))
        deadline = time.monotonic() + wait_seconds
        generation = self._queue.signal.generation(name)
        claimed: list[ClaimedJob] = []
        held_back: int | None = None  # a software at its limit (flow control): when room is expected
        # A paused software's claim finds nothing, and waits as if there were no work.
        recorded: set[str] = set()  # jobs whose audit entry committed with their lease

        def record(image_ids: list[str]) -> None:  # inside the claim's transaction
            self._audit.record(actions.CLAIM, token_of(req), image_ids, software=name)
            self._audit.after_commit(lambda: recorded.update(image_ids))

        if not (wait_seconds and self._waiting.known_empty(software)):
            claimed, held_back = self._claim(software, max_jobs, lease_seconds, record)
        if not claimed and held_back is not None and not wait_seconds:
            resp.set_header("Retry-After", str(held_back))
        if not claimed and wait_seconds:
            if self._waiting.enter(software):
                self._metrics.claims_waiting.inc()
                try:
                    claimed, held_back = self._wait(
                        software, max_jobs, lease_seconds, generation, deadline, held_back, record
                    )
                finally:
                    self._waiting.leave(software)
                    self._metrics.claims_waiting.dec()
                if not claimed and held_back is not None:  # held back all along: when room is expected
                    resp.set_header("Retry-After", str(held_back))
            else:
                self._metrics.claims_turned_away.labels(name).inc()
                resp.set_header("Retry-After", str(self._waiting.retry_after(wait_seconds)))
        self._metrics.claims.labels(name).inc(len(claimed))
        described = self._describe(req, software, claimed)
        handed_over = [job["image_id"] for job in described if job["image_id"] not in recorded]
        if handed_over:  # leased by another request's transaction (a submit freeing room): recorded now
            self._audit.record(actions.CLAIM, token_of(req), handed_over, software=name)
        resp.media = {"jobs": described}

    def _claim(
        self,
        software: Software,
        max_jobs: int,
        lease_seconds: int | None,
        record: Callable[[list[str]], None] | None = None,
    ) -> tuple[list[ClaimedJob], int | None]:
        """The jobs claimed, and for a software held back by its limit, when room is expected (seconds).
        A claim that lost to other transactions every time it ran (a deadlock, or a Galera
        certification conflict between nodes) claimed nothing: no jobs, to be asked again in a second."""
        try:
            outcome = self._queue.claims.claim(
                software, max_jobs=max_jobs, lease_seconds=lease_seconds, on_leased=record
            )
        except peewee.OperationalError as error:
            if Database.fault(error) != "contention":
                raise
            log.info("claim of %s lost to other transactions each time: answered with none", software.name)
            return [], CONTENDED_RETRY_AFTER_SECONDS
        self._metrics.lease_expiries.labels(software.name).inc(outcome.expired_leases)
        return outcome.jobs, outcome.retry_after

    def _wait(
        self,
        software: Software,
        max_jobs: int,
        lease_seconds: int | None,
        generation: int,
        deadline: float,
        held_back: int | None,
        record: Callable[[list[str]], None] | None = None,
    ) -> tuple[list[ClaimedJob], int | None]:
        """Claim each time the software is woken (by this process's work, or by the watcher) until a
        claim gets jobs or the deadline passes; with none, whether the software was held back by its
        limit at the last look (when room is expected, seconds). A software with ``max_in_flight``:
        wait in its line meanwhile, where a submit that frees room hands jobs over (``queue/handoff.py``)."""
        signal = self._queue.signal
        line = WaitingClaim(software.name, max_jobs, lease_seconds) if software.max_in_flight is not None else None
        claimed: list[ClaimedJob] = []
        try:
            if line is not None:
                signal.join(line)
            while signal.wait(software.name, generation, deadline - time.monotonic(), line):
                if line is not None:
                    claimed = signal.leave(line)  # out of line while it claims: never jobs from both
                if claimed or self._waiting.closing:
                    break
                generation = signal.generation(software.name)
                claimed, held_back = self._claim(software, max_jobs, lease_seconds, record)
                if claimed:
                    break
                if line is not None:
                    signal.join(line)
        finally:
            if line is not None:
                claimed += signal.leave(line)  # handed over as the wait ended
        return claimed, None if claimed else held_back

    def _describe(self, req: falcon.Request, software: Software, claimed: list[ClaimedJob]) -> list[dict[str, Any]]:
        image_ids = [job.image_id for job in claimed]
        images = self._catalog.by_id(image_ids)
        upstream = self._queue.reads.upstream_results(software, image_ids) if software.after else {}
        described = []
        for job in claimed:
            image = images.get(job.image_id)
            if image is None:
                continue  # deleted between the claim and now: its job went with it
            signed = self._storage.presigned_get(
                image.storage_key,
                expires_seconds=self._settings.signed_url_seconds,
                base_url=signed_url_base(req, self._settings.public_url),
            )
            described.append(
                {
                    "image_id": job.image_id,
                    "token": job.token,
                    "attempt": job.attempt,
                    "lease_expires_at": job.lease_expires_at,
                    "version": job.version,
                    "url": signed.url,
                    "url_expires_at": signed.expires_at,
                    "image": describe_image(image),
                }
                | ({"upstream": upstream[job.image_id]} if software.after else {})
            )
        return described


class JobCollection:
    def __init__(self, registry: Registry, queue: JobQueue):
        self._registry = registry
        self._queue = queue

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        software = self._registry.get(name)
        status = query(req, "status", schemas.JOB_STATUS)
        rows, next_cursor = self._queue.reads.page(
            software,
            status=None if status is None else JobStatus(status),
            version=query(req, "version", schemas.VERSION),
            cursor=req.get_param("cursor"),
            limit=page_limit(req),
        )
        resp.media = {"jobs": [describe_job(row) for row in rows], "next_cursor": next_cursor}


class JobItem:
    def __init__(self, registry: Registry, queue: JobQueue, metrics: Metrics):
        self._registry = registry
        self._queue = queue
        self._metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str, image_id: str) -> None:
        resp.media = describe_job(self._queue.get(self._registry.get(name), image_id))

    def on_post_extend(self, req: falcon.Request, resp: falcon.Response, name: str, image_id: str) -> None:
        media = read_body(req, schemas.EXTEND)
        software = self._registry.get(name)
        expires_at = self._queue.claims.extend(software, image_id, media["token"], media.get("lease_seconds"))
        resp.media = {"lease_expires_at": expires_at}

    def on_put_result(self, req: falcon.Request, resp: falcon.Response, name: str, image_id: str) -> None:
        media = read_body(req, schemas.RESULT)
        software = self._registry.get(name)
        job = self._queue.results.submit(software, image_id, media["token"], media["info"], media.get("rows"))
        self._metrics.submits.labels(name).inc()
        resp.media = describe_job(job)

    def on_post_fail(self, req: falcon.Request, resp: falcon.Response, name: str, image_id: str) -> None:
        media = read_body(req, schemas.FAIL)
        software = self._registry.get(name)
        job = self._queue.claims.fail(
            software,
            image_id,
            media["token"],
            error=media["error"],
            retry=media.get("retry", True),
            retry_after=media.get("retry_after"),
        )
        self._metrics.failures.labels(name).inc()
        resp.media = describe_job(job)

    def on_post_release(self, req: falcon.Request, resp: falcon.Response, name: str, image_id: str) -> None:
        media = read_body(req, schemas.RELEASE)
        resp.media = describe_job(self._queue.claims.release(self._registry.get(name), image_id, media["token"]))


class BatchResults:
    def __init__(self, registry: Registry, queue: JobQueue, metrics: Metrics):
        self._registry = registry
        self._queue = queue
        self._metrics = metrics

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        media = read_body(req, schemas.BATCH_RESULTS, judged_apart="results")
        software = self._registry.get(name)
        # Each result is judged as the single submit would judge it; one bad result spoils no other.
        verdicts: list[dict[str, Any]] = []
        prepared: list[tuple[int, PreparedResult]] = []
        for index, result in enumerate(media["results"]):
            given = result.get("image_id") if isinstance(result, dict) else None
            echoed = given if isinstance(given, str) and jsontext.is_unicode(given) else None
            verdicts.append({"image_id": echoed, "status": Verdict.DONE})
            try:
                check_storable(result, jsontext.MAX_JSON_DEPTH - 2)  # the item sits two levels down the body
                check(result, schemas.BATCH_RESULT)
                item = self._queue.results.prepare_result(
                    software, result["image_id"], result["token"], result["info"], result.get("rows")
                )
            except HeartbeatError as error:
                _judge(verdicts[index], error)
                continue
            prepared.append((index, item))
        refusals = self._queue.results.submit_many(software, [item for _index, item in prepared])
        for (index, _item), refusal in zip(prepared, refusals, strict=True):
            if refusal is not None:
                _judge(verdicts[index], refusal)
        self._metrics.submits.labels(name).inc(sum(1 for verdict in verdicts if verdict["status"] == Verdict.DONE))
        resp.media = {"results": verdicts}


def _judge(verdict: dict[str, Any], error: HeartbeatError) -> None:
    if status_of(error) >= 500:
        raise error
    verdict["status"] = Verdict.STALE if isinstance(error, StaleToken) else Verdict.INVALID
    verdict["description"] = error.description


# --- its routes ----------------------------------------------------------------------------------


def claim(parts: Parts) -> JobClaims:
    return JobClaims(
        parts.registry,
        parts.queue,
        parts.catalog,
        parts.waiting,
        parts.storage,
        parts.settings,
        parts.metrics,
        parts.audit,
    )


def batch_results(parts: Parts) -> BatchResults:
    return BatchResults(parts.registry, parts.queue, parts.metrics)


def job_collection(parts: Parts) -> JobCollection:
    return JobCollection(parts.registry, parts.queue)


def job_item(parts: Parts) -> JobItem:
    return JobItem(parts.registry, parts.queue, parts.metrics)


ROUTES: list[Route] = [
    Route(
        "/v1/software/{name}/claim",
        claim,
        {
            "POST": Operation(
                Access.WORK,
                "lease the earliest-uploaded claimable jobs, waiting up to `wait_seconds` for one. A process lets at "
                "most --max-waiting-claims claims wait at once: a claim beyond that which finds no job is answered at "
                "once with no jobs and `Retry-After`",
                CLAIMED,
                errors=(400, 404),
                body=json_body(schemas.CLAIM, required=False),
            )
        },
    ),
    Route(
        "/v1/software/{name}/results",
        batch_results,
        {
            "POST": Operation(
                Access.WORK,
                "submit many results; each judged on its own",
                Reply(200, JUDGED),
                errors=(400, 404),
                body=json_body(schemas.BATCH_RESULTS),
            )
        },
    ),
    Route(
        "/v1/software/{name}/jobs",
        job_collection,
        {
            "GET": Operation(
                Access.READ,
                "the software's jobs, in upload order",
                Reply(200, page("jobs", ref("Job"), UPLOAD_ORDER)),
                errors=(400, 404),
                parameters=(
                    *paging(UPLOAD_ORDER),
                    parameter("status", schemas.JOB_STATUS, "only jobs with this status"),
                    parameter("version", schemas.VERSION, "only jobs whose result came from this version"),
                ),
            )
        },
    ),
    Route(
        "/v1/software/{name}/jobs/{image_id}",
        job_item,
        {"GET": Operation(Access.READ, "one job", Reply(200, ref("Job")), errors=(404,))},
    ),
    Route(
        "/v1/software/{name}/jobs/{image_id}/extend",
        job_item,
        {
            "POST": Operation(
                Access.WORK,
                "extend the lease",
                Reply(200, obj({"lease_expires_at": {"type": "number"}})),
                errors=(400, 404, 409),
                body=json_body(schemas.EXTEND),
            )
        },
        suffix="extend",
    ),
    Route(
        "/v1/software/{name}/jobs/{image_id}/result",
        job_item,
        {
            "PUT": Operation(
                Access.WORK,
                "submit the result and extra-table rows",
                Reply(200, ref("Job")),
                errors=(400, 404, 409, 422),
                body=json_body(schemas.RESULT),
            )
        },
        suffix="result",
    ),
    Route(
        "/v1/software/{name}/jobs/{image_id}/fail",
        job_item,
        {
            "POST": Operation(
                Access.WORK,
                "report a failure: retry after a backoff, or failed",
                Reply(200, ref("Job")),
                errors=(400, 404, 409),
                body=json_body(schemas.FAIL),
            )
        },
        suffix="fail",
    ),
    Route(
        "/v1/software/{name}/jobs/{image_id}/release",
        job_item,
        {
            "POST": Operation(
                Access.WORK,
                "give the job back at once",
                Reply(200, ref("Job")),
                errors=(400, 404, 409),
                body=json_body(schemas.RELEASE),
            )
        },
        suffix="release",
    ),
]
