"""``GET /v1/export``: every image a query selects, with the results, as JSON lines, CSV or COCO,
streamed, without reading any image's bytes."""

from __future__ import annotations

import csv
import io
import json

import pytest
from pycocotools.coco import COCO

from helpers import distinct_images, multipart, register, stored_keys

SW = "/v1/software/faces"


@pytest.fixture
def exported(client, storage) -> dict[str, dict]:
    """Three images: one with two faces found (cats and dogs), one failed, one pending; then every
    stored byte removed, so that an export that read one would fail."""
    register(
        client, "faces", tables={"boxes": {"x": "float", "y": "float", "w": "float", "h": "float", "kind": "text"}}
    )
    register(client, "ocr")
    images = {}
    for number, data in enumerate(distinct_images(3)):
        form = multipart({"origin": 'cam "1", north' if number == 0 else "cam2"}, data, filename=f"p{number}.png")
        image = client.simulate_post("/v1/images", body=form["body"], headers=form["headers"]).json
        images[image["id"]] = image
    found, failed = client.simulate_post(f"{SW}/claim", json={"max": 2}).json["jobs"]
    boxes = [{"x": 1, "y": 2, "w": 3, "h": 4, "kind": "cat"}, {"x": 0.5, "y": 0, "w": 2, "h": 2, "kind": "dog"}]
    body = {"token": found["token"], "info": {"faces": 2}, "rows": {"boxes": boxes}}
    assert client.simulate_put(f"{SW}/jobs/{found['image_id']}/result", json=body).status_code == 200
    fail = {"token": failed["token"], "error": "no", "retry": False}
    assert client.simulate_post(f"{SW}/jobs/{failed['image_id']}/fail", json=fail).status_code == 200
    for key in stored_keys(storage):
        storage.delete(key)
    return {"images": images, "found": found["image_id"], "failed": failed["image_id"]}


def export(client, **params: str):
    answer = client.simulate_get("/v1/export", params=params)
    assert answer.status_code == 200, answer.text
    return answer


def test_jsonl_gives_each_image_with_every_softwares_status_version_info_and_rows(client, exported):
    answer = export(client, format="jsonl")
    assert answer.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in answer.text.splitlines()]
    assert {line["id"] for line in lines} == set(exported["images"])
    by_id = {line["id"]: line for line in lines}
    found = by_id[exported["found"]]["software"]["faces"]
    assert (found["status"], found["version"], found["info"]) == ("done", "1", {"faces": 2})
    assert [row["kind"] for row in found["rows"]["boxes"]] == ["cat", "dog"]
    assert by_id[exported["failed"]]["software"]["faces"]["status"] == "failed"
    assert {line["software"]["ocr"]["status"] for line in lines} == {"pending"}
    first = exported["images"][exported["found"]]
    uploaded = {key: value for key, value in first.items() if key != "duplicate"}  # the upload's answer
    assert {key: by_id[first["id"]][key] for key in uploaded} == uploaded


def test_where_and_software_choose_what_is_exported(client, exported):
    lines = export(client, format="jsonl", where="faces.status = 'done'", software="ocr").text.splitlines()
    [line] = [json.loads(line) for line in lines]
    assert line["id"] == exported["found"]
    assert list(line["software"]) == ["ocr"]


def test_csv_has_a_header_the_image_fields_and_each_softwares_status(client, exported):
    answer = export(client, format="csv")
    assert answer.headers["content-type"].startswith("text/csv")
    assert "\r\n" in answer.text  # RFC 4180 line ends
    rows = list(csv.DictReader(io.StringIO(answer.text, newline="")))
    assert len(rows) == 3
    by_id = {row["id"]: row for row in rows}
    assert by_id[exported["found"]]["faces.status"] == "done"
    assert by_id[exported["failed"]]["faces.status"] == "failed"
    assert {row["origin"] for row in rows} == {'cam "1", north', "cam2"}
    assert by_id[exported["found"]]["width"] == str(exported["images"][exported["found"]]["width"])


def test_coco_is_read_by_pycocotools_with_the_boxes_and_their_categories(client, exported, tmp_path):
    answer = export(client, format="coco", table="faces.boxes", category="kind")
    path = tmp_path / "coco.json"
    path.write_bytes(answer.content)
    coco = COCO(str(path))
    assert len(coco.getImgIds()) == 3
    assert {category["name"] for category in coco.loadCats(coco.getCatIds())} == {"cat", "dog"}
    [image] = [image for image in coco.loadImgs(coco.getImgIds()) if coco.getAnnIds(imgIds=[image["id"]])]
    assert image["file_name"] == exported["images"][exported["found"]]["filename"]
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
    assert sorted(annotation["bbox"] for annotation in annotations) == [[0.5, 0, 2, 2], [1, 2, 3, 4]]
    assert {annotation["area"] for annotation in annotations} == {4, 12}


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"format": "xml"}, 400),
        ({"format": "coco"}, 400),
        ({"format": "coco", "table": "faces.nope"}, 404),
        ({"format": "coco", "table": "faces.boxes", "category": "nope"}, 400),
        ({"software": "nobody"}, 404),
        ({"where": "origin ="}, 400),
    ],
)
def test_an_export_that_cannot_be_made_is_refused_before_anything_is_sent(client, exported, params, status):
    assert client.simulate_get("/v1/export", params=params).status_code == status
