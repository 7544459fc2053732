"""The claim reads pending jobs along an index; it never scans or sorts the software's table."""

from __future__ import annotations

import dataclasses

import peewee

from heartbeat.db.database import Database
from heartbeat.db.models import Image, JobStatus, Software, Stage, job_model
from heartbeat.queue import JobQueue
from heartbeat.queue.statements import JobTable
from heartbeat.registry import Registry


def test_the_claim_query_uses_the_index_without_sorting(database: Database):
    queue = JobQueue(database, lambda: 0.0)
    Registry(database, queue, lambda: 0.0, default_lease_seconds=60, default_max_attempts=3).register("face_detection")
    rows = [
        {
            "id": f"img{n:06d}",
            "filename": "x.jpg",
            "uploaded_date": float(n),
            "sha256": f"{n:064d}",
            "size": 1,
            "content_type": "image/jpeg",
            "width": 1,
            "height": 1,
            "storage_key": f"k{n}",
        }
        for n in range(3000)
    ]
    with database.atomic():
        for chunk in peewee.chunked(rows, 500):
            Image.insert_many(chunk).execute()
    queue.backfill_jobs(Software.get(Software.name == "face_detection"))
    job = job_model("face_detection")
    job.update(stage=Stage.FINISHED, status=JobStatus.DONE).where(job.uploaded_date < 2900).execute()
    mysql = database.features.mysql
    if mysql:
        database.execute(f"ANALYZE TABLE `{job._meta.table_name}`")

    without_locks = Database(database.engine, dataclasses.replace(database.features, skip_locked=False))
    sql = JobTable("face_detection", without_locks).candidates_sql  # the claim's own query
    params = (10_000.0, 10)
    plan = " ".join(str(row) for row in database.execute(f"EXPLAIN {'' if mysql else 'QUERY PLAN '}{sql}", params))

    assert "stage_sort_priority_uploaded_date_image_id" in plan, plan
    assert "filesort" not in plan.lower(), plan
    assert "TEMP B-TREE" not in plan, plan
