"""Deleting an image is all or nothing as the client sees it.

The commit of its rows is the deletion. A failure before it (the database) answers 503 and
changes nothing; a failure of the store after it answers 204 all the same, and the bytes the store
kept are objects without a row, which ``heartbeat check --fix`` (run as a real process) removes.
"""

from __future__ import annotations

import concurrent.futures
import errno
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import falcon.testing
import peewee
import pytest
from moto.server import ThreadedMotoServer

from conftest import BACKEND, FakeClock
from heartbeat.app import create_app
from heartbeat.config import Settings
from heartbeat.errors import BackendUnavailable
from heartbeat.ingest.thumbnails import thumbnail_key
from heartbeat.queue.rows import Rows
from heartbeat.storage import Storage, open_storage
from helpers import claim, free_port, heartbeat, register, stored_keys, upload

FACES = {"faces": {"x": "int"}}


@pytest.fixture
def clock() -> FakeClock:
    """The app's clock starts at the real time: `heartbeat check` runs in another process, on the real clock."""
    return FakeClock(time.time())


def image_with_a_result(client: falcon.testing.TestClient) -> str:
    """An image with a done job and an extra-table row: every kind of trace a delete removes."""
    register(client, "face_detection", tables=FACES)
    image_id = upload(client).json["id"]
    [job] = claim(client)
    body = {"token": job["token"], "info": {"faces": 1}, "rows": {"faces": [{"x": 7}]}}
    assert client.simulate_put(f"/v1/software/face_detection/jobs/{image_id}/result", json=body).status_code == 200
    return image_id


def assert_every_row_gone(client: falcon.testing.TestClient, image_id: str) -> None:
    assert client.simulate_get(f"/v1/images/{image_id}").status_code == 404
    assert client.simulate_get(f"/v1/software/face_detection/jobs/{image_id}").status_code == 404
    assert client.simulate_get("/v1/software/face_detection/tables/faces").json["rows"] == []


def assert_every_row_kept(client: falcon.testing.TestClient, image_id: str) -> None:
    assert client.simulate_get(f"/v1/images/{image_id}").json["jobs"] == {"face_detection": "done"}
    rows = client.simulate_get("/v1/software/face_detection/tables/faces").json["rows"]
    assert [(row["image_id"], row["x"]) for row in rows] == [(image_id, 7)]


# --- the S3 store really stopped ---------------------------------------------------------------


class StoppableS3:
    """A moto S3 server of the test's own that can be stopped and started again on the same port
    (moto keeps its objects in this process meanwhile, so the bytes' fate can be seen after)."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server: ThreadedMotoServer | None = None

    def start(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def settings(self, bucket: str) -> dict[str, Any]:
        return {
            "storage": f"s3://{bucket}",
            "s3_endpoint": f"http://127.0.0.1:{self.port}",
            "s3_access_key": "heartbeat-test",
            "s3_secret_key": "heartbeat-test-secret",
        }


@pytest.fixture
def stoppable_s3() -> Iterator[StoppableS3]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    s3 = StoppableS3()
    s3.start()
    yield s3
    s3.stop()


def test_with_the_s3_store_stopped_a_delete_answers_204_and_check_fix_removes_what_it_left(
    database, db_auth, db_flags, stoppable_s3, clock, tmp_path
):
    s3_settings = stoppable_s3.settings("heartbeat-test-stopped")
    settings = Settings(data_dir=tmp_path / "data", db_auth=db_auth, **s3_settings)
    storage = open_storage(settings)
    client = falcon.testing.TestClient(create_app(settings, database=database, storage=storage, clock=clock))
    image_id = image_with_a_result(client)
    kept = stored_keys(storage)
    assert len(kept) == 2

    stoppable_s3.stop()
    assert client.simulate_get("/v1/health").status_code == 503  # the store is really gone
    result = client.simulate_delete(f"/v1/images/{image_id}")
    assert result.status_code == 204, result.text
    assert_every_row_gone(client, image_id)

    stoppable_s3.start()
    assert stored_keys(storage) == kept, "the store kept the bytes while it was down"
    flags = [f"--{field.replace('_', '-')}={value}" for field, value in s3_settings.items()]
    done = heartbeat("check", *db_flags, *flags, "--fix", "--grace-seconds", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 objects without a row" in done.stdout
    assert stored_keys(storage) == []


# --- the store failing part way, on this pass's store -------------------------------------------


class FailingDeletes:
    """``store``, except that deleting a key ``fails`` picks raises ``error``, as a store that went down
    (or a folder that turned read-only) between two deletes would."""

    def __init__(self, store: Storage, fails: Callable[[str], bool], error: Exception):
        self._store = store
        self._fails = fails
        self._error = error
        self.failed: list[str] = []

    def delete(self, key: str) -> None:
        if self._fails(key):
            self.failed.append(key)
            raise self._error
        self._store.delete(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


STORE_ERRORS = {
    "store-unreachable": BackendUnavailable("object storage did not answer: MaxRetryError"),
    "read-only-folder": OSError(errno.EROFS, "Read-only file system"),
}


@pytest.mark.parametrize("error", STORE_ERRORS.values(), ids=STORE_ERRORS.keys())
@pytest.mark.parametrize("failing", ["thumbnail", "image"], ids=["thumbnail-after-image", "image-first"])
def test_a_store_failing_during_a_delete_leaves_only_bytes_that_check_fix_removes(
    settings, database, storage, clock, check_flags, failing, error
):
    flaky = FailingDeletes(storage, lambda key: key.startswith(f"{failing}s/"), error)
    client = falcon.testing.TestClient(create_app(settings, database=database, storage=flaky, clock=clock))
    image_id = image_with_a_result(client)

    result = client.simulate_delete(f"/v1/images/{image_id}")

    assert result.status_code == 204, result.text
    assert flaky.failed, "the fault was injected"
    assert_every_row_gone(client, image_id)
    left = stored_keys(storage)
    assert thumbnail_key(image_id) in left
    assert len(left) == (1 if failing == "thumbnail" else 2)
    done = heartbeat("check", *check_flags, "--fix", "--grace-seconds", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert stored_keys(storage) == []


# --- the database failing: nothing changes ---------------------------------------------------


def test_a_database_failing_during_a_delete_answers_503_and_changes_nothing(client, storage, monkeypatch):
    image_id = image_with_a_result(client)
    kept = stored_keys(storage)
    real = Rows.delete_image_rows

    def rows_deleted_then_connection_lost(queue: Rows, image: str) -> None:
        real(queue, image)  # the jobs and extra-table rows are gone inside the transaction ...
        raise peewee.OperationalError(2013, "Lost connection to server during query")  # ... which never commits

    monkeypatch.setattr(Rows, "delete_image_rows", rows_deleted_then_connection_lost)
    result = client.simulate_delete(f"/v1/images/{image_id}")
    assert result.status_code == 503, result.text
    assert_every_row_kept(client, image_id)
    assert stored_keys(storage) == kept

    monkeypatch.setattr(Rows, "delete_image_rows", real)
    assert client.simulate_delete(f"/v1/images/{image_id}").status_code == 204
    assert_every_row_gone(client, image_id)
    assert stored_keys(storage) == []


@pytest.mark.skipif(
    BACKEND != "mysql", reason="SQLite's write transactions exclude each other: no registration runs in a delete"
)
def test_a_software_registered_during_a_delete_keeps_no_job_of_the_deleted_image(client, monkeypatch):
    """A registration that commits its software and gives the image a job (its backfill) after a
    delete's first read and before the delete removes the image's jobs: that job goes too."""
    image_id = upload(client).json["id"]
    delete_read, registered = threading.Event(), threading.Event()
    delete_image_rows = Rows.delete_image_rows

    def after_a_registration(queue: Rows, doomed: str) -> None:
        delete_read.set()
        assert registered.wait(timeout=60)
        delete_image_rows(queue, doomed)

    monkeypatch.setattr(Rows, "delete_image_rows", after_a_registration)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        deletion = pool.submit(client.simulate_delete, f"/v1/images/{image_id}")
        assert delete_read.wait(timeout=60)
        register(client, "late", tables=FACES)
        assert client.simulate_get("/v1/software/late/jobs").json["jobs"] != [], "the backfill gave it a job"
        registered.set()
        assert deletion.result(timeout=60).status_code == 204
    assert client.simulate_get("/v1/software/late/jobs").json["jobs"] == []
    counts = client.simulate_get("/v1/software/late").json["counts"]
    assert counts == dict.fromkeys(counts, 0)
