"""Uploading, reading, listing and deleting images through the API."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import PurePosixPath

import falcon.testing
import PIL.Image
import pytest

from heartbeat.db.models import Image
from helpers import claim, distinct_images, fetch_url, image_bytes, multipart, register, stored_keys, upload


def test_upload_answers_201_with_the_image_and_its_location(client, clock):
    data = image_bytes(size=(40, 30))
    result = upload(client, data, origin="public_webcam", other_data='{"camera": 7}')
    assert result.status_code == 201
    image = result.json
    assert image["duplicate"] is False
    assert image["filename"] == "photo.jpg"
    assert image["uploaded_date"] == clock.now
    assert image["origin"] == "public_webcam"
    assert image["other_data"] == {"camera": 7}
    assert (image["width"], image["height"], image["size"]) == (40, 30, len(data))
    assert image["content_type"] == "image/jpeg"
    assert 0 < len(image["id"]) <= 32
    assert result.headers["location"].endswith(f"/v1/images/{image['id']}")
    assert client.simulate_get(f"/v1/images/{image['id']}").json["origin"] == "public_webcam"


def test_the_same_bytes_again_answer_200_with_the_existing_image(client, storage):
    first = upload(client, image_bytes()).json
    again = upload(client, image_bytes(), origin="elsewhere")
    assert again.status_code == 200
    assert again.json["duplicate"] is True
    assert again.json["id"] == first["id"]
    assert again.json["origin"] is None
    assert len(client.simulate_get("/v1/images").json["images"]) == 1
    assert len(stored_keys(storage, "images/")) == 1
    assert len(stored_keys(storage)) == 2, "the picture and its thumbnail, once"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"])
def test_every_supported_format_is_accepted(client, fmt):
    result = upload(client, image_bytes(fmt=fmt))
    assert result.status_code == 201, result.text
    assert result.json["content_type"] == f"image/{fmt.lower()}"


@pytest.mark.parametrize(
    "data",
    [b"hello, this is not a picture", b"", image_bytes()[:60], b"%PDF-1.4\n%%EOF\n"],
    ids=["text", "empty", "truncated-jpeg", "pdf"],
)
def test_bytes_that_are_not_a_supported_image_answer_415_and_store_nothing(client, settings, storage, data):
    result = upload(client, data)
    assert result.status_code == 415, result.text
    assert result.json["description"]
    assert client.simulate_get("/v1/images").json["images"] == []
    assert stored_keys(storage) == []
    assert list((settings.data_dir / "tmp").iterdir()) == []


def test_an_image_format_outside_the_list_answers_415(client):
    out = io.BytesIO()
    PIL.Image.new("RGB", (8, 8)).save(out, "PCX")
    assert upload(client, out.getvalue()).status_code == 415


@pytest.fixture
def small_limits(settings, storage, database, clock):
    from heartbeat.app import create_app

    limited = dataclasses.replace(settings, max_upload_bytes=2000, max_pixels=10_000)
    app = create_app(limited, database=database, storage=storage, clock=clock)
    return falcon.testing.TestClient(app), storage


def test_an_upload_over_the_byte_limit_answers_413_and_stores_nothing(small_limits):
    client, storage = small_limits
    noisy = PIL.Image.effect_noise((64, 64), 80).convert("RGB")
    out = io.BytesIO()
    noisy.save(out, "PNG")
    assert len(out.getvalue()) > 2000
    result = upload(client, out.getvalue())
    assert result.status_code == 413
    assert stored_keys(storage) == []
    assert client.simulate_get("/v1/images").json["images"] == []


def test_an_image_over_the_pixel_limit_answers_413(small_limits):
    client, storage = small_limits
    result = upload(client, image_bytes(size=(200, 100), fmt="PNG"))  # 20,000 pixels, small file
    assert result.status_code == 413
    assert stored_keys(storage) == []


@pytest.mark.parametrize(
    ("fields", "with_file"),
    [
        ({"other_data": "not json"}, True),
        ({"other_data": "[1, 2]"}, True),
        ({"origin": "x" * 300}, True),
        ({"surprise": "field"}, True),
        ({}, False),
        ({"url": "http://example.com/a.jpg"}, True),
    ],
    ids=["other_data-not-json", "other_data-not-object", "origin-too-long", "unknown-field", "no-file", "file-and-url"],
)
def test_a_bad_form_answers_400_and_stores_nothing(client, storage, fields, with_file):
    result = client.simulate_post("/v1/images", **multipart(fields, image_bytes() if with_file else None))
    assert result.status_code == 400, result.text
    assert stored_keys(storage) == []
    assert client.simulate_get("/v1/images").json["images"] == []


def test_a_json_body_without_a_url_answers_400(client):
    assert client.simulate_post("/v1/images", json={"origin": "x"}).status_code == 400
    assert (
        client.simulate_post("/v1/images", body="{nope", headers={"Content-Type": "application/json"}).status_code
        == 400
    )


def test_the_client_path_never_decides_where_bytes_are_stored(client, storage):
    result = client.simulate_post("/v1/images", **multipart({}, image_bytes(), filename="../../outside/evil.jpg"))
    assert result.status_code == 201
    assert result.json["filename"] == "evil.jpg"
    [key] = stored_keys(storage, "images/")
    assert key == Image.get_by_id(result.json["id"]).storage_key
    assert "evil" not in key and ".." not in key


def test_uploading_creates_a_pending_job_for_every_software(client):
    register(client, "face_detection")
    register(client, "ocr")
    image = upload(client).json
    assert client.simulate_get(f"/v1/images/{image['id']}").json["jobs"] == {
        "face_detection": "pending",
        "ocr": "pending",
    }


def test_the_signed_url_serves_the_exact_bytes(client):
    data = image_bytes(fmt="PNG")
    image = upload(client, data).json
    signed = client.simulate_get(f"/v1/images/{image['id']}/url").json
    assert signed["expires_at"] > 0
    response = fetch_url(client, signed["url"])
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/png"


def test_content_redirects_to_the_signed_url(client):
    image = upload(client).json
    result = client.simulate_get(f"/v1/images/{image['id']}/content")
    assert result.status_code == 307
    assert fetch_url(client, result.headers["location"]).content == image_bytes()


def test_unknown_images_answer_404(client):
    for path in ("/v1/images/nope", "/v1/images/nope/url", "/v1/images/nope/content"):
        assert client.simulate_get(path).status_code == 404
    assert client.simulate_delete("/v1/images/nope").status_code == 404


def test_images_are_listed_oldest_first_in_pages(client, clock):
    ids = []
    for data in distinct_images(5):
        ids.append(upload(client, data).json["id"])
        clock.advance(1)
    seen = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.simulate_get("/v1/images", params=params).json
        seen += [image["id"] for image in page["images"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids


def test_images_with_the_same_upload_time_are_all_listed_once(client):
    ids = {upload(client, data).json["id"] for data in distinct_images(5)}  # the clock does not move
    first = client.simulate_get("/v1/images", params={"limit": 3}).json
    second = client.simulate_get("/v1/images", params={"limit": 3, "cursor": first["next_cursor"]}).json
    listed = [image["id"] for image in first["images"] + second["images"]]
    assert sorted(listed) == sorted(ids)
    assert second["next_cursor"] is None


def test_images_are_filtered_by_origin_and_by_job_status(client):
    register(client)
    webcam = upload(client, distinct_images(2)[0], origin="webcam").json["id"]
    upload(client, distinct_images(2)[1], origin="instagram")
    assert [i["id"] for i in client.simulate_get("/v1/images", params={"origin": "webcam"}).json["images"]] == [webcam]
    [job] = claim(client)
    by_status = client.simulate_get("/v1/images", params={"status": "face_detection:claimed"}).json["images"]
    assert [i["id"] for i in by_status] == [job["image_id"]]
    assert client.simulate_get("/v1/images", params={"status": "face_detection:bogus"}).status_code == 400
    assert client.simulate_get("/v1/images", params={"status": "nope:pending"}).status_code == 404


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"cursor": "garbage!"}])
def test_bad_paging_parameters_answer_400(client, params):
    assert client.simulate_get("/v1/images", params=params).status_code == 400


def test_deleting_an_image_removes_every_trace(client, storage):
    register(client, "face_detection", tables={"faces": {"x": "int", "encoding": "json"}})
    keep = upload(client, distinct_images(2)[0]).json["id"]
    gone = upload(client, distinct_images(2)[1]).json["id"]
    for job in claim(client, max=2):
        rows = {"faces": [{"x": 1, "encoding": [0.1, 0.2]}]}
        body = {"token": job["token"], "info": [{"x": 1, "y": 1, "w": 2, "h": 2}], "rows": rows}
        assert (
            client.simulate_put(f"/v1/software/face_detection/jobs/{job['image_id']}/result", json=body).status_code
            == 200
        )
    old_url = client.simulate_get(f"/v1/images/{gone}/url").json["url"]

    assert client.simulate_delete(f"/v1/images/{gone}").status_code == 204

    assert client.simulate_get(f"/v1/images/{gone}").status_code == 404
    assert client.simulate_get(f"/v1/software/face_detection/jobs/{gone}").status_code == 404
    rows = client.simulate_get("/v1/software/face_detection/tables/faces").json["rows"]
    assert {row["image_id"] for row in rows} == {keep}
    kept = [PurePosixPath(key).stem for key in stored_keys(storage)]
    assert kept == [keep, keep], "only the kept picture and thumbnail"
    assert fetch_url(client, old_url).status_code == 404
    assert client.simulate_get("/v1/software/face_detection").json["counts"]["done"] == 1


def test_a_deleted_image_can_be_uploaded_again(client):
    data = image_bytes()
    first = upload(client, data).json["id"]
    client.simulate_delete(f"/v1/images/{first}")
    again = upload(client, data)
    assert again.status_code == 201
    assert again.json["id"] != first


def test_other_data_keeps_nested_json(client):
    other = {"tags": ["a", "b"], "gps": {"lat": 52.5, "lon": 13.4}, "n": None}
    image = upload(client, other_data=json.dumps(other)).json
    assert client.simulate_get(f"/v1/images/{image['id']}").json["other_data"] == other
