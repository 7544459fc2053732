"""The worker protocol: claim, extend, submit, fail, release, requeue.

Each state change is one conditional UPDATE that checks the current state (and the token); the
affected row count decides who won. Every transaction runs through
:func:`heartbeat.db.database.transaction`, which runs it again after a deadlock or a lost connection.
MySQL claims with ``SELECT ... FOR UPDATE SKIP LOCKED`` where the server has it; SQLite serialises
writers with ``BEGIN IMMEDIATE`` (see ``db/database.py``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

import peewee

from heartbeat.db.database import database_proxy, is_mysql, server_version, transaction
from heartbeat.db.models import Job, Software, Stage, extra_table_model, job_model
from heartbeat.errors import HeartbeatError, InvalidInput, NotFound, StaleToken, TooLarge
from heartbeat.extra_rows import prepare_rows
from heartbeat.pipeline import reopen_downstream, settle, settle_downstream
from heartbeat.queue.signal import WorkSignal
from heartbeat.queue.statements import Candidate, JobTable

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 3600
STATEMENT_OVERHEAD_BYTES = 64 * 1024
LEASE_EXPIRED = "lease expired"


@dataclasses.dataclass(frozen=True)
class ClaimedJob:
    image_id: str
    token: str
    attempt: int
    lease_expires_at: float


class _BatchRaced(Exception):
    """A job of a batch changed between reading its state and storing its result."""


@dataclasses.dataclass(frozen=True)
class PreparedResult:
    """A result checked and ready to store: its rows mapped onto the extra tables' models."""

    image_id: str
    token: str
    info: Any
    rows: list[tuple[Any, list[dict[str, Any]]]]


@dataclasses.dataclass
class ClaimOutcome:
    jobs: list[ClaimedJob] = dataclasses.field(default_factory=list)
    expired_leases: int = 0  # leases found run out: their jobs handed out again, or failed on the last attempt


def new_token() -> str:
    return secrets.token_urlsafe(24)


class JobQueue:
    """The worker protocol over the per-software job tables."""

    def __init__(self, clock: Callable[[], float], signal: WorkSignal | None = None):
        self._clock = clock
        self.signal = signal or WorkSignal()
        self._skip_locked: bool | None = None
        self._result_bytes_limit: int | None = None
        self._tables: dict[str, JobTable] = {}

    def claim(self, software: Software, *, max_jobs: int, lease_seconds: int | None = None) -> ClaimOutcome:
        """Lease up to ``max_jobs`` claimable jobs, earliest upload first."""
        lease_seconds = lease_seconds or software.lease_seconds
        outcome = ClaimOutcome()
        for _round in range(3):
            wanted = max_jobs - len(outcome.jobs)
            found, this_round = self._claim_round(software, wanted, lease_seconds)
            outcome.jobs += this_round.jobs
            outcome.expired_leases += this_round.expired_leases
            if len(outcome.jobs) >= max_jobs or found < wanted:
                break
        return outcome

    @transaction
    def _claim_round(self, software: Software, wanted: int, lease_seconds: int) -> tuple[int, ClaimOutcome]:
        """Read up to ``wanted`` candidates and lease them: (found, outcome)."""
        outcome = ClaimOutcome()
        table = self._table(software)
        now = self._clock()
        candidates = table.candidates(software.id, now, wanted)
        takeable = []
        for row in candidates:
            if row.status == "claimed" and row.attempts >= software.max_attempts:
                outcome.expired_leases += self._fail_expired(software, row)
            else:
                takeable.append(row)
        if not takeable:
            return len(candidates), outcome
        lease_expires_at = now + lease_seconds
        tokens = [new_token() for _ in takeable]
        if self._candidates_are_locked():
            # Nobody else can have changed them since we read them: one statement leases them all.
            taken = list(zip(takeable, tokens, strict=True))
            if table.take_locked(takeable, tokens, now, lease_expires_at) != len(takeable):
                held = table.holding(tokens)  # should not happen; if it does, hand out only what we hold
                log.warning(
                    "%s: %d of %d candidates were not leased", software.name, len(takeable) - len(held), len(takeable)
                )
                taken = [(row, token) for row, token in taken if row.image_id in held]
        else:  # no SKIP LOCKED (older MySQL): each row is leased only if it is still as we read it
            taken = [
                (row, token)
                for row, token in zip(takeable, tokens, strict=True)
                if table.take(row, token, now, lease_expires_at)
            ]
        for row, token in taken:
            outcome.jobs.append(ClaimedJob(row.image_id, token, row.attempts + 1, lease_expires_at))
            outcome.expired_leases += row.status == "claimed"
        return len(candidates), outcome

    def has_claimable(self, software: Software) -> bool:
        """Whether a claim for ``software`` would find a job now (outside any transaction; no locks)."""
        return self._table(software).has_claimable(software.id, self._clock())

    def _candidates_are_locked(self) -> bool:
        """MySQL's ``FOR UPDATE SKIP LOCKED`` locks the rows it reads; SQLite's ``BEGIN IMMEDIATE`` keeps
        every other writer out of the transaction."""
        return self._supports_skip_locked() or not is_mysql(database_proxy)

    def _table(self, software: Software) -> JobTable:
        table = self._tables.get(software.name)
        if table is None:
            table = JobTable(software.name, database_proxy.obj, skip_locked=self._supports_skip_locked())
            self._tables[software.name] = table
        return table

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
        changes = {"status": "failed", "stage": Stage.FINISHED, "error": LEASE_EXPIRED, "finished_at": self._clock()}
        expired = job.update(**changes).where(self._unchanged(software, row)).execute()
        if expired:
            settle_downstream(software, self._clock(), [row.image_id])
        return expired

    def expire_leases(self, software: Software) -> int:
        """Jobs whose lease ran out on their last attempt become ``failed`` now (not at the next claim
        that reads them); a late result from their worker is still taken."""
        expired = self._expire_leases(software)
        if expired:
            self.signal.notify()
        return expired

    @transaction
    def _expire_leases(self, software: Software) -> int:
        job = job_model(software.name)
        now = self._clock()
        ran_out = (job.status == "claimed") & (job.available_at <= now) & (job.attempts >= software.max_attempts)
        image_ids = [row.image_id for row in job.select(job.image_id).where(ran_out)]  # along the status index
        if not image_ids:
            return 0
        changes = {"status": "failed", "stage": Stage.FINISHED, "error": LEASE_EXPIRED, "finished_at": now}
        expired = job.update(**changes).where(ran_out & job.image_id.in_(image_ids)).execute()
        settle_downstream(software, now, image_ids)
        return expired

    def _supports_skip_locked(self) -> bool:
        if self._skip_locked is None:
            self._skip_locked = False
            if is_mysql(database_proxy):
                flavour, version = server_version(database_proxy.obj)
                self._skip_locked = version >= ((10, 6) if flavour == "mariadb" else (8, 0))
        return self._skip_locked

    @transaction
    def extend(self, software: Software, image_id: str, token: str, lease_seconds: int | None = None) -> float:
        """Push the lease's expiry to ``lease_seconds`` from now."""
        job = job_model(software.name)
        lease_expires_at = self._clock() + (lease_seconds or software.lease_seconds)
        updated = (
            job.update(lease_expires_at=lease_expires_at, available_at=lease_expires_at)
            .where((job.image_id == image_id) & (job.token == token) & (job.status == "claimed"))
            .execute()
        )
        if updated != 1:
            self._raise_missing_or_stale(software, image_id)
        return lease_expires_at

    def submit(self, software: Software, image_id: str, token: str, info: Any, rows: Any = None) -> Job:
        """Store the result and its extra-table rows together, or change nothing."""
        result = self.prepare_result(software, image_id, token, info, rows)
        job = self._store_results(software, [result], read_back=True)[0]
        assert isinstance(job, Job)
        return job

    def prepare_result(self, software: Software, image_id: str, token: str, info: Any, rows: Any) -> PreparedResult:
        """A result checked before any database work: its size, and its rows against the extra tables."""
        self._check_statement_size(info, rows)
        return PreparedResult(image_id, token, info, prepare_rows(software, rows))

    def submit_many(self, software: Software, results: list[PreparedResult]) -> list[HeartbeatError | None]:
        """Store many results in one transaction, each judged on its own: None where it was stored,
        else the error the single submit would have raised (a stale token, an unknown job)."""
        if len(results) > 1:
            try:
                return self._store_batch(software, results)
            except _BatchRaced:
                pass  # the batch was rolled back; store its results one by one, each checked as it goes
        outcomes = self._store_results(software, results, read_back=False)
        return [outcome if isinstance(outcome, HeartbeatError) else None for outcome in outcomes]

    @transaction
    def _store_batch(self, software: Software, results: list[PreparedResult]) -> list[HeartbeatError | None]:
        """Read the jobs' states, then mark every one this batch holds done in one statement."""
        table = self._table(software)
        now = self._clock()
        states = table.states(list({result.image_id for result in results}))
        outcomes: list[HeartbeatError | None] = []
        on_time: dict[str, PreparedResult] = {}
        late: dict[str, PreparedResult] = {}
        for result in results:
            earlier = on_time.get(result.image_id) or late.get(result.image_id)
            if earlier is not None:  # twice in this batch: stored once
                outcomes.append(None if earlier.token == result.token else StaleToken())
                continue
            state = states.get(result.image_id)
            status, token, error = state or (None, None, None)
            held = token == result.token
            if held and status == "claimed":
                on_time[result.image_id] = result
                outcomes.append(None)
            elif held and (status, error) == ("failed", LEASE_EXPIRED):
                late[result.image_id] = result
                outcomes.append(None)
            else:
                outcomes.append(self._refusal(software, result, state))
        for group, late_error in ((on_time, None), (late, LEASE_EXPIRED)):
            items = [(result.image_id, result.token, result.info) for result in group.values()]
            if items and table.store_results(items, now, late_error=late_error) != len(items):
                raise _BatchRaced()  # a job changed since we read it: roll back, go one by one
        for result in [*on_time.values(), *late.values()]:
            self._insert_rows(result)
        self._after_results(software, now, list(on_time), list(late))
        return outcomes

    @staticmethod
    def _refusal(
        software: Software, result: PreparedResult, state: tuple[str, str | None, str | None] | None
    ) -> HeartbeatError | None:
        """Why a result its token could not store is refused: None when that very result is stored
        already (the same submit again, or a retry after a lost COMMIT), a stale token, no such job."""
        if state is None:
            return NotFound(f"{software.name} has no job for image {result.image_id!r}")
        return None if state[:2] == ("done", result.token) else StaleToken()

    def _after_results(self, software: Software, now: float, on_time: list[str], late: list[str]) -> None:
        """Jobs built on the ones just done may be claimed now; a late result (its last lease ran
        out) also brings back the jobs that were skipped for that failure."""
        changed = settle_downstream(software, now, on_time) if on_time else 0
        changed += reopen_downstream(software, now, late) if late else 0
        if changed:
            self.signal.notify()

    @staticmethod
    def _insert_rows(result: PreparedResult) -> None:
        for model, model_rows in result.rows:
            for chunk in peewee.chunked([{**row, "image_id": result.image_id} for row in model_rows], 500):
                model.insert_many(chunk).execute()

    def _check_statement_size(self, info: Any, rows: Any) -> None:
        """:class:`TooLarge` (413) for a result MySQL would refuse: a statement longer than the server's
        ``max_allowed_packet`` makes it drop the connection, which would look like an outage."""
        limit = self._max_result_bytes()
        if limit is None:
            return
        size = len(json.dumps(info)) + (len(json.dumps(rows)) if rows else 0)
        if size > limit:
            raise TooLarge(f"the result takes {size} bytes as JSON; this database takes at most {limit}")

    def _max_result_bytes(self) -> int | None:
        if self._result_bytes_limit is None and is_mysql(database_proxy):
            (packet,) = database_proxy.execute_sql("SELECT @@max_allowed_packet").fetchone()
            # Escaping may double a text's length in the statement; keep room for the rest of it.
            self._result_bytes_limit = int(packet) // 2 - STATEMENT_OVERHEAD_BYTES
        return self._result_bytes_limit

    @transaction
    def _store_results(
        self, software: Software, results: list[PreparedResult], *, read_back: bool
    ) -> list[Job | HeartbeatError | None]:
        """Store results one by one, each with its own conditional UPDATE."""
        table = self._table(software)
        now = self._clock()
        outcomes: list[Job | HeartbeatError | None] = []
        on_time: list[str] = []
        late: list[str] = []
        for result in results:
            item = [(result.image_id, result.token, result.info)]
            if table.store_results(item, now):
                on_time.append(result.image_id)
            elif table.store_results(item, now, late_error=LEASE_EXPIRED):
                late.append(result.image_id)
            else:
                current = table.read(result.image_id)
                state = None if current is None else (current.status, current.token, current.error)
                refusal = self._refusal(software, result, state)
                outcomes.append(current if refusal is None else refusal)
                continue
            self._insert_rows(result)
            outcomes.append(table.read(result.image_id) if read_back else None)
        self._after_results(software, now, on_time, late)
        if read_back and isinstance(outcomes[0], HeartbeatError):
            raise outcomes[0]
        return outcomes

    def fail(
        self, software: Software, image_id: str, token: str, *, error: str, retry: bool, retry_after: float | None
    ) -> Job:
        """Back to pending after a backoff while attempts remain, else ``failed``."""
        failed = self._record_failure(software, image_id, token, error, retry, retry_after)
        self.signal.notify(software.name)
        return failed

    @transaction
    def _record_failure(
        self, software: Software, image_id: str, token: str, error: str, retry: bool, retry_after: float | None
    ) -> Job:
        job = job_model(software.name)
        held = (job.image_id == image_id) & (job.token == token) & (job.status == "claimed")
        current = job.get_or_none(held)
        if current is None:
            self._raise_missing_or_stale(software, image_id)
        now = self._clock()
        if retry and current.attempts < software.max_attempts:
            # The worker's own retry_after (up to a day, as the schema allows) is taken as it is.
            backoff = retry_after if retry_after is not None else min(2**current.attempts, MAX_BACKOFF_SECONDS)
            changes = {"status": "pending", "available_at": now + backoff}
        else:
            changes = {"status": "failed", "stage": Stage.FINISHED, "finished_at": now}
        job.update(token=None, lease_expires_at=None, error=error, **changes).where(held).execute()
        if changes["status"] == "failed":
            settle_downstream(software, now, [image_id])
        return job.get(job.image_id == image_id)

    def release(self, software: Software, image_id: str, token: str) -> Job:
        """Back to pending at once; the attempt does not count."""
        released = self._release(software, image_id, token)
        self.signal.notify(software.name)
        return released

    @transaction
    def _release(self, software: Software, image_id: str, token: str) -> Job:
        job = job_model(software.name)
        updated = (
            job.update(
                status="pending",
                token=None,
                lease_expires_at=None,
                available_at=self._clock(),
                attempts=peewee.Case(None, [(job.attempts > 0, job.attempts - 1)], 0),
            )
            .where((job.image_id == image_id) & (job.token == token) & (job.status == "claimed"))
            .execute()
        )
        if updated != 1:
            self._raise_missing_or_stale(software, image_id)
        return job.get(job.image_id == image_id)

    def requeue(self, software: Software, status: str, image_ids: list[str] | None) -> int:
        """Failed or done jobs back to pending, attempts from zero; done jobs lose their rows."""
        if status not in ("failed", "done"):
            raise InvalidInput("status must be 'failed' or 'done'")
        count = self._requeue(software, status, image_ids)
        if count:
            self.signal.notify()
        return count

    @transaction
    def _requeue(self, software: Software, status: str, image_ids: list[str] | None) -> int:
        job = job_model(software.name)
        selected = job.status == status
        if image_ids is not None:
            selected &= job.image_id.in_(image_ids)
        if status == "done":
            ids = [row.image_id for row in job.select(job.image_id).where(selected)]
            for chunk in peewee.chunked(ids, 500):
                for table, columns in software.tables.items():
                    extra = extra_table_model(software.id, table, columns)
                    extra.delete().where(extra.image_id.in_(chunk)).execute()
        count = (
            job.update(
                status="pending",
                stage=Stage.WAITING if software.after else Stage.READY,
                attempts=0,
                token=None,
                available_at=0,
                claimed_at=None,
                lease_expires_at=None,
                finished_at=None,
                info=None,
                error=None,
            )
            .where(selected)
            .execute()
        )
        if count:
            now = self._clock()
            settle(software, now, image_ids)
            reopen_downstream(software, now, image_ids)
        return count

    def upstream_results(self, software: Software, image_ids: list[str]) -> dict[str, dict[str, Any]]:
        """For each image, the ``info`` of every upstream software's job: ``{image_id: {software: info}}``."""
        results: dict[str, dict[str, Any]] = {image_id: {} for image_id in image_ids}
        for upstream in software.after:
            up = job_model(upstream)
            for row in up.select(up.image_id, up.info).where(up.image_id.in_(image_ids)):
                results[row.image_id][upstream] = row.info
        return results

    def get(self, software: Software, image_id: str) -> Job:
        job = job_model(software.name)
        row = job.get_or_none(job.image_id == image_id)
        if row is None:
            raise NotFound(f"{software.name} has no job for image {image_id!r}")
        return row

    def statuses(self, image_id: str, software: Iterable[Software]) -> dict[str, str]:
        """Each software's status for one image."""
        result = {}
        for item in software:
            job = job_model(item.name)
            row = job.select(job.status).where(job.image_id == image_id).first()
            if row is not None:
                result[item.name] = row.status
        return result

    def _raise_missing_or_stale(self, software: Software, image_id: str) -> NoReturn:
        self.get(software, image_id)
        raise StaleToken()


def describe_job(job: Job) -> dict[str, Any]:
    """A job row as the API shows it (never its token)."""
    return {
        "image_id": job.image_id,
        "status": job.status,
        "info": job.info,
        "attempts": job.attempts,
        "claimed_at": job.claimed_at,
        "lease_expires_at": job.lease_expires_at if job.status == "claimed" else None,
        "finished_at": job.finished_at,
        "error": job.error,
    }
