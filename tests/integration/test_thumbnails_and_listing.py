"""Thumbnails made at upload and served by signed URL; the image list newest first, with job statuses."""

from __future__ import annotations

import io

import PIL.Image
import pytest

from helpers import distinct_images, fetch_url, image_bytes, register, upload


def test_an_upload_gets_a_small_upright_jpeg_thumbnail(client):
    image_id = upload(client, image_bytes(size=(1200, 800), fmt="PNG")).json["id"]
    [listed] = client.simulate_get("/v1/images", params={"include": "thumbnail"}).json["images"]
    thumbnail = fetch_url(client, listed["thumbnail_url"])
    assert thumbnail.status_code == 200
    with PIL.Image.open(io.BytesIO(thumbnail.content)) as picture:
        assert picture.format == "JPEG"
        assert picture.size == (320, 213)

    redirect = client.simulate_get(f"/v1/images/{image_id}/thumbnail")
    assert redirect.status_code == 307
    assert fetch_url(client, redirect.headers["Location"]).content == thumbnail.content


def test_the_list_pages_newest_first_as_well_as_oldest_first(client, clock):
    uploaded = []
    for data in distinct_images(5):
        uploaded.append(upload(client, data).json["id"])
        clock.advance(1)

    def all_of(order: str) -> list[str]:
        seen, cursor = [], None
        while True:
            params = {"order": order, "limit": 2} | ({"cursor": cursor} if cursor else {})
            page = client.simulate_get("/v1/images", params=params).json
            seen += [image["id"] for image in page["images"]]
            cursor = page["next_cursor"]
            if cursor is None:
                return seen

    assert all_of("oldest") == uploaded
    assert all_of("newest") == uploaded[::-1]


def test_include_jobs_gives_each_image_its_job_statuses(client):
    register(client, "face_detection")
    register(client, "ocr")
    image_id = upload(client).json["id"]
    client.simulate_post("/v1/software/ocr/claim", json={})
    [listed] = client.simulate_get("/v1/images", params={"include": "jobs,thumbnail"}).json["images"]
    assert listed["id"] == image_id
    assert listed["jobs"] == {"face_detection": "pending", "ocr": "claimed"}
    assert "jobs" not in client.simulate_get("/v1/images").json["images"][0]


@pytest.mark.parametrize("params", [{"order": "sideways"}, {"include": "secrets"}, {"include": "jobs,nope"}])
def test_bad_list_options_answer_400(client, params):
    assert client.simulate_get("/v1/images", params=params).status_code == 400
