"""One coordinate frame: the photograph upright. A photo stored in each of the eight EXIF orientations
has its upright ``width`` and ``height`` and its ``orientation`` in the record, and the example face
worker finds the face where it is on the upright original; images stored before the field get both
from the migration at start."""

from __future__ import annotations

import io
import logging

import numpy as np
import PIL.Image
import PIL.ImageOps
import pytest

from heartbeat.db.models import create_base_tables
from heartbeat.db.orientation_backfill import fill_orientations
from heartbeat.examples import face_colours, face_detection
from heartbeat.worker import Image as ImageRecord
from heartbeat.worker import open_upright
from helpers import as_stored_before_orientation, claim, oriented, register, upload, upright_astronaut

ORIENTATIONS = range(1, 9)
UPRIGHT = upright_astronaut()
FORMATS = ["JPEG", "PNG", "TIFF", "WEBP"]  # TIFF: Pillow turns it upright itself, as it loads it
ASTRONAUT_FACE = {"x": 175, "y": 65, "w": 90, "h": 100}
TOLERANCE_PIXELS = 4


def the_face(boxes: list[dict[str, int]]) -> dict[str, int]:
    """The box nearest the astronaut's face."""
    return min(boxes, key=lambda box: abs(box["x"] - ASTRONAUT_FACE["x"]) + abs(box["y"] - ASTRONAUT_FACE["y"]))


@pytest.fixture(scope="module")
def upright_face() -> dict[str, int]:
    """The face the example worker finds on the upright original."""
    return the_face(face_detection.find_faces(np.asarray(UPRIGHT)))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_the_test_pictures_are_what_pillow_shows_upright(orientation, fmt):
    stored = PIL.Image.open(io.BytesIO(oriented(UPRIGHT, orientation, fmt)))
    shown = np.asarray(PIL.ImageOps.exif_transpose(stored), dtype="float64")
    assert np.abs(shown - np.asarray(UPRIGHT, dtype="float64")).mean() < 2


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_a_photo_in_each_orientation_is_recorded_upright(client, orientation, fmt):
    register(client, "upright")
    data = oriented(UPRIGHT, orientation, fmt)
    record = upload(client, data).json
    assert (record["width"], record["height"], record["orientation"]) == (512, 384, orientation)
    assert client.simulate_get(f"/v1/images/{record['id']}").json["orientation"] == orientation
    image = ImageRecord.from_json(claim(client, "upright", max=1)[0]["image"])  # what a worker's handler is given
    assert (image.id, image.width, image.height, image.orientation) == (record["id"], 512, 384, orientation)
    assert open_upright(data, image).size == (image.width, image.height)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_the_example_workers_find_the_face_where_it_is_on_the_upright_original(client, upright_face, orientation):
    # A lossless picture: the face cascade moves its boxes by several pixels for a JPEG's noise alone.
    data = oriented(UPRIGHT, orientation, "PNG")
    image = ImageRecord.from_json(upload(client, data).json)
    found = the_face(face_detection.detect(data, image))
    assert all(abs(found[key] - upright_face[key]) <= TOLERANCE_PIXELS for key in "xywh"), (found, upright_face)
    _, rows = face_colours.describe(data, image)
    coloured = the_face(rows["faces"])
    assert all(abs(coloured[key] - upright_face[key]) <= TOLERANCE_PIXELS for key in "xywh"), coloured


def test_without_a_record_or_its_orientation_the_pictures_own_exif_turns_it_upright():
    older = {"id": "a", "filename": "a.jpg", "uploaded_date": 0, "origin": None, "other_data": None, "sha256": "0"}
    older |= {"size": 1, "width": 384, "height": 512}  # a server from before orientation: as stored
    assert open_upright(oriented(UPRIGHT, 6)).size == (512, 384)
    assert open_upright(oriented(UPRIGHT, 6), ImageRecord.from_json(older)).size == (512, 384)


def test_images_stored_before_orientation_get_it_and_their_upright_size_from_the_migration(
    client, database, storage, caplog
):
    ids = {orientation: upload(client, oriented(UPRIGHT, orientation)).json["id"] for orientation in (1, 3, 6, 8)}
    tiff = upload(client, oriented(UPRIGHT, 6, "TIFF")).json["id"]  # Pillow opens it upright already
    missing = upload(client, oriented(UPRIGHT.resize((200, 100)), 6)).json
    storage.delete(f"images/{missing['id'][:2]}/{missing['id']}.jpg")
    with database.connection():
        as_stored_before_orientation(database)
        create_base_tables(database)  # what every start does first: the column is back, empty
        listed = client.simulate_get("/v1/images").json["images"]
        assert {image["id"]: (image["width"], image["height"]) for image in listed}[ids[6]] == (384, 512)

        with caplog.at_level(logging.WARNING, logger="heartbeat.db.orientation_backfill"):
            assert fill_orientations(database, lambda: storage) == 6
        assert fill_orientations(database, lambda: storage) == 0  # once only

    for orientation, image_id in [*ids.items(), (6, tiff)]:
        image = client.simulate_get(f"/v1/images/{image_id}").json
        assert (image["width"], image["height"], image["orientation"]) == (512, 384, orientation)
    kept = client.simulate_get(f"/v1/images/{missing['id']}").json
    assert (kept["width"], kept["height"], kept["orientation"]) == (100, 200, 1)  # as stored: its bytes are gone
    assert [record.getMessage() for record in caplog.records if missing["id"] in record.getMessage()]
