"""``GET /v1/images/{id}/content?upright=true``: the picture in the frame its width, height and boxes
are in, for readers that ignore EXIF orientation; the bytes as stored stay one redirect away."""

from __future__ import annotations

import io

import numpy as np
import PIL.Image
import pytest

from heartbeat.db.models import Image
from helpers import fetch_url, oriented, upload, upright_astronaut

UPRIGHT = upright_astronaut()
FORMATS = ["JPEG", "PNG", "TIFF", "WEBP"]  # TIFF: Pillow turns it upright itself, as it loads it
ORIENTATION_TAG = 0x0112


def content(client, image_id: str, **params: str):
    return client.simulate_get(f"/v1/images/{image_id}/content", params=params)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("orientation", range(2, 9))
def test_a_picture_stored_turned_is_served_upright_without_its_orientation_tag(client, storage, orientation, fmt):
    stored = oriented(UPRIGHT, orientation, fmt)
    record = upload(client, stored).json
    answer = content(client, record["id"], upright="true")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == record["content_type"]
    picture = PIL.Image.open(io.BytesIO(answer.content))
    assert picture.format == fmt
    assert picture.size == (record["width"], record["height"]) == (512, 384)
    assert picture.getexif().get(ORIENTATION_TAG, 1) == 1  # a reader that honours EXIF turns it no further
    difference = np.abs(np.asarray(picture.convert("RGB"), dtype="float64") - np.asarray(UPRIGHT, dtype="float64"))
    assert difference.mean() < (0.01 if fmt == "PNG" else 3)
    as_stored = content(client, record["id"])  # without upright: the bytes as uploaded, as before
    assert as_stored.status_code == 307
    assert fetch_url(client, as_stored.headers["location"]).content == stored
    already = upload(client, oriented(UPRIGHT, 1, fmt)).json  # stored upright: upright=true is that redirect too
    answer = content(client, already["id"], upright="true")
    assert answer.status_code == 307
    assert fetch_url(client, answer.headers["location"]).content == oriented(UPRIGHT, 1, fmt)
    storage.delete(Image.get_by_id(record["id"]).storage_key)  # bytes the store has lost: 404, as the redirect
    lost = content(client, record["id"], upright="true")
    assert lost.status_code == 404
    assert "missing from storage" in lost.json["description"]
    assert content(client, "nobody", upright="true").status_code == 404


@pytest.mark.parametrize("value", ["yes", "1", "TRUE", ""])
def test_upright_takes_true_or_false_alone(client, value):
    record = upload(client, oriented(UPRIGHT, 6)).json
    answer = content(client, record["id"], upright=value)
    assert answer.status_code == 400, answer.text
    assert "upright" in answer.json["description"]
