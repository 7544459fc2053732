"""Judging submitted results against the jobs they name: pure, no database.

:func:`judge` decides, for each result of a submit (one, or a batch), whether it is stored on time,
stored late, is a result stored already, or is refused and why; :func:`count_changes` says how the
job counters move once the accepted ones are stored. ``queue/results.py`` reads the jobs (locked),
calls these, then writes.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Collection, Mapping
from typing import Any

from heartbeat.db.models import Job, JobStatus
from heartbeat.errors import HeartbeatError, NotFound, StaleToken
from heartbeat.queue.core import LEASE_EXPIRED, counted_as


class Verdict(enum.StrEnum):
    """How a batch judged one of its results."""

    DONE = JobStatus.DONE.value  # stored (now, or by the same submit before)
    STALE = "stale"  # its token no longer holds the job
    INVALID = "invalid"  # refused as the single submit would refuse it (unknown job, bad rows, too large)


@dataclasses.dataclass(frozen=True)
class PreparedResult:
    """A result checked and ready to store: its rows mapped onto the extra tables' models."""

    image_id: str
    token: str
    info: Any
    rows: list[tuple[Any, list[dict[str, Any]]]]


@dataclasses.dataclass
class Judgement:
    """What a submit does. ``outcomes``: for each result, in order, the job as storing it leaves it (or
    as it already is) or the error refusing it. ``on_time`` and ``late``: the results to store, by
    image ID (a job held by the result's token; a job whose last lease ran out that nobody took)."""

    outcomes: list[Job | HeartbeatError] = dataclasses.field(default_factory=list)
    on_time: dict[str, PreparedResult] = dataclasses.field(default_factory=dict)
    late: dict[str, PreparedResult] = dataclasses.field(default_factory=dict)


def judge(software: str, held: Mapping[str, Job], results: list[PreparedResult], now: float) -> Judgement:
    """Judge ``results`` of ``software`` against ``held`` (the jobs they name, by image ID, as read with
    their rows locked) at ``now``:

    - no job for the image: :class:`NotFound` (404);
    - the job claimed under the result's token: stored on time;
    - failed because its last lease ran out (``LEASE_EXPIRED``), still under that token: stored late
      (nobody else took it);
    - done or pending under that token: that very result, stored already (a retry after a lost
      COMMIT; pending: stored, then reopened by a new version), answered as the job is;
    - any other token or state: :class:`StaleToken` (409).

    A result named twice in one batch is stored once: the second is the first's job when the token
    is the same, else stale.
    """
    judgement = Judgement()
    for result in results:
        job = held.get(result.image_id)
        earlier = judgement.on_time.get(result.image_id) or judgement.late.get(result.image_id)
        if job is None:
            judgement.outcomes.append(NotFound(f"{software} has no job for image {result.image_id!r}"))
        elif earlier is not None or job.token != result.token:
            same = earlier is not None and earlier.token == result.token
            judgement.outcomes.append(job if same else StaleToken())
        elif job.status == JobStatus.CLAIMED:
            judgement.on_time[result.image_id] = result
            judgement.outcomes.append(stored_job(job, result, now))
        elif (job.status, job.error) == (JobStatus.FAILED, LEASE_EXPIRED):
            judgement.late[result.image_id] = result
            judgement.outcomes.append(stored_job(job, result, now))
        elif job.status in (JobStatus.DONE, JobStatus.PENDING):
            judgement.outcomes.append(job)
        else:
            judgement.outcomes.append(StaleToken())
    return judgement


def count_changes(judgement: Judgement, held: Mapping[str, Job], reopened: Collection[str]) -> dict[str, int]:
    """How the job counters (:func:`counted_as`) move once the judged results are stored: each leaves
    claimed (on time) or failed (late) and is counted done under the version it was claimed with, or
    pending when it is ``reopened`` on arrival (its version was replaced meanwhile)."""
    changes: dict[str, int] = {}
    for group, before in ((judgement.on_time, JobStatus.CLAIMED), (judgement.late, JobStatus.FAILED)):
        for image_id in group:
            if image_id in reopened:
                after = counted_as(JobStatus.PENDING)
            else:
                after = counted_as(JobStatus.DONE, held[image_id].claimed_version)
            for counter, change in ((counted_as(before), -1), (after, 1)):
                changes[counter] = changes.get(counter, 0) + change
    return {counter: change for counter, change in changes.items() if change}


def stored_job(job: Job, result: PreparedResult, now: float) -> Job:
    """The job as the UPDATE that stores ``result`` leaves it."""
    kept = ("image_id", "attempts", "claimed_at", "lease_expires_at", "claimed_version")
    fields = {field: getattr(job, field) for field in kept}
    stored = {"status": JobStatus.DONE, "info": result.info, "error": None, "finished_at": now}
    return type(job)(**fields, **stored, version=job.claimed_version)
