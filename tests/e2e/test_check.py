"""``heartbeat check [--fix]``, run as a real process against the test database and this pass's store."""

from __future__ import annotations

import time

import pytest

from conftest import FakeClock
from heartbeat.db.models import Image, JobCount, Upload, job_model
from heartbeat.ingest.direct_uploads import STALE_UPLOAD_GRACE_SECONDS
from helpers import distinct_images, heartbeat, register, stored_keys, upload


@pytest.fixture
def clock() -> FakeClock:
    """The app's clock starts at the real time: `heartbeat check` runs in another process, on the real clock."""
    return FakeClock(time.time())


def put_object(storage, tmp_path, key: str, data: bytes = b"stray bytes") -> None:
    source = tmp_path / "object"
    source.write_bytes(data)
    storage.put_file(key, source, "application/octet-stream")


def test_a_consistent_store_checks_clean(client, check_flags):
    for data in distinct_images(2):
        assert upload(client, data).status_code == 201
    assert client.simulate_post("/v1/uploads").status_code == 201  # open, not stale: nothing wrong

    done = heartbeat("check", *check_flags, "--grace-seconds", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "checked 2 images and 4 objects" in done.stdout
    assert "0 rows without their object, 0 objects without a row, 0 stale uploads" in done.stdout


def test_check_reports_every_kind_of_problem_and_fix_removes_all_but_rows_without_objects(
    client, storage, check_flags, tmp_path
):
    lost, kept = (upload(client, data).json["id"] for data in distinct_images(2))
    storage.delete(Image.get_by_id(lost).storage_key)
    put_object(storage, tmp_path, "images/zz/orphan.png")
    put_object(storage, tmp_path, "thumbnails/zz/gone.jpg")
    put_object(storage, tmp_path, "other/not-ours.txt")  # a shared bucket's other tenants are left alone
    stale = Upload.create(
        id="stale-upload", created_at=0, expires_at=time.time() - STALE_UPLOAD_GRACE_SECONDS - 60, filename=None
    )
    put_object(storage, tmp_path, stale.storage_key)

    found = heartbeat("check", *check_flags, "--grace-seconds", "0")
    assert found.returncode == 1, found.stdout + found.stderr
    lines = found.stdout.splitlines()
    assert f"row without its object: image {lost} ({Image.get_by_id(lost).storage_key})" in lines
    assert "object without a row: images/zz/orphan.png (11 bytes)" in lines
    assert "object without a row: thumbnails/zz/gone.jpg (11 bytes)" in lines
    assert any(line.startswith("stale direct upload: stale-upload ") for line in lines)
    assert "1 rows without their object, 2 objects without a row, 1 stale uploads" in found.stdout
    assert "not-ours" not in found.stdout
    assert len(stored_keys(storage)) == 7, "check alone changes nothing"

    fixed = heartbeat("check", *check_flags, "--grace-seconds", "0", "--fix")
    assert fixed.returncode == 1, "a row without its object is not fixed by removing things"
    assert "object without a row: images/zz/orphan.png (11 bytes) (removed)" in fixed.stdout
    assert "3 removed" in fixed.stdout
    assert stored_keys(storage) == sorted(
        [
            Image.get_by_id(kept).storage_key,
            f"thumbnails/{kept[:2]}/{kept}.jpg",
            f"thumbnails/{lost[:2]}/{lost}.jpg",
            "other/not-ours.txt",
        ]
    )
    assert Upload.get_or_none(Upload.id == "stale-upload") is None

    assert client.simulate_delete(f"/v1/images/{lost}").status_code == 204
    clean = heartbeat("check", *check_flags, "--grace-seconds", "0")
    assert clean.returncode == 0, clean.stdout + clean.stderr


def test_young_objects_without_rows_are_left_alone_they_may_be_uploads_in_flight(storage, check_flags, tmp_path):
    put_object(storage, tmp_path, "images/zz/just-arrived.png")
    done = heartbeat("check", *check_flags, "--fix")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 objects without rows are younger than 600 s and left alone" in done.stdout
    assert stored_keys(storage) == ["images/zz/just-arrived.png"]


def test_check_reports_job_counts_that_differ_from_a_recount_and_fix_sets_them(client, check_flags):
    register(client, "detect")
    for data in distinct_images(3):
        assert upload(client, data).status_code == 201
    drifted = (JobCount.software == "detect") & (JobCount.status == "done@1") & (JobCount.slot == 3)
    JobCount.update(count=JobCount.count + 2).where(drifted).execute()

    found = heartbeat("check", *check_flags, "--grace-seconds", "0")
    assert found.returncode == 1, found.stdout + found.stderr
    assert "job counts of detect differ from a recount: done 2 (recount 0)" in found.stdout.splitlines()
    assert client.simulate_get("/v1/software/detect").json["counts"]["done"] == 2, "check alone changes nothing"

    fixed = heartbeat("check", *check_flags, "--grace-seconds", "0", "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "job counts of detect differ from a recount: done 2 (recount 0) (set to the recount)" in fixed.stdout
    assert client.simulate_get("/v1/software/detect").json["counts"] == {
        "pending": 3,
        "claimed": 0,
        "done": 0,
        "failed": 0,
        "skipped": 0,
        "outdated": 0,
    }
    assert heartbeat("check", *check_flags, "--grace-seconds", "0").returncode == 0


def test_a_database_from_before_the_counters_gets_them_and_its_indexes_on_start(client, db_flags, database):
    register(client, "detect")
    for data in distinct_images(2):
        assert upload(client, data).status_code == 201
    JobCount.delete().execute()  # as an older release left it: no counters, no listing index
    table = job_model("detect")._meta.table_name
    [listing] = [
        index.name for index in database.engine.get_indexes(table) if index.columns[:2] == ["status", "uploaded_date"]
    ]
    database.execute(
        f"DROP INDEX {database.quote(listing)}" + (f" ON {database.quote(table)}" if database.features.mysql else "")
    )

    listed = heartbeat("software", "list", *db_flags)
    assert listed.returncode == 0, listed.stderr
    assert "detect\tpending=2\tclaimed=0\tdone=0\tfailed=0\tskipped=0\toutdated=0" in listed.stdout
    assert listing in [index.name for index in database.engine.get_indexes(table)]
