"""Registering software, its backfill, its extra tables, and reading it back."""

from __future__ import annotations

import pytest

from helpers import claim, distinct_images, register, upload


def test_a_registered_software_is_listed_with_its_settings_and_counts(client):
    created = register(client, "face_detection", lease_seconds=30, max_attempts=5, tables={"faces": {"x": "int"}})
    assert created == {
        "name": "face_detection",
        "lease_seconds": 30,
        "max_attempts": 5,
        "tables": {"faces": {"x": "int"}},
        "paused": False,
        "after": [],
        "origins": None,
        "version": "1",
        "max_in_flight": None,
        "rate": None,
        "in_flight": 0,
        "counts": {"pending": 0, "claimed": 0, "done": 0, "failed": 0, "skipped": 0, "outdated": 0},
        "throughput": {"window_seconds": 300, "done": 0, "failed": 0},
    }
    assert client.simulate_get("/v1/software").json == {"software": [created], "next_cursor": None}
    assert client.simulate_get("/v1/software/face_detection").json == created


def test_throughput_counts_the_jobs_finished_in_the_last_five_minutes(client, clock):
    for data in distinct_images(4):
        upload(client, data)
    register(client, "ocr", max_attempts=1)

    def finish(outcome: str) -> None:
        [job] = claim(client, "ocr")
        path = f"/v1/software/ocr/jobs/{job['image_id']}"
        if outcome == "done":
            client.simulate_put(f"{path}/result", json={"token": job["token"], "info": {}})
        else:
            client.simulate_post(f"{path}/fail", json={"token": job["token"], "error": "boom", "retry": False})

    finish("done")
    clock.advance(301)  # out of the window
    finish("done")
    finish("failed")
    clock.advance(100)
    finish("done")
    described = client.simulate_get("/v1/software/ocr").json
    assert described["throughput"] == {"window_seconds": 300, "done": 2, "failed": 1}
    assert described["counts"]["done"] == 3


def test_defaults_apply_when_lease_and_attempts_are_not_given(client, settings):
    created = register(client, "ocr")
    assert created["lease_seconds"] == settings.default_lease_seconds
    assert created["max_attempts"] == settings.default_max_attempts


def test_registering_backfills_a_pending_job_for_every_existing_image(client):
    for data in distinct_images(3):
        upload(client, data)
    assert register(client, "ocr")["counts"] == {
        "pending": 3,
        "claimed": 0,
        "done": 0,
        "failed": 0,
        "skipped": 0,
        "outdated": 0,
    }


def test_registering_the_same_name_twice_answers_409(client):
    register(client, "ocr")
    result = client.simulate_post("/v1/software", json={"name": "ocr"})
    assert result.status_code == 409
    assert "ocr" in result.json["description"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": "Face"},
        {"name": "1face"},
        {"name": "a" * 49},
        {"name": "face-detection"},
        {"name": "ok", "lease_seconds": 0},
        {"name": "ok", "max_attempts": 0},
        {"name": "ok", "lease_seconds": "10"},
        {"name": "ok", "tables": {"Bad": {"x": "int"}}},
        {"name": "ok", "tables": {"t": {}}},
        {"name": "ok", "tables": {"t": {"x": "varchar"}}},
        {"name": "ok", "tables": {"t": {"image_id": "text"}}},
        {"name": "ok", "tables": {"t": {"id": "int"}}},
        {"name": "ok", "surprise": 1},
    ],
)
def test_bad_registrations_answer_400_and_register_nothing(client, body):
    result = client.simulate_post("/v1/software", json=body)
    assert result.status_code == 400, result.text
    assert result.json["description"]
    assert client.simulate_get("/v1/software").json == {"software": [], "next_cursor": None}


def test_unknown_software_answers_404_everywhere(client):
    assert client.simulate_get("/v1/software/nope").status_code == 404
    assert client.simulate_post("/v1/software/nope/claim", json={}).status_code == 404
    assert client.simulate_get("/v1/software/nope/jobs").status_code == 404
    assert client.simulate_get("/v1/software/nope/jobs/x").status_code == 404
    assert client.simulate_get("/v1/software/nope/tables/t").status_code == 404
    assert client.simulate_post("/v1/software/nope/requeue", json={"status": "failed"}).status_code == 404


def test_software_names_match_exactly_on_every_database(client):
    # MariaDB's collations compare "Face_Detection" and "face_détection" equal to "face_detection".
    register(client, "face_detection")
    for near in ("Face_Detection", "face_d%C3%A9tection", "FACE_DETECTION"):
        assert client.simulate_get(f"/v1/software/{near}").status_code == 404, near
        assert client.simulate_post(f"/v1/software/{near}/claim", json={}).status_code == 404, near


def test_an_unknown_extra_table_answers_404(client):
    register(client, "face_detection", tables={"faces": {"x": "int"}})
    assert client.simulate_get("/v1/software/face_detection/tables/nope").status_code == 404


def test_columns_named_like_model_methods_work(client):
    register(client, "odd", tables={"t": {"save": "text", "select": "int", "delete": "bool"}})
    upload(client)
    [job] = client.simulate_post("/v1/software/odd/claim", json={}).json["jobs"]
    rows = {"t": [{"save": "s", "select": 3, "delete": True}]}
    body = {"token": job["token"], "info": None, "rows": rows}
    assert client.simulate_put(f"/v1/software/odd/jobs/{job['image_id']}/result", json=body).status_code == 200
    [row] = client.simulate_get("/v1/software/odd/tables/t").json["rows"]
    assert (row["save"], row["select"], row["delete"]) == ("s", 3, True)


def test_a_paused_software_hands_out_no_jobs_until_it_is_resumed(client):
    register(client, "face_detection")
    register(client, "ocr")
    image_id = upload(client).json["id"]
    paused = client.simulate_post("/v1/software/face_detection/pause")
    assert paused.status_code == 200 and paused.json["paused"] is True
    assert client.simulate_get("/v1/software/face_detection").json["paused"] is True
    assert client.simulate_post("/v1/software/face_detection/claim", json={}).json["jobs"] == []
    assert client.simulate_get("/v1/software/face_detection").json["counts"]["pending"] == 1
    # Other software are not held up.
    assert [job["image_id"] for job in client.simulate_post("/v1/software/ocr/claim", json={}).json["jobs"]] == [
        image_id
    ]
    resumed = client.simulate_post("/v1/software/face_detection/resume")
    assert resumed.status_code == 200 and resumed.json["paused"] is False
    [job] = client.simulate_post("/v1/software/face_detection/claim", json={}).json["jobs"]
    assert job["image_id"] == image_id


def test_pausing_an_unknown_software_answers_404(client):
    assert client.simulate_post("/v1/software/nope/pause").status_code == 404
    assert client.simulate_post("/v1/software/nope/resume").status_code == 404
