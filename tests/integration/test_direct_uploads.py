"""Direct uploads: ``POST /v1/uploads`` hands out a URL, the client PUTs the bytes straight to the store,
and ``POST /v1/uploads/{id}/complete`` judges them exactly as an upload (on this pass's storage)."""

from __future__ import annotations

import dataclasses
import io

import falcon.testing
import PIL.Image
import pytest

from heartbeat.app import create_app
from heartbeat.db.models import Image
from helpers import direct_upload, distinct_images, fetch_url, image_bytes, put_url, register, stored_keys, upload


def start(client, **body) -> dict:
    result = client.simulate_post("/v1/uploads", json=body) if body else client.simulate_post("/v1/uploads")
    assert result.status_code == 201, result.text
    return result.json


def complete(client, upload_id: str, **body) -> falcon.testing.Result:
    return client.simulate_post(f"/v1/uploads/{upload_id}/complete", json=body)


def test_a_direct_upload_becomes_an_image_like_any_upload(client, storage, settings, clock):
    register(client, "face_detection")
    data = image_bytes(size=(40, 30), fmt="PNG")
    started = start(client, filename="holiday/beach.png")
    assert started["method"] == "PUT"
    assert started["expires_at"] >= clock.now + settings.signed_url_seconds - 1
    assert started["max_bytes"] == settings.max_upload_bytes
    assert put_url(client, started["url"], data) in (200, 204)

    result = complete(client, started["upload_id"], origin="archive", other_data={"box": 3})
    assert result.status_code == 201, result.text
    image = result.json
    assert result.headers["location"].endswith(f"/v1/images/{image['id']}")
    assert (image["duplicate"], image["filename"], image["origin"], image["other_data"]) == (
        False,
        "beach.png",
        "archive",
        {"box": 3},
    )
    assert (image["width"], image["height"], image["size"], image["content_type"]) == (40, 30, len(data), "image/png")
    assert client.simulate_get(f"/v1/images/{image['id']}").json["jobs"] == {"face_detection": "pending"}
    signed = client.simulate_get(f"/v1/images/{image['id']}/url").json
    assert fetch_url(client, signed["url"]).content == data
    assert stored_keys(storage, "uploads/") == [], "the uploaded object moved under images/"
    assert complete(client, started["upload_id"]).status_code == 404, "an upload completes once"


def test_bytes_already_stored_complete_as_the_existing_image_and_leave_nothing(client, storage):
    first = upload(client, image_bytes()).json
    again = direct_upload(client, image_bytes())
    assert again.status_code == 200, again.text
    assert (again.json["id"], again.json["duplicate"]) == (first["id"], True)
    assert stored_keys(storage, "uploads/") == []
    assert len(stored_keys(storage, "images/")) == 1


@pytest.mark.parametrize(
    "data",
    [b"this is not a picture", b"%PDF-1.4\n%%EOF\n", image_bytes()[:60]],
    ids=["text", "pdf", "truncated-jpeg"],
)
def test_a_non_image_is_refused_with_415_and_its_object_deleted(client, storage, data):
    started = start(client)
    assert put_url(client, started["url"], data) in (200, 204)
    result = complete(client, started["upload_id"])
    assert result.status_code == 415, result.text
    assert stored_keys(storage) == []
    assert client.simulate_get("/v1/images").json["images"] == []
    assert complete(client, started["upload_id"]).status_code == 404


@pytest.fixture
def limited(settings, storage, database, clock) -> falcon.testing.TestClient:
    small = dataclasses.replace(settings, max_upload_bytes=2000, max_pixels=10_000)
    return falcon.testing.TestClient(create_app(small, database=database, storage=storage, clock=clock))


def test_a_too_large_object_never_becomes_an_image_and_leaves_nothing_behind(limited, storage):
    noisy = io.BytesIO()
    PIL.Image.effect_noise((64, 64), 80).convert("RGB").save(noisy, "PNG")
    assert len(noisy.getvalue()) > 2000
    started = start(limited)
    put_status = put_url(limited, started["url"], noisy.getvalue())
    completed = complete(limited, started["upload_id"])
    # The API's own PUT route (local storage) refuses the bytes at once; an S3 store takes any
    # bytes, and completing refuses them. Either way: a 413, and nothing kept.
    assert 413 in (put_status, completed.status_code), (put_status, completed.text)
    assert completed.status_code in (409, 413), completed.text
    assert stored_keys(storage) == []
    assert limited.simulate_get("/v1/images").json["images"] == []


def test_an_image_over_the_pixel_limit_is_refused_with_413_and_its_object_deleted(limited, storage):
    result = direct_upload(limited, image_bytes(size=(200, 100), fmt="PNG"))  # 20,000 pixels, a small file
    assert result.status_code == 413, result.text
    assert stored_keys(storage) == []


def test_bad_metadata_answers_400_and_changes_nothing(client, storage):
    started = start(client)
    assert put_url(client, started["url"], image_bytes()) in (200, 204)
    for body in ({"other_data": [1, 2]}, {"origin": "x" * 300}, {"surprise": 1}):
        assert complete(client, started["upload_id"], **body).status_code == 400
    assert stored_keys(storage, "uploads/") == [f"uploads/{started['upload_id']}"]
    assert complete(client, started["upload_id"], origin="fixed").status_code == 201


def test_completing_before_the_bytes_arrived_answers_409_and_an_unknown_upload_404(client):
    started = start(client)
    early = complete(client, started["upload_id"])
    assert early.status_code == 409
    assert "PUT the bytes" in early.json["description"]
    assert complete(client, "no-such-upload").status_code == 404
    assert client.simulate_post("/v1/uploads", json={"filename": 7}).status_code == 400


def test_each_upload_gets_its_own_url_and_many_can_be_open_at_once(client, storage):
    pictures = distinct_images(3)
    started = [start(client) for _ in pictures]
    assert len({item["url"] for item in started}) == 3
    for item, data in zip(started, pictures, strict=True):
        assert put_url(client, item["url"], data) in (200, 204)
    ids = [complete(client, item["upload_id"]).json["id"] for item in reversed(started)]
    assert len(set(ids)) == 3
    assert stored_keys(storage, "uploads/") == []


def test_an_image_whose_object_is_gone_answers_404_for_url_and_content_never_500(client, storage):
    image = upload(client).json
    storage.delete(Image.get_by_id(image["id"]).storage_key)
    for suffix in ("url", "content"):
        result = client.simulate_get(f"/v1/images/{image['id']}/{suffix}")
        assert result.status_code == 404, result.text
        assert "missing from storage" in result.json["description"]
