"""The worker protocol's state changes: claim, extend, fail, release, requeue, and leases that ran out.

Each state change is one conditional UPDATE that checks the current state (and the token); the
affected row count decides who won. Every transaction runs through ``Database.transaction``, which
runs it again after a deadlock or a lost connection. MySQL claims with ``SELECT ... FOR UPDATE SKIP
LOCKED`` where the server has it; SQLite serialises writers with ``BEGIN IMMEDIATE``. Storing
results is in ``results.py``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import peewee

from heartbeat.db.database import transactional
from heartbeat.db.models import Image, Job, JobStatus, Software, Stage, extra_table_model, job_model
from heartbeat.errors import InvalidInput
from heartbeat.events.outbox import JOB_FAILED, JOB_REOPENED, reopened_because
from heartbeat.query.resolve import Resolved
from heartbeat.queue.core import LEASE_EXPIRED, QueueCore, QueuePart, counted_as, new_token
from heartbeat.queue.flow import FlowControl
from heartbeat.queue.pipeline import Pipelines
from heartbeat.queue.statements import Candidate, ClaimedJob, Settings
from heartbeat.queue.where import compile_where

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 3600
REQUEUABLE = (JobStatus.FAILED, JobStatus.DONE)


@dataclasses.dataclass
class ClaimOutcome:
    jobs: list[ClaimedJob] = dataclasses.field(default_factory=list)
    expired_leases: int = 0  # leases found run out: their jobs handed out again, or failed on the last attempt
    # A software at its limit (flow control): none could be handed out; room is expected in this many seconds.
    retry_after: int | None = None


class Claims(QueuePart):
    """The worker protocol over the per-software job tables."""

    def __init__(self, core: QueueCore, pipelines: Pipelines, flow: FlowControl):
        super().__init__(core)
        self._pipelines = pipelines
        self._flow = flow

    def claim(
        self,
        software: Software,
        *,
        max_jobs: int,
        lease_seconds: int | None = None,
        on_leased: Callable[[list[str]], None] | None = None,
    ) -> ClaimOutcome:
        """Lease up to ``max_jobs`` claimable jobs, earliest upload first (none while it is paused);
        ``lease_seconds`` None: the software's own, as it is now. ``on_leased`` is called with the
        images of the jobs a transaction leased, inside it (the audit's entry commits with them)."""
        outcome = ClaimOutcome()
        for _round in range(3):
            wanted = max_jobs - len(outcome.jobs)
            found, this_round = self._claim_round(software, wanted, lease_seconds, on_leased)
            outcome.jobs += this_round.jobs
            outcome.expired_leases += this_round.expired_leases
            outcome.retry_after = this_round.retry_after
            if len(outcome.jobs) >= max_jobs or found < wanted or this_round.retry_after is not None:
                break
        return outcome

    @transactional
    def _claim_round(
        self,
        software: Software,
        wanted: int,
        lease_seconds: int | None,
        on_leased: Callable[[list[str]], None] | None = None,
    ) -> tuple[int, ClaimOutcome]:
        """Read up to ``wanted`` candidates and lease them: (found, outcome)."""
        outcome = ClaimOutcome()
        table = self._core.table(software)
        now = self._clock()
        # Not a subquery of the candidates: it would lock the row. A locking read (shared, as submits
        # read it): it takes no snapshot, so a limited claim's reads after its flow lock see what the
        # claims before it committed (flow.py).
        settings = table.settings(software.id, lock=self._database.features.share_lock)
        if settings is None or settings.paused:
            return 0, outcome
        if settings.limited:
            room = self._flow.room(software, settings, wanted, now)
            if not room.jobs:
                outcome.retry_after = room.retry_after
                return 0, outcome
            wanted = room.jobs
        found = self.lease(software, settings, wanted, now, lease_seconds, outcome)
        if settings.limited:
            self._flow.handed_out(software, settings, len(outcome.jobs), now)
        if on_leased is not None and outcome.jobs:
            on_leased([job.image_id for job in outcome.jobs])
        return found, outcome

    def lease(
        self,
        software: Software,
        settings: Settings,
        wanted: int,
        now: float,
        lease_seconds: int | None,
        outcome: ClaimOutcome,
        *,
        fail_expired: bool = True,
    ) -> int:
        """Lease up to ``wanted`` of the first claimable jobs (within room the caller checked) into
        ``outcome``; returns how many candidates were read. A candidate whose last lease ran out fails
        (``fail_expired``; else it is left for the next claim: that changes a second counter slot)."""
        table = self._core.table(software)
        candidates = table.candidates(now, wanted)
        takeable = []
        for row in candidates:
            if row.status == JobStatus.CLAIMED and row.attempts >= settings.max_attempts:
                if fail_expired:
                    outcome.expired_leases += self._fail_expired(software, row)
            else:
                takeable.append(row)
        if not takeable:
            return len(candidates)
        lease_expires_at = now + (lease_seconds or settings.lease_seconds)
        version = settings.version
        tokens = [new_token() for _ in takeable]
        if self._database.features.claims_hold_locks:
            # Nobody else can have changed them since we read them: one statement leases them all.
            taken = list(zip(takeable, tokens, strict=True))
            if table.take_locked(takeable, tokens, now, lease_expires_at, version) != len(takeable):
                held = table.holding(tokens)  # should not happen; if it does, hand out only what we hold
                log.warning(
                    "%s: %d of %d candidates were not leased", software.name, len(takeable) - len(held), len(takeable)
                )
                taken = [(row, token) for row, token in taken if row.image_id in held]
        else:  # no SKIP LOCKED (older MySQL): each row is leased only if it is still as we read it
            taken = [
                (row, token)
                for row, token in zip(takeable, tokens, strict=True)
                if table.take(row, token, now, lease_expires_at, version)
            ]
        for row, token in taken:
            outcome.jobs.append(ClaimedJob(row.image_id, token, row.attempts + 1, lease_expires_at, version))
            outcome.expired_leases += row.status == JobStatus.CLAIMED
        pending = sum(1 for row, _token in taken if row.status == JobStatus.PENDING)
        self._core.count(software.name, {JobStatus.PENDING: -pending, JobStatus.CLAIMED: pending})
        return len(candidates)

    def has_claimable(self, software: Software) -> bool:
        """Whether a claim for ``software`` would find a job now, and room for it under its limits
        (outside any transaction; no locks)."""
        now = self._clock()
        if not self._core.table(software).has_claimable(software.id, now):
            return False
        settings = self._core.table(software).settings(software.id)
        return settings is None or not settings.limited or self._flow.has_room(software, settings, now)

    def _unchanged(self, software: Software, row: Candidate) -> peewee.Expression:
        """The row is still as the candidate query read it: nobody took it meanwhile."""
        job = job_model(software.name)
        return (
            (job.image_id == row.image_id)
            & (job.status == row.status)
            & (job.stage == Stage.READY)
            & (job.available_at <= self._clock())
            & (job.token.is_null() if row.token is None else job.token == row.token)
        )

    def _fail_expired(self, software: Software, row: Candidate) -> int:
        """The last attempt's lease ran out: the job fails. The token stays, so a late result is still taken."""
        job = job_model(software.name)
        changes = {
            "status": JobStatus.FAILED,
            "stage": Stage.FINISHED,
            "error": LEASE_EXPIRED,
            "finished_at": self._clock(),
        }
        expired = int(job.update(**changes).where(self._unchanged(software, row)).execute())
        if expired:
            self._outbox.add(JOB_FAILED, expired_data(row.attempts), software=software.name, image_id=row.image_id)
            self._core.count(software.name, {JobStatus.CLAIMED: -expired, JobStatus.FAILED: expired})
            self._pipelines.settle_downstream(software, self._clock(), [row.image_id])
        return expired

    def expire_leases(self, software: Software) -> int:
        """Jobs whose lease ran out on their last attempt become ``failed`` now (not at the next claim
        that reads them); a late result from their worker is still taken."""
        expired = self._expire_leases(software)
        if expired:
            self.signal.notify()
        return expired

    @transactional
    def _expire_leases(self, software: Software) -> int:
        job = job_model(software.name)
        now = self._clock()
        ran_out = (
            (job.status == JobStatus.CLAIMED) & (job.available_at <= now) & (job.attempts >= software.max_attempts)
        )
        image_ids = [row.image_id for row in job.select(job.image_id).where(ran_out)]  # along the status index
        if not image_ids:
            return 0
        changes = {"status": JobStatus.FAILED, "stage": Stage.FINISHED, "error": LEASE_EXPIRED, "finished_at": now}
        self._outbox.add_selected(
            JOB_FAILED, software.name, job, ran_out & job.image_id.in_(image_ids), expired_data(software.max_attempts)
        )
        expired = int(job.update(**changes).where(ran_out & job.image_id.in_(image_ids)).execute())
        self._core.count(software.name, {JobStatus.CLAIMED: -expired, JobStatus.FAILED: expired})
        self._pipelines.settle_downstream(software, now, image_ids)
        return expired

    @transactional
    def extend(self, software: Software, image_id: str, token: str, lease_seconds: int | None = None) -> float:
        """Push the lease's expiry to ``lease_seconds`` from now."""
        job = job_model(software.name)
        lease_expires_at = self._clock() + (lease_seconds or self._core.current(software).lease_seconds)
        updated = (
            job.update(lease_expires_at=lease_expires_at, available_at=lease_expires_at)
            .where((job.image_id == image_id) & (job.token == token) & (job.status == JobStatus.CLAIMED))
            .execute()
        )
        if updated != 1:
            self._core.raise_missing_or_stale(software, image_id)
        return lease_expires_at

    def fail(
        self, software: Software, image_id: str, token: str, *, error: str, retry: bool, retry_after: float | None
    ) -> Job:
        """Back to pending after a backoff while attempts remain, else ``failed``."""
        failed = self._record_failure(software, image_id, token, error, retry, retry_after)
        self.signal.notify(software.name)
        return failed

    @transactional
    def _record_failure(
        self, software: Software, image_id: str, token: str, error: str, retry: bool, retry_after: float | None
    ) -> Job:
        job = job_model(software.name)
        held = (job.image_id == image_id) & (job.token == token) & (job.status == JobStatus.CLAIMED)
        current = job.get_or_none(held)
        if current is None:
            self._core.raise_missing_or_stale(software, image_id)
        now = self._clock()
        changes: dict[str, object]
        if retry and current.attempts < self._core.current(software).max_attempts:
            # The worker's own retry_after (up to a day, as the schema allows) is taken as it is.
            backoff = retry_after if retry_after is not None else min(2**current.attempts, MAX_BACKOFF_SECONDS)
            status, changes = JobStatus.PENDING, {"available_at": now + backoff}
        else:
            status, changes = JobStatus.FAILED, {"stage": Stage.FINISHED, "finished_at": now}
        if (
            job.update(status=status, token=None, lease_expires_at=None, error=error, **changes).where(held).execute()
            != 1
        ):
            self._core.raise_missing_or_stale(software, image_id)  # someone else changed it since we read it
        self._core.count(software.name, {JobStatus.CLAIMED: -1, status: 1})
        data: dict[str, object] = {"status": str(status), "attempt": current.attempts, "error": error}
        if status == JobStatus.PENDING:
            data["retry_at"] = changes["available_at"]
        self._outbox.add(JOB_FAILED, data, software=software.name, image_id=image_id)
        if status == JobStatus.FAILED:
            self._pipelines.settle_downstream(software, now, [image_id])
        return job.get(job.image_id == image_id)

    def release(self, software: Software, image_id: str, token: str) -> Job:
        """Back to pending at once; the attempt does not count."""
        released = self._release(software, image_id, token)
        self.signal.notify(software.name)
        return released

    @transactional
    def _release(self, software: Software, image_id: str, token: str) -> Job:
        job = job_model(software.name)
        updated = (
            job.update(
                status=JobStatus.PENDING,
                token=None,
                lease_expires_at=None,
                available_at=self._clock(),
                attempts=peewee.Case(None, [(job.attempts > 0, job.attempts - 1)], 0),
            )
            .where((job.image_id == image_id) & (job.token == token) & (job.status == JobStatus.CLAIMED))
            .execute()
        )
        if updated != 1:
            self._core.raise_missing_or_stale(software, image_id)
        self._core.count(software.name, {JobStatus.CLAIMED: -1, JobStatus.PENDING: 1})
        return job.get(job.image_id == image_id)

    def reopen_outdated(self, software: Software) -> int:
        """Done jobs whose result came from another version than ``software.version`` back to pending,
        in one statement; each keeps its result (``info``, ``version``, extra-table rows) until the new
        one commits and replaces it. Returns how many."""
        count = self._reopen_outdated(software)
        if count:
            self.signal.notify(software.name)
        return count

    @transactional
    def _reopen_outdated(self, software: Software) -> int:
        return self._pipelines.reopen_results_of_other_versions(software, software.version)

    def requeue(
        self, software: Software, status: str, image_ids: list[str] | None, where: Resolved | None = None
    ) -> int:
        """Failed or done jobs back to pending, attempts from zero; done jobs lose their rows. Only
        those of ``image_ids``, and of the images a ``where`` query selects, when given."""
        if status not in REQUEUABLE:
            raise InvalidInput(f"status must be {' or '.join(repr(str(item)) for item in REQUEUABLE)}")
        count = self._requeue(software, status, image_ids, where)
        if count:
            self.signal.notify()
        return count

    @transactional
    def _requeue(self, software: Software, status: str, image_ids: list[str] | None, where: Resolved | None) -> int:
        job = job_model(software.name)
        selected = job.status == status
        if image_ids is not None:
            selected &= job.image_id.in_(image_ids)
        if where is None:
            return self._requeue_selected(software, status, selected)
        selected &= job.image_id.in_(Image.select(Image.id).where(compile_where(self._database, where)))
        # A query's statements stop at the database's time limit; the transaction then rolls back.
        with self._database.time_limit():
            return self._requeue_selected(software, status, selected)

    def _requeue_selected(self, software: Software, status: str, selected: peewee.Expression) -> int:
        job = job_model(software.name)
        was: dict[JobStatus | str, int] = {}
        by_version = job.select(job.version, peewee.fn.COUNT(job.image_id)).where(selected).group_by(job.version)
        if self._database.features.mysql:
            # A locking read: it sees (and holds) what the UPDATE below will change, not the snapshot.
            by_version = by_version.for_update()
        rows: list[tuple[str | None, int]] = list(by_version.tuples())  # type: ignore[arg-type]  # stubs: models
        for version, count in rows:
            counter = counted_as(JobStatus(status), version)
            was[counter] = was.get(counter, 0) - count
        # The jobs are chosen once, before any row goes: a ``where`` may count the rows deleted here.
        ids = [row.image_id for row in job.select(job.image_id).where(selected)]
        count = 0
        now = self._clock()
        for chunk in peewee.chunked(ids, 500):
            if status == JobStatus.DONE:
                for table, columns in software.tables.items():
                    extra = extra_table_model(software.id, table, columns)
                    extra.delete().where(extra.image_id.in_(chunk)).execute()
            requeued = (job.status == status) & job.image_id.in_(chunk)
            self._outbox.add_selected(JOB_REOPENED, software.name, job, requeued, reopened_because("requeue"))
            count += int(
                job.update(
                    status=JobStatus.PENDING,
                    stage=Stage.WAITING if software.after else Stage.READY,
                    attempts=0,
                    token=None,
                    available_at=0,
                    claimed_at=None,
                    lease_expires_at=None,
                    finished_at=None,
                    info=None,
                    error=None,
                    version=None,
                )
                .where(requeued)
                .execute()
            )
            # Only the jobs requeued here, not every job: a settle of them all would lock every row of
            # the upstream and downstream tables, the other way round from a submit's (deadlocks).
            self._pipelines.settle(software, now, chunk)
            self._pipelines.reopen_downstream(software, now, chunk)
        if count:
            self._core.count(software.name, was | {JobStatus.PENDING: count})
        return count


def expired_data(attempts: int) -> dict[str, object]:
    """A ``job.failed`` event's data for a job whose last lease ran out on attempt ``attempts``."""
    return {"status": "failed", "attempt": attempts, "error": LEASE_EXPIRED}
