"""Versions: a software's model changes, its done jobs of other versions are reopened, and their last
result stays readable until the new one replaces it."""

from __future__ import annotations

import pytest

from heartbeat.db.models import Software, job_model
from heartbeat.queue import JobQueue
from helpers import claim, distinct_images, register, upload

SW = "/v1/software/detect"


def submit(client, job: dict, info: object, rows: list[dict] | None = None) -> dict:
    body = {"token": job["token"], "info": info} | ({"rows": {"faces": rows}} if rows is not None else {})
    result = client.simulate_put(f"{SW}/jobs/{job['image_id']}/result", json=body)
    assert result.status_code == 200, result.text
    return result.json


def patch(client, expected: int = 200, **body: object) -> dict:
    result = client.simulate_patch(SW, json=body)
    assert result.status_code == expected, result.text
    return result.json


def counts(client) -> dict[str, int]:
    return client.simulate_get(SW).json["counts"]


def faces(client, image_id: str) -> list[int]:
    rows = client.simulate_get(f"{SW}/tables/faces", params={"image_id": image_id}).json["rows"]
    return [row["x"] for row in rows]


@pytest.fixture
def images(client) -> list[str]:
    register(client, "detect", version="v1", tables={"faces": {"x": "int"}})
    return [upload(client, data).json["id"] for data in distinct_images(4)]


def test_a_claim_carries_the_version_and_the_result_is_recorded_under_it(client, images):
    [job] = claim(client, "detect")
    assert job["version"] == "v1"
    assert submit(client, job, {"faces": 1})["version"] == "v1"
    assert client.simulate_get(SW).json["version"] == "v1"
    listed = client.simulate_get(f"{SW}/jobs", params={"version": "v1"}).json["jobs"]
    assert [item["image_id"] for item in listed] == [job["image_id"]]


def test_a_new_version_reopens_exactly_the_done_jobs_of_other_versions(client, images):
    first, second, third = claim(client, "detect", max=3)
    submit(client, first, {"faces": 1}, [{"x": 1}])
    submit(client, second, {"faces": 2}, [{"x": 2}, {"x": 3}])
    failed = {"token": third["token"], "error": "no", "retry": False}
    assert client.simulate_post(f"{SW}/jobs/{third['image_id']}/fail", json=failed).status_code == 200
    assert counts(client) == {"pending": 1, "claimed": 0, "done": 2, "failed": 1, "skipped": 0, "outdated": 0}

    changed = patch(client, version="v2")
    assert changed["version"] == "v2"
    assert changed["counts"] == {"pending": 3, "claimed": 0, "done": 0, "failed": 1, "skipped": 0, "outdated": 0}
    reopened = client.simulate_get(f"{SW}/jobs/{first['image_id']}").json
    # Still readable with its last result until the new one commits.
    assert (reopened["status"], reopened["info"], reopened["version"]) == ("pending", {"faces": 1}, "v1")
    assert faces(client, second["image_id"]) == [2, 3]

    again = {job["image_id"]: job for job in claim(client, "detect", max=3)}
    assert {job["version"] for job in again.values()} == {"v2"}
    assert set(again) == set(images) - {third["image_id"]}, "the failed job stays failed"
    submit(client, again[second["image_id"]], {"faces": 1}, [{"x": 9}])
    assert faces(client, second["image_id"]) == [9], "the new result's rows replace the old ones"
    stored = client.simulate_get(f"{SW}/jobs/{second['image_id']}").json
    assert (stored["status"], stored["info"], stored["version"]) == ("done", {"faces": 1}, "v2")


def submit_late(client, clock, database, job: dict, info: object, rows: list[dict]) -> None:
    """The result of ``job`` after its lease ran out on the last attempt (the reaper failed the job)."""
    clock.advance(3600)
    assert JobQueue(database, clock).claims.expire_leases(Software.get(Software.name == "detect")) == 1
    assert client.simulate_get(f"{SW}/jobs/{job['image_id']}").json["status"] == "failed"
    submit(client, job, info, rows)


def submit_batch(client, clock, database, job: dict, info: object, rows: list[dict]) -> None:
    body = {"results": [{"image_id": job["image_id"], "token": job["token"], "info": info, "rows": {"faces": rows}}]}
    answer = client.simulate_post(f"{SW}/results", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json["results"][0]["status"] == "done"


def submit_single(client, clock, database, job: dict, info: object, rows: list[dict]) -> None:
    assert submit(client, job, info, rows)["version"] == "v1", "recorded under the version it was claimed under"


@pytest.mark.parametrize("send", [submit_single, submit_batch, submit_late])
def test_a_result_of_a_lease_taken_before_a_new_version_is_reopened_on_arrival(client, clock, database, images, send):
    if send is submit_late:
        patch(client, max_attempts=1)
    [held] = claim(client, "detect")
    patch(client, version="v2")
    send(client, clock, database, held, {"faces": 1}, [{"x": 7}])

    job = client.simulate_get(f"{SW}/jobs/{held['image_id']}").json
    # Recorded under v1 and readable, but outdated: open for v2 like every other result of v1.
    assert (job["status"], job["version"], job["info"]) == ("pending", "v1", {"faces": 1})
    assert faces(client, held["image_id"]) == [7]
    assert counts(client) == {"pending": 4, "claimed": 0, "done": 0, "failed": 0, "skipped": 0, "outdated": 0}
    again = {job["image_id"]: job for job in claim(client, "detect", max=4)}
    assert set(again) == set(images), "handed out again, under the new version"
    submit(client, again[held["image_id"]], {"faces": 2}, [{"x": 8}])
    stored = client.simulate_get(f"{SW}/jobs/{held['image_id']}").json
    assert (stored["status"], stored["version"], stored["info"]) == ("done", "v2", {"faces": 2})
    assert faces(client, held["image_id"]) == [8]


def test_the_same_submit_sent_again_after_its_reopening_is_answered_200_until_claimed_again(client, images):
    [held] = claim(client, "detect")
    patch(client, version="v2")
    submit(client, held, {"faces": 1}, [{"x": 7}])
    repeated = submit(client, held, {"faces": 1}, [{"x": 7}])
    assert (repeated["status"], repeated["version"]) == ("pending", "v1")
    assert faces(client, held["image_id"]) == [7], "no second copy"
    claim(client, "detect", max=4)
    body = {"token": held["token"], "info": {}}
    assert client.simulate_put(f"{SW}/jobs/{held['image_id']}/result", json=body).status_code == 409


def test_a_result_of_a_lease_taken_before_a_version_without_recompute_stays_done_and_outdated(client, images):
    [held] = claim(client, "detect")
    patch(client, version="v2", recompute=False)
    assert submit(client, held, {"faces": 0})["version"] == "v1"
    assert (counts(client)["done"], counts(client)["outdated"]) == (1, 1)
    [fresh] = claim(client, "detect")
    assert fresh["version"] == "v2" and fresh["image_id"] != held["image_id"]
    submit(client, fresh, {"faces": 0})
    assert (counts(client)["done"], counts(client)["outdated"]) == (2, 1)


def test_recompute_false_reopens_nothing_and_counts_the_old_results_as_outdated(client, images):
    for job in claim(client, "detect", max=2):
        submit(client, job, {})
    changed = patch(client, version="v2", recompute=False)
    assert (changed["counts"]["done"], changed["counts"]["outdated"], changed["counts"]["pending"]) == (2, 2, 2)
    assert patch(client, version="v1", recompute=False)["counts"]["outdated"] == 0, "back to the version they came from"


def test_patch_changes_the_lease_attempts_and_pause_and_refuses_anything_else(client, clock, images):
    changed = patch(client, lease_seconds=5, max_attempts=7, paused=True)
    assert (changed["lease_seconds"], changed["max_attempts"], changed["paused"]) == (5, 7, True)
    assert claim(client, "detect") == []
    patch(client, paused=False)
    [job] = claim(client, "detect")
    assert job["lease_expires_at"] == clock.now + 5
    for body in ({"version": ""}, {"version": "x" * 65}, {"name": "other"}, {"lease_seconds": 0}, {"paused": "yes"}):
        patch(client, 400, **body)
    assert client.simulate_patch("/v1/software/nobody", json={"paused": True}).status_code == 404


def test_an_older_database_gets_the_version_columns_and_its_results_their_version(client, database, images):
    for job in claim(client, "detect", max=2):
        submit(client, job, {})
    table = job_model("detect")._meta.table_name
    for column in ("version", "claimed_version"):  # as a database made before versions existed
        if database.features.mysql:
            database.execute(f"ALTER TABLE {database.quote(table)} DROP COLUMN {database.quote(column)}")
        else:
            database.execute(f"ALTER TABLE {database.quote(table)} DROP COLUMN {column}")
    queue = JobQueue(database, lambda: 0.0)
    queue.upgrade()
    software = Software.get(Software.name == "detect")
    assert queue.counters.counts(software)["done"] == 2
    assert queue.counters.counts(software)["outdated"] == 0
    assert {job["version"] for job in client.simulate_get(f"{SW}/jobs", params={"status": "done"}).json["jobs"]} == {
        "v1"
    }


def test_software_built_on_a_result_reopened_on_arrival_waits_for_the_new_one(client, images):
    register(client, "crop", after=["detect"])
    [held] = claim(client, "detect")
    patch(client, version="v2")
    submit(client, held, {"faces": 1}, [{"x": 7}])
    assert claim(client, "crop") == [], "its upstream result is outdated: nothing to build on yet"
    [again] = [job for job in claim(client, "detect", max=4) if job["image_id"] == held["image_id"]]
    submit(client, again, {"faces": 2}, [{"x": 8}])
    assert [job["image_id"] for job in claim(client, "crop", max=4)] == [held["image_id"]]
