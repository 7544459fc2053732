"""Reads that run on every claim, listing or dashboard refresh walk an index: they neither scan nor
sort a table, so their cost does not grow with the number of images or jobs."""

from __future__ import annotations

import dataclasses

import peewee
import pytest

from heartbeat.catalog.registry import Registry
from heartbeat.db.database import Database
from heartbeat.db.models import Image, ImportedObject, JobStatus, Software, Stage, job_model
from heartbeat.db.paging import after
from heartbeat.ingest.source_import import unlisted_records
from heartbeat.queue import JobQueue
from heartbeat.queue.statements import JobTable

IMAGES = 3000


@pytest.fixture
def filled(database: Database) -> JobQueue:
    """3,000 images of two origins with a job each: all done but the last 100, which are pending."""
    queue = JobQueue(database, lambda: 0.0)
    Registry(database, queue, lambda: 0.0, default_lease_seconds=60, default_max_attempts=3).register("face_detection")
    rows = [
        {
            "id": f"img{n:06d}",
            "filename": "x.jpg",
            "uploaded_date": float(n),
            "origin": f"cam{n % 2}",
            "sha256": f"{n:064d}",
            "size": 1,
            "content_type": "image/jpeg",
            "width": 1,
            "height": 1,
            "storage_key": f"k{n}",
        }
        for n in range(IMAGES)
    ]
    with database.atomic():
        for chunk in peewee.chunked(rows, 500):
            Image.insert_many(chunk).execute()
    queue.rows.backfill_jobs(Software.get(Software.name == "face_detection"))
    job = job_model("face_detection")
    finished = {"stage": Stage.FINISHED, "status": JobStatus.DONE, "finished_at": job.uploaded_date}
    job.update(**finished).where(job.uploaded_date < IMAGES - 100).execute()
    if database.features.mysql:
        database.execute(f"ANALYZE TABLE `{job._meta.table_name}`, images")
    return queue


def plan(database: Database, sql: str, params: object) -> str:
    explain = "EXPLAIN " if database.features.mysql else "EXPLAIN QUERY PLAN "
    return " ".join(str(row) for row in database.execute(explain + sql, params))


def assert_along(plan_text: str, index: str) -> None:
    assert index in plan_text, plan_text
    assert "filesort" not in plan_text.lower(), plan_text  # MySQL sorting rows itself
    assert "TEMP B-TREE" not in plan_text, plan_text  # SQLite sorting rows itself
    assert "'ALL'" not in plan_text, plan_text  # MySQL reading a whole table
    assert "SCAN images" not in plan_text and "SCAN job_" not in plan_text, plan_text  # SQLite reading a whole table


def test_the_claim_query_uses_the_index_without_sorting(database, filled):
    without_locks = Database(database.engine, dataclasses.replace(database.features, skip_locked=False))
    sql = JobTable("face_detection", without_locks).candidates_sql  # the claim's own query
    assert_along(plan(database, sql, (10_000.0, 10)), "stage_sort_priority_uploaded_date_image_id")


def test_a_page_of_jobs_of_one_status_is_read_along_the_status_index(database, filled):
    job = job_model("face_detection")
    order = (job.uploaded_date, job.image_id)
    query = job.select().where((job.status == JobStatus.PENDING) & after(order, (2950.0, "img002950")))
    sql, params = query.order_by(*order).limit(101).sql()  # as ``JobQueue.page`` reads it
    assert_along(plan(database, sql, params), "status_uploaded_date_image_id")


def test_a_page_of_images_by_a_softwares_status_is_read_along_the_job_status_index(database, filled):
    software = Software.get(Software.name == "face_detection")
    query, order = filled.reads.images_with_status(software, JobStatus.PENDING)
    sql, params = query.order_by(*order).limit(101).sql()  # as ``Catalog.page`` reads it
    assert_along(plan(database, sql, params), "status_uploaded_date_image_id")


def test_a_page_of_images_of_one_origin_is_read_along_the_origin_index(database, filled):
    order = (Image.uploaded_date, Image.id)
    sql, params = Image.select().where(Image.origin == "cam1").order_by(*order).limit(101).sql()
    assert_along(plan(database, sql, params), "origin_uploaded_date_id")


def test_the_throughput_is_read_along_the_finished_at_index(database, filled):
    job = job_model("face_detection")
    recent = job.status.in_([JobStatus.DONE, JobStatus.FAILED]) & (job.finished_at >= 2900)
    query = job.select(job.status, peewee.fn.COUNT(job.image_id)).where(recent).group_by(job.status)
    sql, params = query.sql()  # as ``JobQueue.finished_recently`` reads it
    assert_along(plan(database, sql, params), "status_finished_at")


def test_the_records_an_import_did_not_list_are_read_along_their_index(database):
    """A run finds the objects gone since the last one a page at a time, however many records it has."""
    rows = [
        {"id": f"{n:064d}", "source": f"s3://photos/{n % 3}/", "key": f"k{n}", "size": 1, "version": "v"}
        | {"outcome": "new", "seen_at": float(n % 7)}
        for n in range(IMAGES)
    ]
    with database.atomic():
        for chunk in peewee.chunked(rows, 500):
            ImportedObject.insert_many(chunk).execute()
    if database.features.mysql:
        database.execute("ANALYZE TABLE imported_objects")
    sql, params = unlisted_records("s3://photos/1/", 5.0, f"{70:064d}").sql()
    assert_along(plan(database, sql, params), "source_id")
    assert "SCAN imported_objects" not in plan(database, sql, params)
