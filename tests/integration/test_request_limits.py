"""Bodies are bounded on every route that reads JSON: too deep is 400, too large is 413, nothing changes."""

from __future__ import annotations

import pytest

from heartbeat.api.params import MAX_JSON_BYTES
from heartbeat.jsontext import MAX_JSON_DEPTH
from helpers import register, upload

# Every route that reads a JSON body, with the software and image the fixture makes.
JSON_ROUTES = [
    ("POST", "/v1/images"),
    ("POST", "/v1/software"),
    ("POST", "/v1/software/face_detection/requeue"),
    ("POST", "/v1/software/face_detection/claim"),
    ("POST", "/v1/software/face_detection/results"),
    ("POST", "/v1/software/face_detection/jobs/{image_id}/extend"),
    ("PUT", "/v1/software/face_detection/jobs/{image_id}/result"),
    ("POST", "/v1/software/face_detection/jobs/{image_id}/fail"),
    ("POST", "/v1/software/face_detection/jobs/{image_id}/release"),
]


@pytest.fixture
def image_id(client) -> str:
    register(client, "face_detection")
    return upload(client).json["id"]


def state(client, image_id: str) -> tuple:
    return (
        client.simulate_get("/v1/images").json,
        client.simulate_get("/v1/software").json,
        client.simulate_get(f"/v1/software/face_detection/jobs/{image_id}").json,
    )


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
def test_json_nested_too_deeply_is_400_and_changes_nothing(client, image_id, method, path):
    before = state(client, image_id)
    for depth in (MAX_JSON_DEPTH + 1, 100_000):  # past the limit, and past Python's recursion limit
        body = '{"info": ' + "[" * depth + "]" * depth + "}"
        result = client.simulate_request(
            method, path.format(image_id=image_id), body=body, headers={"Content-Type": "application/json"}
        )
        assert result.status_code == 400, (depth, result.text)
    assert state(client, image_id) == before


def test_json_nested_up_to_the_limit_is_accepted(client, image_id):
    [job] = client.simulate_post("/v1/software/face_detection/claim", json={}).json["jobs"]
    info: list = []
    for _ in range(MAX_JSON_DEPTH - 2):  # the body object and the info list are two levels
        info = [info]
    result = client.simulate_put(
        f"/v1/software/face_detection/jobs/{image_id}/result", json={"token": job["token"], "info": info}
    )
    assert result.status_code == 200, result.text


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
def test_a_json_body_over_the_size_limit_is_413_and_changes_nothing(client, image_id, method, path):
    before = state(client, image_id)
    body = b'{"info": "' + b"x" * MAX_JSON_BYTES + b'"}'
    result = client.simulate_request(
        method, path.format(image_id=image_id), body=body, headers={"Content-Type": "application/json"}
    )
    assert result.status_code == 413, result.text
    assert state(client, image_id) == before


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json_and_change_nothing(client, image_id, method, path, constant):
    token = client.simulate_post("/v1/software/face_detection/claim", json={"max": 1}).json["jobs"]
    before = state(client, image_id)
    body = (
        f'{{"token": "{token[0]["token"] if token else "t"}", "info": {{"x": {constant}}}, "wait_seconds": {constant},'
        f' "retry_after": {constant}, "error": "e", "url": "http://example.org/a.jpg", "name": "x"}}'
    )
    result = client.simulate_request(
        method, path.format(image_id=image_id), body=body, headers={"Content-Type": "application/json"}
    )
    assert result.status_code == 400, result.text
    assert state(client, image_id) == before


def test_a_form_upload_with_nan_in_other_data_is_400(client):
    assert upload(client, other_data='{"score": NaN}').status_code == 400
    assert client.simulate_get("/v1/images").json["images"] == []
