"""A database from the release before ``orientation`` is brought up to this one by ``heartbeat serve``
itself, at start: no command to run by hand."""

from __future__ import annotations

import PIL.Image
import requests

from helpers import as_stored_before_orientation, oriented


def test_serve_reads_the_orientation_and_upright_size_of_images_stored_before_it_at_start(
    start_server, database, session_data_dir
):
    upright = PIL.Image.linear_gradient("L").resize((60, 40)).convert("RGB")
    server = start_server(data_dir=session_data_dir)  # the test's own database, on SQLite too
    ids = {}
    for orientation in (1, 6, 7):
        files = {"file": (f"{orientation}.jpg", oriented(upright, orientation))}
        ids[orientation] = requests.post(f"{server.url}/v1/images", files=files, timeout=10).json()["id"]
    server.stop()
    with database.connection():
        as_stored_before_orientation(database)

    restarted = start_server(data_dir=session_data_dir)

    listed = requests.get(f"{restarted.url}/v1/images", timeout=10).json()["images"]
    assert {image["id"]: (image["width"], image["height"], image["orientation"]) for image in listed} == {
        image_id: (60, 40, orientation) for orientation, image_id in ids.items()
    }
    assert "reading the orientation of 3 images stored before it was recorded" in restarted.log()
