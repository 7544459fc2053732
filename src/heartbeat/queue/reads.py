"""Reading jobs: one job, a page of a software's jobs, an image's statuses, counts per status."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import peewee

from heartbeat.db.models import Image, Job, JobStatus, Software, job_model
from heartbeat.db.paging import UPLOAD_ORDER, keyset_page
from heartbeat.query.resolve import Resolved
from heartbeat.queue.core import QueuePart
from heartbeat.queue.where import compile_where

THROUGHPUT_WINDOW_SECONDS = 300


class Reads(QueuePart):
    """Reading jobs: pages, statuses, results of upstream software, throughput."""

    def page(
        self,
        software: Software,
        *,
        status: JobStatus | None,
        cursor: str | None,
        limit: int,
        version: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """Up to ``limit`` jobs in upload order, past ``cursor`` (an ``UPLOAD_ORDER`` cursor), with
        ``status`` and a result of ``version`` if given; and the next page's cursor, or None."""
        job = job_model(software.name)
        selected = job.select()
        if status is not None:
            selected = selected.where(job.status == status)
        if version is not None:
            selected = selected.where(job.version == version)
        return keyset_page(selected, (job.uploaded_date, job.image_id), UPLOAD_ORDER, cursor, limit)

    def images_with_status(
        self, software: Software, status: JobStatus
    ) -> tuple[peewee.ModelSelect[Image], tuple[peewee.Field, peewee.Field]]:
        """The images whose job for ``software`` has ``status``, and the upload order to read them in,
        as the job table's ``(uploaded_date, image_id)``: its index ``(status, uploaded_date, image_id)``
        then gives a page in order whatever the number of jobs with other statuses."""
        job = job_model(software.name)
        query = Image.select().join(job, on=(job.image_id == Image.id)).where(job.status == status)
        return query, (job.uploaded_date, job.image_id)

    def where(self, term: Resolved) -> peewee.ColumnBase:
        """A resolved query (``heartbeat.query``) as a condition on images (``queue/where.py``)."""
        return compile_where(self._database, term)

    def jobs_of(self, software: Software, image_ids: list[str]) -> dict[str, Job]:
        """The jobs of these images (those that exist): ``{image_id: job}``, one statement."""
        job = job_model(software.name)
        return {row.image_id: row for row in job.select().where(job.image_id.in_(image_ids))}

    def statuses(self, image_id: str, software: Iterable[Software]) -> dict[str, str]:
        """Each software's status for one image."""
        result = {}
        for item in software:
            job = job_model(item.name)
            row = job.select(job.status).where(job.image_id == image_id).first()
            if row is not None:
                result[item.name] = row.status
        return result

    def upstream_results(self, software: Software, image_ids: list[str]) -> dict[str, dict[str, Any]]:
        """For each image, the ``info`` of every upstream software's job: ``{image_id: {software: info}}``."""
        results: dict[str, dict[str, Any]] = {image_id: {} for image_id in image_ids}
        for upstream in software.after:
            up = job_model(upstream)
            for row in up.select(up.image_id, up.info).where(up.image_id.in_(image_ids)):
                results[row.image_id][upstream] = row.info
        return results

    def finished_recently(self, software: Software, window_seconds: int = THROUGHPUT_WINDOW_SECONDS) -> dict[str, int]:
        """Jobs done and failed in the last ``window_seconds`` (two ranges of the ``(status, finished_at)`` index)."""
        job = job_model(software.name)
        counted = (JobStatus.DONE, JobStatus.FAILED)
        finished = count_by_status(job, job.status.in_(counted) & (job.finished_at >= self._clock() - window_seconds))
        return {str(status): finished.get(status, 0) for status in counted}


def count_by_status(job: type[Job], where: peewee.Expression | None = None) -> dict[str, int]:
    query = job.select(job.status, peewee.fn.COUNT(job.image_id)).group_by(job.status)
    if where is not None:
        query = query.where(where)
    rows: list[tuple[str, int]] = list(query.tuples())  # type: ignore[arg-type]  # stubs: rows are models
    return dict(rows)


def describe_job(job: Job) -> dict[str, Any]:
    """A job row as the API shows it (never its token)."""
    return {
        "image_id": job.image_id,
        "status": job.status,
        "info": job.info,
        "attempts": job.attempts,
        "claimed_at": job.claimed_at,
        "lease_expires_at": job.lease_expires_at if job.status == JobStatus.CLAIMED else None,
        "finished_at": job.finished_at,
        "error": job.error,
        "version": job.version,
    }
