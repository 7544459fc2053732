"""Jobs moved through a pipeline: settled when their upstream jobs end, reopened when those go back.

The rules (which software builds on which, why a job is skipped) are in :mod:`heartbeat.catalog.pipeline`.
Every statement here is a set-based UPDATE over one software's table, with the upstream tables in
subqueries: settling a million waiting jobs after a registration costs a few statements, and
settling one image after a submit one or two per downstream software. On MySQL those subqueries
read with shared locks, so two upstream jobs of one image finishing at the same moment cannot both
miss each other (one of the two transactions waits, or is rolled back as a deadlock and retried).
Call these inside a transaction.
"""

from __future__ import annotations

import json

from heartbeat.catalog.pipeline import UPSTREAM_PREFIX, dependency_order
from heartbeat.db.models import JobStatus, Software, Stage, job_model
from heartbeat.events.outbox import JOB_REOPENED, JOB_SKIPPED, reopened_because
from heartbeat.queue.core import QueueCore, QueuePart
from heartbeat.queue.counts import Counts


class Pipelines(QueuePart):
    """Settling and reopening the jobs of software built on other software."""

    def __init__(self, core: QueueCore, counts: Counts):
        super().__init__(core)
        self._counts = counts

    def downstream_closure(self, software: Software) -> list[Software]:
        """Every software that builds on ``software``, directly or not, upstream first.

        Derived from every software's ``after``, read afresh (one short statement, not a model query):
        a downstream software registered while this request ran must not miss the job it just finished.
        """
        sql = f"SELECT name, after FROM {self._database.quote('software')}"
        after = {name: json.loads(upstream or "[]") for name, upstream in self._database.execute(sql).fetchall()}
        reached: set[str] = set()
        frontier = [software.name]
        while frontier:
            upstream = frontier.pop()
            for name, names in after.items():
                if upstream in names and name not in reached:
                    reached.add(name)
                    frontier.append(name)
        if not reached:
            return []
        registered = {item.name: item for item in Software.select().where(Software.name.in_(reached))}
        graph = {name: [up for up in after[name] if up in reached] for name in reached}
        return [registered[name] for name in dependency_order(graph)]

    def reopen_results_of_other_versions(
        self, software: Software, version: str, image_ids: list[str] | None = None
    ) -> int:
        """Done jobs whose result came from another version than ``version`` back to pending, in one
        statement; each keeps its result (``info``, ``version``, extra-table rows) until the new one
        commits and replaces it, and the token that stored it, so that the same submit sent again (its
        answer lost) is still answered 200 until the job is claimed again. Returns how many.

        ``image_ids``: only these jobs, which this transaction has just stored (and counted as
        reopened); None: every job of the software, then recounted.
        """
        job = job_model(software.name)
        outdated = (job.status == JobStatus.DONE) & (job.version != version)
        if image_ids is not None:
            outdated &= job.image_id.in_(image_ids)
        reopened = {
            "status": JobStatus.PENDING,
            "stage": Stage.WAITING if software.after else Stage.READY,
            "attempts": 0,
            "available_at": 0,
            "claimed_at": None,
            "lease_expires_at": None,
            "error": None,
        }
        self._outbox.add_selected(JOB_REOPENED, software.name, job, outdated, reopened_because("version"))
        count = int(job.update(**reopened).where(outdated).execute())
        if image_ids is not None and count != len(image_ids):
            raise RuntimeError("a job changed while this transaction held its row locked")
        if not count:
            return 0
        if image_ids is None:
            # Done jobs are counted per version: a recount (one statement, as the UPDATE was) sets them.
            self._counts.repair_counts(software)
        now = self._clock()
        self.settle(software, now, image_ids)
        self.reopen_downstream(software, now, image_ids)
        return count

    def settle(self, software: Software, now: float, image_ids: list[str] | None = None) -> int:
        """Waiting jobs whose upstream jobs are all done become claimable; those with one failed or
        skipped are skipped. ``image_ids`` None: every image. Returns how many jobs changed."""
        if not software.after:
            return 0
        job = job_model(software.name)
        waiting = job.stage == Stage.WAITING  # a waiting job is pending
        if image_ids is not None:
            waiting &= job.image_id.in_(image_ids)
        changed = 0
        for upstream in software.after:
            up = job_model(upstream)
            for status in (JobStatus.FAILED, JobStatus.SKIPPED):
                ended = up.select(up.image_id).where(up.status == status)
                if image_ids is not None:
                    ended = ended.where(up.image_id.in_(image_ids))
                changes = {"status": JobStatus.SKIPPED, "stage": Stage.FINISHED, "finished_at": now}
                error = f"{UPSTREAM_PREFIX}{upstream} {status}"
                skipping = waiting & job.image_id.in_(ended)
                self._outbox.add_selected(
                    JOB_SKIPPED, software.name, job, skipping, {"status": "skipped", "error": error}
                )
                skipped = int(job.update(error=error, **changes).where(skipping).execute())
                self._core.count(software.name, {JobStatus.PENDING: -skipped, JobStatus.SKIPPED: skipped})
                changed += skipped
        ready = waiting
        for upstream in software.after:
            up = job_model(upstream)
            done = up.select(up.image_id).where(up.status == JobStatus.DONE)
            if image_ids is not None:
                done = done.where(up.image_id.in_(image_ids))
            ready &= job.image_id.in_(done)
        changed += job.update(stage=Stage.READY, available_at=now).where(ready).execute()  # still pending
        return int(changed)

    def settle_downstream(self, software: Software, now: float, image_ids: list[str]) -> int:
        """After jobs of ``software`` ended (done, failed or skipped): settle everything built on them."""
        return sum(self.settle(item, now, image_ids) for item in self.downstream_closure(software))

    def reopen_downstream(self, software: Software, now: float, image_ids: list[str] | None) -> int:
        """After jobs of ``software`` went back to pending, or turned done after failing: jobs built on
        them that were skipped for it, or were ready but not yet claimed, wait again, and are settled."""
        changed = 0
        for item in self.downstream_closure(software):
            job = job_model(item.name)
            skipped = (job.status == JobStatus.SKIPPED) & job.error.startswith(UPSTREAM_PREFIX)
            unclaimed = (job.status == JobStatus.PENDING) & (job.stage == Stage.READY)
            if image_ids is not None:
                skipped &= job.image_id.in_(image_ids)
                unclaimed &= job.image_id.in_(image_ids)
            reopened = {
                "status": JobStatus.PENDING,
                "stage": Stage.WAITING,
                "error": None,
                "finished_at": None,
                "attempts": 0,
            }
            self._outbox.add_selected(JOB_REOPENED, item.name, job, skipped, reopened_because("upstream"))
            count = int(job.update(**reopened).where(skipped).execute())
            self._core.count(item.name, {JobStatus.SKIPPED: -count, JobStatus.PENDING: count})
            changed += count
            changed += job.update(stage=Stage.WAITING).where(unclaimed).execute()
            self.settle(item, now, image_ids)
        return changed
