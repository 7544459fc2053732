"""The example workers on real photographs shipped inside scikit-image: a face is found in the
astronaut portrait, none in plain textures; run through ``heartbeat worker run`` against a server."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import PIL.Image
import pytest
import skimage.data

from heartbeat.examples import face_colours, face_detection
from heartbeat.worker import Client

PHOTOS = Path(skimage.data.__file__).parent
ASTRONAUT_FACE = {"x": 175, "y": 65, "w": 90, "h": 100}  # Eileen Collins' face in astronaut.png


def photo(name: str) -> bytes:
    return (PHOTOS / name).read_bytes()


def overlap(a: dict[str, int], b: dict[str, int]) -> float:
    """Intersection over union of two boxes."""
    width = max(0, min(a["x"] + a["w"], b["x"] + b["w"]) - max(a["x"], b["x"]))
    height = max(0, min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"]))
    shared = width * height
    return shared / (a["w"] * a["h"] + b["w"] * b["h"] - shared)


def png(picture: PIL.Image.Image) -> bytes:
    out = io.BytesIO()
    picture.save(out, "PNG")
    return out.getvalue()


def test_the_face_in_the_astronaut_photo_is_found():
    boxes = face_detection.detect(photo("astronaut.png"), None)
    assert max(overlap(box, ASTRONAUT_FACE) for box in boxes) > 0.5, boxes
    assert all(set(box) == {"x", "y", "w", "h"} and all(isinstance(v, int) for v in box.values()) for box in boxes)


@pytest.mark.parametrize("texture", ["brick.png", "grass.png", "gravel.png"])
def test_no_face_is_found_in_a_plain_texture(texture):
    assert face_detection.detect(photo(texture), None) == []


def test_a_large_photo_is_searched_scaled_down_and_boxes_come_back_in_its_own_pixels():
    astronaut = PIL.Image.open(io.BytesIO(photo("astronaut.png")))
    large = astronaut.resize((1536, 1536), PIL.Image.Resampling.BICUBIC)
    face = {key: value * 3 for key, value in ASTRONAUT_FACE.items()}
    boxes = face_detection.detect(png(large), None)
    assert max(overlap(box, face) for box in boxes) > 0.5, boxes
    assert face_detection.detect(png(PIL.Image.new("RGB", (16, 12), "grey")), None) == []


def test_face_colours_gives_one_row_per_face_with_its_mean_colour():
    info, rows = face_colours.describe(photo("astronaut.png"), None)
    assert info == {"faces": len(rows["faces"])}
    face = max(rows["faces"], key=lambda row: overlap(row, ASTRONAUT_FACE))
    assert overlap(face, ASTRONAUT_FACE) > 0.5
    assert face["mean_r"] > face["mean_g"] > face["mean_b"]  # skin: more red than blue
    assert set(face) == set(face_colours.SOFTWARE["tables"]["faces"])


def run_worker(server_url: str, target: str, software: str, *flags: str) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("HEARTBEAT_")}
    command = [sys.executable, "-m", "heartbeat", "worker", "run", target, "--software", software]
    return subprocess.run(
        [*command, "--api", server_url, "--exit-when-idle", "--wait-seconds", "0", *flags],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean,
    )


def test_the_face_detection_worker_command_stores_the_faces_of_each_image(start_server):
    server = start_server()
    client = Client(server.url)
    client.register(**face_detection.SOFTWARE)
    astronaut = client.upload(photo("astronaut.png")).id
    brick = client.upload(photo("brick.png")).id

    done = run_worker(server.url, "heartbeat.examples.face_detection:detect", "face_detection", "--concurrency", "2")

    assert done.returncode == 0, done.stderr
    found = client.job("face_detection", astronaut)
    assert found.status == "done"
    assert max(overlap(box, ASTRONAUT_FACE) for box in found.info) > 0.5
    assert (client.job("face_detection", brick).status, client.job("face_detection", brick).info) == ("done", [])


def test_the_face_colours_worker_registers_itself_and_fills_its_extra_table(start_server):
    server = start_server()
    client = Client(server.url)
    astronaut = client.upload(photo("astronaut.png")).id

    done = run_worker(server.url, "heartbeat.examples.face_colours:describe", "face_colours", "--register")

    assert done.returncode == 0, done.stderr
    assert client.software("face_colours").tables == face_colours.SOFTWARE["tables"]
    job = client.job("face_colours", astronaut)
    rows = list(client.rows("face_colours", "faces", image_id=astronaut))
    assert job.status == "done" and job.info == {"faces": len(rows)}
    assert max(overlap(row, ASTRONAUT_FACE) for row in rows) > 0.5
    assert all(row["image_id"] == astronaut for row in rows)
