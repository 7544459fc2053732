"""Job rows made and removed outside the worker protocol: a software's table at registration, a job
per image at upload and at registration (backfill), and an image's rows at deletion.

On MySQL an upload reads the registry with a shared lock here (``LOCK IN SHARE MODE``), so that an
upload and a registration cannot miss each other; SQLite's ``BEGIN IMMEDIATE`` already excludes
other writers.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import peewee

from heartbeat.catalog.pipeline import dependency_order, skip_reason
from heartbeat.db.database import transactional
from heartbeat.db.models import Image, JobStatus, Software, Stage, extra_table_model, job_model
from heartbeat.db.paging import after as rows_after
from heartbeat.queue.core import QueueCore, QueuePart, counted_as
from heartbeat.queue.counts import Counts
from heartbeat.queue.pipeline import Pipelines

BACKFILL_BATCH = 1000  # images a transaction of a registration's backfill gives jobs


class Rows(QueuePart):
    """Job rows made and removed at registration, upload and deletion; upgrading older tables."""

    def __init__(self, core: QueueCore, pipelines: Pipelines, counts: Counts):
        super().__init__(core)
        self._pipelines = pipelines
        self._counts = counts

    def create_job_table(self, software_name: str, version: str) -> None:
        """The job table of a software about to be registered, and its counters (nothing that exists)."""
        self._database.create_tables([job_model(software_name)])
        self._counts.create_counters(software_name, version)

    def upgrade(self) -> None:
        """Bring the job tables of a database made by an older release up to this one: every index
        of the job model, and maintained counts (from a recount) for software that have none. Run at
        start; it changes nothing on an up-to-date database."""
        for software in Software.select():
            job = job_model(software.name)
            self._database.add_missing_columns(job)
            self._database.add_missing_indexes(job)
            # Results stored before versions existed came from the software's first (and only) version.
            unversioned = (job.status == JobStatus.DONE) & job.version.is_null()
            # Looked for first: a read-only command (export, check) running beside a server must not
            # take SQLite's write lock, which a busy server's transactions may refuse it at once.
            if (
                job.select().where(unversioned).exists()
                and job.update(version=software.version).where(unversioned).execute()
            ):
                self._counts.repair_counts(software)
        self._counts.add_missing_counters()

    def create_jobs_for(self, images: Sequence[Image]) -> list[str]:
        """Give new images a job in every software's table; call inside their transaction (an upload's,
        or an import's batch). Returns the names of the software whose job can be claimed at once (to
        wake their waiting claims). One read of the registry, and per software one statement for the
        jobs and one for the counts.

        Pending (waiting, for software with upstream software), or skipped for an origin the software
        does not take. On MySQL the registry is read with a shared lock, so a software being registered
        waits for this upload to commit and then backfills it; it can never miss the image.
        """
        registered = self._registered_for_upload()
        skipped: dict[str, set[str]] = {image.id: set() for image in images}
        claimable = []
        for name in dependency_order({name: software.after for name, software in registered.items()}):
            software = registered[name]
            jobs: list[tuple[Image, Stage, JobStatus, str | None]] = []
            for image in images:
                reason = skip_reason(software, image.origin, skipped[image.id])
                if reason is None:
                    jobs.append((image, Stage.WAITING if software.after else Stage.READY, JobStatus.PENDING, None))
                else:
                    skipped[image.id].add(name)
                    jobs.append((image, Stage.FINISHED, JobStatus.SKIPPED, reason))
            self._core.table(software).insert_jobs(jobs)
            if any(stage == Stage.READY for _, stage, _, _ in jobs):
                claimable.append(name)
            # One statement per software, on its counter rows' primary key: a statement naming several
            # software would scan, and so lock, the other software's counter rows too (InnoDB).
            self._core.count(name, collections.Counter(status for _, _, status, _ in jobs))
        return claimable

    def _registered_for_upload(self) -> dict[str, Software]:
        """Every software's name, ``after`` and ``origins``, read as an upload must (see
        :meth:`create_jobs_for`); SQL text rather than peewee's query builder, which cost more CPU than
        the read."""
        quote = self._database.quote
        sql = f"SELECT name, {quote('after')}, origins FROM {quote('software')}{self._database.features.share_lock}"
        return {
            name: Software(
                name=name, after=Software.after.python_value(after), origins=Software.origins.python_value(origins)
            )
            for name, after, origins in self._database.execute(sql).fetchall()
        }

    def backfill_jobs(self, software: Software) -> int:
        """A job for every image that has none yet: pending, waiting on upstream, or skipped by origin;
        returns how many were made. Call once the software's row has committed.

        In batches of ``BACKFILL_BATCH`` images in upload order, each its own short transaction: one
        transaction over every image would hold its locks on all of them (an upload, a result or a
        requeue meeting them deadlocks, and a big one would lose until its retries ran out) for as
        long as the whole backfill takes. The images of a batch are listed by a plain read, which
        locks nothing, and read again with a lock as their jobs are made, so that an image deleted
        meanwhile gets none. An image uploaded since the software's row committed got its job at its
        upload (which reads the registry with a lock) and is passed over."""
        count = 0
        after: tuple[float, str] | None = None
        while True:
            batch = Image.select(Image.uploaded_date, Image.id).order_by(Image.uploaded_date, Image.id)
            if after is not None:
                batch = batch.where(rows_after((Image.uploaded_date, Image.id), after))
            keys: list[tuple[float, str]] = list(batch.limit(BACKFILL_BATCH).tuples())  # type: ignore[arg-type]
            if not keys:
                return count
            count += self._backfill_batch(software, [image_id for _date, image_id in keys])
            after = keys[-1]

    @transactional
    def _backfill_batch(self, software: Software, image_ids: list[str]) -> int:
        now = self._clock()
        job = job_model(software.name)
        stage = Stage.WAITING if software.after else Stage.READY
        missing = (
            Image.select(Image.id, Image.uploaded_date, Image.priority * -1, peewee.Value(int(stage)))
            .join(job, peewee.JOIN.LEFT_OUTER, on=(job.image_id == Image.id))
            .where(Image.id.in_(image_ids) & job.image_id.is_null())
        )
        columns = [job.image_id, job.uploaded_date, job.sort_priority, job.stage]
        count = int(job.insert_from(missing, columns).as_rowcount().execute())
        skipped = 0
        if software.origins is not None and count:
            elsewhere = Image.select(Image.id).where(
                Image.id.in_(image_ids) & (Image.origin.not_in(software.origins) | Image.origin.is_null())
            )
            skip = {"status": JobStatus.SKIPPED, "stage": Stage.FINISHED, "finished_at": now}
            error = f"origin is not one of {software.name}'s origins"
            pending = (job.status == JobStatus.PENDING) & job.image_id.in_(elsewhere)
            skipped = int(job.update(error=error, **skip).where(pending).execute())
        self._core.count(software.name, {JobStatus.PENDING: count - skipped, JobStatus.SKIPPED: skipped})
        self._pipelines.settle(software, now, image_ids)
        return count

    def _registry_for_image_change(self) -> peewee.ModelSelect[Software]:
        """Every software, read as a transaction that changes one image's job in every software's table
        must read it. On MySQL with a shared lock, as an upload reads it: a locking read sees a software
        registered after this transaction's first read (whose backfill may have made the image's job from
        what the image was then), and a software not yet committed waits for this transaction and then
        backfills from what it committed."""
        registry = Software.select()
        if self._database.features.mysql:
            # peewee takes the locking clause's text here (its hint says bool only)
            registry = registry.for_update(self._database.features.share_lock.strip())  # type: ignore[arg-type]
        return registry

    def delete_image_rows(self, image_ids: list[str]) -> None:
        """Remove these images' jobs and extra-table rows, the counts adjusted; call inside their
        delete transaction."""
        for software in self._registry_for_image_change():
            job = job_model(software.name)
            query = job.select(job.status, job.version).where(job.image_id.in_(image_ids))
            rows = list(query.for_update() if self._database.features.mysql else query)
            if rows and job.delete().where(job.image_id.in_(image_ids)).execute():
                changes: dict[str, int] = {}
                for row in rows:
                    counter = counted_as(JobStatus(row.status), row.version)
                    changes[counter] = changes.get(counter, 0) - 1
                self._core.count(software.name, changes)
            for table, columns in software.tables.items():
                extra = extra_table_model(software.id, table, columns)
                extra.delete().where(extra.image_id.in_(image_ids)).execute()

    def reprioritize(self, image_id: str, priority: int) -> None:
        """Carry an image's new priority into its job in every software's table; call in its transaction."""
        for software in self._registry_for_image_change():
            job = job_model(software.name)
            job.update(sort_priority=-priority).where(job.image_id == image_id).execute()
