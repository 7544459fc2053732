"""Exports taken while a worker submits results and an admin deletes images, against a real server
(waitress streams each body after its responder returned) and by ``heartbeat export`` processes:
every export is one snapshot.

Each image has a size of its own, and the boxes its result holds follow from that size, so each
export checks itself: every annotation lies on an image of the document, every image has exactly
the boxes of its size (with ``where=faces.status = 'done'``, none lacks them), and in the JSON lines
an image's status, result and rows agree. An export that read its images and boxes at two moments
puts boxes on another image, or on an ID the document lacks."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import PIL.Image
import pytest
import requests

pytestmark = pytest.mark.concurrency

IMAGES = 160
HTTP_TIMEOUT = 30
COCO = {"format": "coco", "table": "faces.boxes", "where": "faces.status = 'done'"}


def picture(number: int) -> bytes:
    """Image ``number``: 20 + number pixels wide, so its width names it."""
    out = io.BytesIO()
    PIL.Image.new("RGB", (20 + number, 16 + number % 7), (number % 256, 80, 160)).save(out, "PNG")
    return out.getvalue()


def boxes_of(width: int, height: int) -> list[list[float]]:
    """The boxes the worker finds on a picture of this size."""
    return [[width // 4, height // 4, width // 2, height // 3], [1, 2, width - 2, 3]]


def check_coco(document: dict[str, Any]) -> int:
    """Every box on an image of the document, each image with exactly the boxes of its size; returns
    how many images it holds."""
    sizes = {image["id"]: (image["width"], image["height"]) for image in document["images"]}
    found = defaultdict(list)
    for annotation in document["annotations"]:
        assert annotation["image_id"] in sizes, f"a box on image {annotation['image_id']}, which the document lacks"
        found[annotation["image_id"]].append(annotation["bbox"])
    for image_id, size in sizes.items():
        assert found[image_id] == boxes_of(*size), f"image {image_id} of size {size} has the boxes {found[image_id]}"
    return len(sizes)


def check_jsonl(text: str) -> None:
    """Each image's status, result and rows agree."""
    for line in map(json.loads, text.splitlines()):
        faces = line["software"]["faces"]
        rows = [[row[key] for key in "xywh"] for row in faces["rows"]["boxes"]]
        if faces["status"] == "done":
            assert (faces["info"], rows) == ({"width": line["width"]}, boxes_of(line["width"], line["height"])), line
        else:
            assert (faces["info"], rows) == (None, []), line


class Load:
    """A worker that claims and submits every job, and an admin deleting every fifth image, each in a
    thread of its own, until both are done."""

    def __init__(self, url: str, image_ids: list[str]):
        self._url = url
        self._doomed = image_ids[::5]
        self.errors: list[str] = []
        self._threads = [threading.Thread(target=self._guarded, args=(run,)) for run in (self._work, self._delete)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=120)

    def _guarded(self, run: Any) -> None:
        try:
            run(requests.Session())
        except Exception as error:  # reported by the test, with what failed
            self.errors.append(repr(error))

    def _work(self, session: requests.Session) -> None:
        while True:
            answer = session.post(f"{self._url}/v1/software/faces/claim", json={"max": 3}, timeout=HTTP_TIMEOUT)
            answer.raise_for_status()
            jobs = answer.json()["jobs"]
            if not jobs:
                return
            for job in jobs:
                width, height = job["image"]["width"], job["image"]["height"]
                rows = [dict(zip("xywh", box, strict=True)) for box in boxes_of(width, height)]
                body = {"token": job["token"], "info": {"width": width}, "rows": {"boxes": rows}}
                url = f"{self._url}/v1/software/faces/jobs/{job['image_id']}/result"
                submitted = session.put(url, json=body, timeout=HTTP_TIMEOUT)
                assert submitted.status_code in (200, 404), submitted.text  # 404: deleted meanwhile

    def _delete(self, session: requests.Session) -> None:
        for image_id in self._doomed:
            answer = session.delete(f"{self._url}/v1/images/{image_id}", timeout=HTTP_TIMEOUT)
            assert answer.status_code == 204, answer.text


def cli_exports(flags: list[str], load: Load, folder: Path, results: list[str]) -> None:
    """``heartbeat export`` processes, one after another while the load runs; each checked."""
    number = 0
    while load.running() or number < 2:
        out = folder / f"cli-{number}.json"
        done = subprocess.run(
            [sys.executable, "-m", "heartbeat", "export", *(f"--{key}={value}" for key, value in COCO.items()),
             "-o", str(out), *flags],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        try:
            assert done.returncode == 0, done.stderr
            check_coco(json.loads(out.read_text()))
            results.append("ok")
        except AssertionError as error:
            results.append(f"heartbeat export {number}: {error}")
        number += 1


@pytest.fixture
def server(start_server, db_auth_file, tmp_path) -> tuple[Any, list[str]]:
    """A server with ``faces`` and its boxes table, and IMAGES pictures; the flags that point
    ``heartbeat export`` at its database."""
    server = start_server()
    registered = requests.post(
        f"{server.url}/v1/software",
        json={"name": "faces", "tables": {"boxes": {"x": "float", "y": "float", "w": "float", "h": "float"}}},
        timeout=HTTP_TIMEOUT,
    )
    assert registered.status_code == 201, registered.text
    flags = ["--db-auth", str(db_auth_file)] if db_auth_file else ["--data-dir", str(server.data_dir)]
    return server, flags


def test_exports_taken_while_results_commit_and_images_go_are_each_one_snapshot(server, tmp_path):
    server, flags = server
    session = requests.Session()
    image_ids = []
    for number in range(IMAGES):
        files = {"file": (f"{number}.png", picture(number), "image/png")}
        answer = session.post(f"{server.url}/v1/images", files=files, timeout=HTTP_TIMEOUT)
        assert answer.status_code == 201, answer.text
        image_ids.append(answer.json()["id"])
    load = Load(server.url, image_ids)
    cli_results: list[str] = []
    cli = threading.Thread(target=cli_exports, args=(flags, load, tmp_path, cli_results))
    load.start()
    cli.start()
    faults: dict[str, list[str]] = {"coco": [], "jsonl": []}
    exports, sizes = 0, set()
    while load.running() or exports < 10:
        for params in (COCO, {"format": "jsonl"}):
            answer = session.get(f"{server.url}/v1/export", params=params, timeout=HTTP_TIMEOUT)
            assert answer.status_code == 200, answer.text
            try:
                if params is COCO:
                    sizes.add(check_coco(answer.json()))
                else:
                    check_jsonl(answer.text)
            except AssertionError as error:
                faults[params["format"]].append(f"export {exports}: {error}")
        exports += 1
    load.join()
    cli.join(timeout=300)
    assert not load.errors, load.errors
    for fmt, found in faults.items():
        assert found == [], f"{len(found)} of {exports} {fmt} exports were not one snapshot: {found[:2]}"
    assert [result for result in cli_results if result != "ok"] == []
    assert len(sizes) > 2  # the exports did see the results arrive
    assert check_coco(session.get(f"{server.url}/v1/export", params=COCO, timeout=HTTP_TIMEOUT).json()) == IMAGES - len(
        image_ids[::5]
    )
