"""Edges an outside test suite probes: cursors, last pages, names, batch verdicts, error bodies,
large values, exact IDs, backoffs, a database that is down, and leases that run out unwatched."""

from __future__ import annotations

import base64
import json
import time

import falcon.testing
import pytest
import requests

from conftest import BACKEND
from heartbeat.app import create_app
from heartbeat.catalog.registry import Registry
from heartbeat.queue import JobQueue
from helpers import claim, distinct_images, register, unreachable_database, upload

FD = "/v1/software/face_detection"


def cursor_of(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.fixture
def seeded(client):
    register(client, "face_detection", tables={"faces": {"x": "int", "label": "text"}})
    ids = [upload(client, data).json["id"] for data in distinct_images(4)]
    for job in claim(client, max=4):
        rows = {"faces": [{"x": 1, "label": "a"}]}
        client.simulate_put(
            f"{FD}/jobs/{job['image_id']}/result", json={"token": job["token"], "info": 1, "rows": rows}
        )
    return ids


PAGED = ["/v1/images", f"{FD}/jobs", f"{FD}/tables/faces", "/v1/software"]


@pytest.mark.parametrize("path", PAGED)
@pytest.mark.parametrize("key", [[{"a": 1}, "x"], [None], [[1]], [1.5, None], [True], "[", ["x", "y", "z"]])
def test_a_crafted_cursor_is_400_on_every_list(client, seeded, path, key):
    cursor = cursor_of(key) if not isinstance(key, str) else base64.urlsafe_b64encode(key.encode()).decode()
    result = client.simulate_get(path, params={"cursor": cursor})
    assert result.status_code == 400, result.text
    assert result.json["description"] == "cursor is not valid"


@pytest.mark.parametrize(
    ("path", "key", "count"), [(PAGED[0], "images", 4), (PAGED[1], "jobs", 4), (PAGED[2], "rows", 4)]
)
def test_the_last_page_says_so_even_when_it_is_exactly_full(client, seeded, path, key, count):
    first = client.simulate_get(path, params={"limit": 2}).json
    assert len(first[key]) == 2 and first["next_cursor"] is not None
    second = client.simulate_get(path, params={"limit": 2, "cursor": first["next_cursor"]}).json
    assert len(second[key]) == 2 and second["next_cursor"] is None
    assert client.simulate_get(path, params={"limit": count}).json["next_cursor"] is None


def test_the_software_list_is_paged_by_name(client):
    for name in ("ocr", "faces", "plates"):
        register(client, name)
    first = client.simulate_get("/v1/software", params={"limit": 2}).json
    assert [item["name"] for item in first["software"]] == ["faces", "ocr"]
    second = client.simulate_get("/v1/software", params={"limit": 2, "cursor": first["next_cursor"]}).json
    assert ([item["name"] for item in second["software"]], second["next_cursor"]) == (["plates"], None)


@pytest.mark.parametrize(
    "body",
    [
        {"name": "abc\n"},
        {"name": "ocr", "tables": {"faces\n": {"x": "int"}}},
        {"name": "ocr", "tables": {"faces": {"x\n": "int"}}},
    ],
)
def test_a_name_with_a_trailing_newline_is_refused(client, body):
    assert client.simulate_post("/v1/software", json=body).status_code == 400
    assert client.simulate_get("/v1/software").json["software"] == []
    assert client.simulate_get("/v1/software/abc%0A").status_code == 404


def test_one_malformed_result_in_a_batch_does_not_spoil_the_others(client):
    register(client, "face_detection")
    upload(client)
    [job] = claim(client)
    results = [
        {"image_id": "x" * 33, "token": "t", "info": 1},
        {"image_id": job["image_id"], "token": job["token"], "info": {"faces": 0}},
        {"token": "t", "info": 1},
        {"image_id": job["image_id"], "token": job["token"], "info": 1, "surprise": True},
        "not an object",
    ]
    answer = client.simulate_post(f"{FD}/results", json={"results": results})
    assert answer.status_code == 200, answer.text
    verdicts = [(item["image_id"], item["status"]) for item in answer.json["results"]]
    assert verdicts == [
        ("x" * 33, "invalid"),
        (job["image_id"], "done"),
        (None, "invalid"),
        (job["image_id"], "invalid"),
        (None, "invalid"),
    ]
    assert client.simulate_get(f"{FD}/jobs/{job['image_id']}").json["info"] == {"faces": 0}


@pytest.mark.parametrize(
    ("method", "path", "status"), [("GET", "/v1/nothing", 404), ("DELETE", "/v1/images", 405), ("PUT", "/", 405)]
)
def test_falcons_own_errors_have_a_title_and_a_description(client, method, path, status):
    result = client.simulate_request(method, path)
    assert result.status_code == status
    assert set(result.json) == {"title", "description"} and result.json["description"]


def test_long_text_values_and_error_texts_are_stored_whole(client):
    register(client, "face_detection", tables={"faces": {"label": "text"}}, max_attempts=1)
    first, second = (upload(client, data).json["id"] for data in distinct_images(2))
    jobs = {job["image_id"]: job for job in claim(client, max=2)}
    label = "é" * 70_000  # past MySQL's TEXT (64 KiB) in bytes
    rows = {"faces": [{"label": label}]}
    stored = client.simulate_put(
        f"{FD}/jobs/{first}/result", json={"token": jobs[first]["token"], "info": label, "rows": rows}
    )
    assert stored.status_code == 200, stored.text
    assert client.simulate_get(f"{FD}/tables/faces").json["rows"][0]["label"] == label
    error = "ü" * 65_536
    failed = client.simulate_post(
        f"{FD}/jobs/{second}/fail", json={"token": jobs[second]["token"], "error": error, "retry": False}
    )
    assert failed.status_code == 200, failed.text
    assert client.simulate_get(f"{FD}/jobs/{second}").json["error"] == error


def test_a_result_larger_than_the_database_takes_is_413_and_changes_nothing(client, database):
    if BACKEND != "mysql":
        pytest.skip("SQLite has no statement size limit; MySQL/MariaDB's max_allowed_packet is the point here")
    (packet,) = database.execute("SELECT @@max_allowed_packet").fetchone()
    register(client, "face_detection")
    image_id = upload(client).json["id"]
    [job] = claim(client)
    info = "x" * (int(packet) // 2 + 1)
    result = client.simulate_put(f"{FD}/jobs/{image_id}/result", json={"token": job["token"], "info": info})
    assert result.status_code == 413, result.text[:300]
    assert client.simulate_get(f"{FD}/jobs/{image_id}").json["status"] == "claimed"


def test_image_ids_are_matched_exactly_not_by_a_collation(client):
    image_id = upload(client).json["id"]
    assert client.simulate_get(f"/v1/images/{image_id.swapcase()}").status_code == 404
    assert client.simulate_get(f"/v1/images/{image_id} ").status_code == 404


def test_a_retry_after_beyond_an_hour_is_honoured(client, clock):
    register(client, "face_detection", max_attempts=3)
    image_id = upload(client).json["id"]
    [job] = claim(client)
    body = {"token": job["token"], "error": "come back tomorrow", "retry_after": 86_400}
    assert client.simulate_post(f"{FD}/jobs/{image_id}/fail", json=body).status_code == 200
    clock.advance(86_399)
    assert claim(client) == []
    clock.advance(2)
    assert [job["image_id"] for job in claim(client)] == [image_id]


def test_health_reports_a_database_that_does_not_answer_with_the_storage_state(settings, storage, clock):
    unreachable = unreachable_database()
    app = create_app(settings, database=unreachable, storage=storage, clock=clock)
    result = falcon.testing.TestClient(app).simulate_get("/v1/health")
    assert result.status_code == 503
    assert result.json["checks"]["storage"] == "ok"
    assert result.json["checks"]["database"].startswith("unreachable")


def test_a_lease_that_runs_out_on_the_last_attempt_is_failed_without_another_claim(database, clock):
    queue = JobQueue(database, clock)
    registry = Registry(database, queue, clock, default_lease_seconds=60, default_max_attempts=1)
    software = registry.register("face_detection", lease_seconds=10)
    from heartbeat.db.models import Image

    Image.create(
        id="img1",
        filename="a.jpg",
        uploaded_date=1.0,
        sha256="0" * 64,
        size=1,
        content_type="image/jpeg",
        width=1,
        height=1,
        storage_key="k",
    )
    queue.rows.backfill_jobs(software)
    [held] = queue.claims.claim(software, max_jobs=1).jobs
    assert queue.claims.expire_leases(software) == 0  # the lease still runs
    clock.advance(11)
    assert queue.claims.expire_leases(software) == 1
    job = queue.get(software, "img1")
    assert (job.status, job.error) == ("failed", "lease expired")
    assert (
        queue.results.submit(software, "img1", held.token, {"late": True}).status == "done"
    )  # a late result still counts


def test_a_served_api_fails_an_unwatched_lease_on_its_last_attempt_by_itself(start_server):
    server = start_server()
    requests.post(f"{server.url}/v1/software", json={"name": "once", "lease_seconds": 1, "max_attempts": 1}, timeout=10)
    requests.post(f"{server.url}/v1/images", files={"file": ("a.png", distinct_images(1)[0])}, timeout=10)
    [job] = requests.post(f"{server.url}/v1/software/once/claim", json={}, timeout=10).json()["jobs"]
    deadline = time.monotonic() + 15
    while True:  # no claim comes: the API's own reaper must notice (it looks every few seconds)
        state = requests.get(f"{server.url}/v1/software/once/jobs/{job['image_id']}", timeout=10).json()
        if state["status"] != "claimed" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (state["status"], state["error"]) == ("failed", "lease expired")
    counts = requests.get(f"{server.url}/v1/software/once", timeout=10).json()["counts"]
    assert (counts["claimed"], counts["failed"]) == (0, 1)
