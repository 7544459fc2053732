"""Maintained job counts: every status change adjusts them in its own transaction, so ``counts`` (and
the ``heartbeat_jobs`` gauges) always equal a recount, without counting rows on each read."""

from __future__ import annotations

import pytest

from heartbeat.db.models import JobCount, Software
from heartbeat.queue import JobQueue
from helpers import claim, distinct_images, register, upload


@pytest.fixture
def queue(database, clock) -> JobQueue:
    return JobQueue(database, clock)


def counts(client, name: str) -> dict[str, int]:
    result = client.simulate_get(f"/v1/software/{name}")
    assert result.status_code == 200, result.text
    return result.json["counts"]


def assert_counts_true(client, queue: JobQueue) -> None:
    """Every software's counts, as the API shows them, equal a recount of its job rows."""
    for software in Software.select():
        assert counts(client, software.name) == queue.counters.recount(software), software.name


def test_counts_follow_every_status_change(client, clock, queue):
    images = [upload(client, data).json["id"] for data in distinct_images(6)]
    register(client, "detect", lease_seconds=10, max_attempts=2, tables={"faces": {"x": "int"}})
    register(client, "describe", after=["detect"])
    register(client, "cam_only", origins=["cam1"])
    assert counts(client, "detect")["pending"] == 6
    assert counts(client, "cam_only")["skipped"] == 6
    assert_counts_true(client, queue)

    upload(client, distinct_images(7)[6], origin="cam1")  # a new image: a job for each software
    assert counts(client, "cam_only")["pending"] == 1
    assert_counts_true(client, queue)

    first, second, third = claim(client, "detect", max=3)
    assert counts(client, "detect")["claimed"] == 3
    assert_counts_true(client, queue)

    body = {"token": first["token"], "info": {"faces": 1}, "rows": {"faces": [{"x": 1}]}}
    assert client.simulate_put(f"/v1/software/detect/jobs/{first['image_id']}/result", json=body).status_code == 200
    assert counts(client, "detect")["done"] == 1  # and its downstream job is claimable
    fail = {"token": second["token"], "error": "no", "retry": False}
    assert client.simulate_post(f"/v1/software/detect/jobs/{second['image_id']}/fail", json=fail).status_code == 200
    assert counts(client, "describe")["skipped"] == 1  # skipped for its failed upstream job
    release = {"token": third["token"]}
    assert (
        client.simulate_post(f"/v1/software/detect/jobs/{third['image_id']}/release", json=release).status_code == 200
    )
    assert_counts_true(client, queue)

    requeue = client.simulate_post("/v1/software/detect/requeue", json={"status": "failed"})
    assert requeue.json == {"requeued": 1}
    assert counts(client, "describe")["skipped"] == 0  # waiting again
    assert_counts_true(client, queue)

    batch = claim(client, "detect", max=2)
    results = [{"image_id": job["image_id"], "token": job["token"], "info": {}} for job in batch]
    results.append({"image_id": batch[0]["image_id"], "token": "stale", "info": {}})
    answer = client.simulate_post("/v1/software/detect/results", json={"results": results})
    assert [item["status"] for item in answer.json["results"]] == ["done", "done", "stale"]
    assert_counts_true(client, queue)

    [lapsing] = claim(client, "detect", lease_seconds=1)
    clock.advance(2)
    [again] = claim(client, "detect")  # the lease ran out: the same job, claimed again (still claimed)
    assert again["image_id"] == lapsing["image_id"]
    clock.advance(11)
    assert queue.claims.expire_leases(Software.get(Software.name == "detect")) == 1  # the last attempt ran out
    assert counts(client, "detect")["failed"] == 1
    late = {"token": again["token"], "info": {}}
    assert client.simulate_put(f"/v1/software/detect/jobs/{again['image_id']}/result", json=late).status_code == 200
    assert_counts_true(client, queue)

    before = counts(client, "detect")
    requeued = client.simulate_post("/v1/software/detect/requeue", json={"status": "done"}).json["requeued"]
    assert requeued == before["done"] > 0
    assert counts(client, "detect")["pending"] == before["pending"] + requeued
    assert_counts_true(client, queue)

    for image_id in images[:3]:
        assert client.simulate_delete(f"/v1/images/{image_id}").status_code == 204
    assert sum(counts(client, "detect").values()) == 4
    assert_counts_true(client, queue)


def test_reading_counts_does_not_count_rows(client, queue, database):
    """``counts`` reads the counter rows: change them behind the queue's back and the API shows it."""
    register(client, "detect")
    for data in distinct_images(3):
        upload(client, data)
    JobCount.update(count=JobCount.count + 5).where(
        (JobCount.software == "detect") & (JobCount.status == "failed") & (JobCount.slot == 0)
    ).execute()
    assert counts(client, "detect") == {"pending": 3, "claimed": 0, "done": 0, "failed": 5, "skipped": 0, "outdated": 0}
    software = Software.get(Software.name == "detect")
    assert queue.counters.count_differences(software) == {"failed": (5, 0)}
    assert queue.counters.repair_counts(software)["pending"] == 3
    assert queue.counters.count_differences(software) == {}
    assert counts(client, "detect")["failed"] == 0


def test_a_database_without_counters_gets_them_from_a_recount_at_upgrade(client, queue, database):
    register(client, "detect")
    register(client, "cam_only", origins=["cam1"])
    for data in distinct_images(4):
        upload(client, data)
    JobCount.delete().execute()  # as a database made before the counters existed
    queue.upgrade()
    assert counts(client, "detect") == {"pending": 4, "claimed": 0, "done": 0, "failed": 0, "skipped": 0, "outdated": 0}
    assert counts(client, "cam_only")["skipped"] == 4
    queue.upgrade()  # again: nothing changes
    assert counts(client, "detect")["pending"] == 4


def test_a_backfill_in_batches_gives_each_image_one_job_and_none_to_one_deleted_midway(
    client, clock, queue, monkeypatch
):
    """A registration's backfill runs in short transactions of a few images each (here 3 of 8): every
    image gets one job, skipped by origin or waiting on upstream as a whole backfill would make it,
    in upload order; an image deleted between the listing of its batch and the batch gets none."""
    from heartbeat.queue import rows

    monkeypatch.setattr(rows, "BACKFILL_BATCH", 3)
    images = []
    for number, data in enumerate(distinct_images(8)):
        images.append(upload(client, data, origin="cam1" if number % 2 else "cam2").json["id"])
        clock.advance(1)
    register(client, "detect")
    batches = []
    backfill_batch = rows.Rows._backfill_batch

    def spy(self, software, image_ids):
        batches.append(list(image_ids))
        if software.name == "cam_only" and len(batches) == 5:  # its second batch: images 4 to 6
            assert client.simulate_delete(f"/v1/images/{image_ids[0]}").status_code == 204
        return backfill_batch(self, software, image_ids)

    monkeypatch.setattr(rows.Rows, "_backfill_batch", spy)
    register(client, "describe", after=["detect"])
    register(client, "cam_only", origins=["cam1"])
    assert batches[:3] == [images[0:3], images[3:6], images[6:8]], "in upload order, 3 at a time"
    assert counts(client, "describe")["pending"] == 7  # waiting on detect (and the deleted image's gone)
    listed = client.simulate_get("/v1/software/cam_only/jobs", params={"limit": 100}).json
    jobs = {job["image_id"]: job["status"] for job in listed["jobs"]}
    assert images[3] not in jobs, "deleted before its batch: no job"
    assert jobs == {image: "pending" if n % 2 else "skipped" for n, image in enumerate(images) if n != 3}
    assert_counts_true(client, queue)
