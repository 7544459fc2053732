"""A COCO export as users read it: ``heartbeat export --format coco --images DIR`` writes the document
and the pictures, and three real COCO readers (pycocotools, the format's reference; supervision;
globox) load the whole of it, each seeing every picture at its recorded size with its boxes on it.

The export holds two uploads that share a name (every camera writes ``img.jpg``) and a photo stored
sideways with EXIF orientation 6, whose boxes are in the upright frame: the picture written for it
must be upright, or every box misses the face it was drawn on."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from globox import AnnotationSet
from pycocotools.coco import COCO

from helpers import claim, heartbeat, image_bytes, multipart, oriented, register, upright_astronaut

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "OpenCV", UserWarning)  # without OpenCV it reads with Pillow, as here
    import supervision as sv

SW = "/v1/software/faces"
TABLES = {"boxes": {"x": "float", "y": "float", "w": "float", "h": "float", "kind": "text"}}
UPRIGHT = upright_astronaut()
FACE = {"x": 175, "y": 65, "w": 90, "h": 100, "kind": "face"}  # on the upright portrait (test_orientation.py)


def upload_named(client, data: bytes, filename: str) -> dict:
    form = multipart({}, data, filename=filename)
    answer = client.simulate_post("/v1/images", body=form["body"], headers=form["headers"])
    assert answer.status_code == 201, answer.text
    return answer.json


@pytest.fixture
def dataset(client, check_flags, tmp_path) -> dict:
    """The three images, their boxes submitted, exported with their pictures by the CLI: ``{"folder",
    "annotations" (the COCO file), "boxes" ({heartbeat id: [[x, y, w, h, kind], ...]}), "records"}``."""
    register(client, "faces", tables=TABLES)
    records = [
        upload_named(client, image_bytes((200, 30, 30), size=(64, 48)), "img.jpg"),
        upload_named(client, image_bytes((30, 200, 30), size=(80, 40), fmt="PNG"), "img.jpg"),
        upload_named(client, oriented(UPRIGHT, 6), "portrait.jpg"),
    ]
    rows = {
        records[0]["id"]: [{"x": 4, "y": 6, "w": 10, "h": 12, "kind": "cat"}],
        records[1]["id"]: [
            {"x": 1, "y": 2, "w": 30, "h": 20, "kind": "dog"},
            {"x": 40, "y": 0, "w": 8, "h": 8, "kind": "cat"},
        ],
        records[2]["id"]: [FACE],
    }
    for job in claim(client, "faces", max=3):
        body = {"token": job["token"], "info": {}, "rows": {"boxes": rows[job["image_id"]]}}
        assert client.simulate_put(f"{SW}/jobs/{job['image_id']}/result", json=body).status_code == 200
    folder = tmp_path / "dataset"
    annotations = tmp_path / "annotations.json"
    done = heartbeat(
        "export", "--format", "coco", "--table", "faces.boxes", "--category", "kind",
        "--images", str(folder), "-o", str(annotations), *check_flags,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    boxes = {image_id: [[r["x"], r["y"], r["w"], r["h"], r["kind"]] for r in found] for image_id, found in rows.items()}
    return {"folder": folder, "annotations": annotations, "boxes": boxes, "records": records}


def test_the_export_writes_every_picture_once_under_a_unique_name_upright(dataset):
    folder: Path = dataset["folder"]
    document = json.loads(dataset["annotations"].read_text())
    names = sorted(image["file_name"] for image in document["images"])
    assert names == sorted(path.name for path in folder.iterdir())  # no partial or extra file
    assert len(set(names)) == 3
    by_id = {record["id"]: record for record in dataset["records"]}
    for image in document["images"]:
        record = by_id[image["heartbeat_id"]]
        assert image["file_name"] == record["id"] + (".png" if record["content_type"] == "image/png" else ".jpg")
        assert image["original_filename"] == record["filename"]
        with PIL.Image.open(folder / image["file_name"]) as picture:
            assert picture.size == (image["width"], image["height"]) == (record["width"], record["height"])
            assert picture.getexif().get(0x0112, 1) == 1


def test_pycocotools_reads_the_whole_export_with_each_box_on_its_picture(dataset):
    coco = COCO(str(dataset["annotations"]))
    categories = {category["id"]: category["name"] for category in coco.loadCats(coco.getCatIds())}
    seen = {}
    for image in coco.loadImgs(coco.getImgIds()):
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        seen[image["heartbeat_id"]] = [[*a["bbox"], categories[a["category_id"]]] for a in annotations]
        with PIL.Image.open(dataset["folder"] / image["file_name"]) as picture:
            assert picture.size == (image["width"], image["height"])
    assert seen == dataset["boxes"]


def test_supervision_reads_the_whole_export_and_sees_each_picture_at_its_size_with_its_boxes(dataset):
    loaded = sv.DetectionDataset.from_coco(str(dataset["folder"]), str(dataset["annotations"]))
    assert len(loaded) == 3
    document = json.loads(dataset["annotations"].read_text())
    by_name = {image["file_name"]: image for image in document["images"]}
    for path, pixels, detections in loaded:
        image = by_name[Path(path).name]
        assert pixels.shape[:2] == (image["height"], image["width"])  # the picture as the reader decodes it
        expected = dataset["boxes"][image["heartbeat_id"]]
        assert detections.xyxy.tolist() == [[x, y, x + w, y + h] for x, y, w, h, _ in expected]
        assert [loaded.classes[class_id] for class_id in detections.class_id] == [kind for *_, kind in expected]


def test_globox_reads_the_whole_export_with_each_image_size_and_box(dataset):
    annotations = AnnotationSet.from_coco(dataset["annotations"])
    document = json.loads(dataset["annotations"].read_text())
    by_name = {image["file_name"]: image for image in document["images"]}
    assert sorted(annotations.image_ids) == sorted(by_name)
    for annotation in annotations:
        image = by_name[annotation.image_id]
        assert annotation.image_size == (image["width"], image["height"])
        with PIL.Image.open(dataset["folder"] / annotation.image_id) as picture:
            assert picture.size == annotation.image_size
        found = [[*box.ltwh, box.label] for box in annotation.boxes]
        assert found == [
            [float(x), float(y), float(w), float(h), kind]
            for x, y, w, h, kind in dataset["boxes"][image["heartbeat_id"]]
        ]


def test_the_box_on_the_sideways_photo_frames_the_face_in_the_written_picture(dataset):
    portrait = dataset["records"][2]
    [image] = [
        i for i in json.loads(dataset["annotations"].read_text())["images"] if i["heartbeat_id"] == portrait["id"]
    ]
    with PIL.Image.open(dataset["folder"] / image["file_name"]) as picture:
        written = np.asarray(picture.convert("RGB"), dtype="float64")
    box = (slice(FACE["y"], FACE["y"] + FACE["h"]), slice(FACE["x"], FACE["x"] + FACE["w"]))
    assert np.abs(written[box] - np.asarray(UPRIGHT, dtype="float64")[box]).mean() < 4


def test_only_a_coco_export_writes_pictures(check_flags, tmp_path):
    done = heartbeat("export", "--format", "jsonl", "--images", str(tmp_path / "pictures"), *check_flags)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --images: only a coco export (--format coco) writes pictures"
    assert not (tmp_path / "pictures").exists()
    (tmp_path / "a-file").write_text("not a folder")
    done = heartbeat(
        "export", "--format", "coco", "--table", "faces.boxes", "--images", str(tmp_path / "a-file"), *check_flags
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith(f"error: --images: {tmp_path / 'a-file'} cannot be made a folder")


def test_the_picture_served_with_upright_true_is_the_one_the_export_writes(client, dataset):
    portrait = dataset["records"][2]
    served = client.simulate_get(f"/v1/images/{portrait['id']}/content", params={"upright": "true"})
    assert served.status_code == 200
    assert served.content == (dataset["folder"] / f"{portrait['id']}.jpg").read_bytes()
    assert PIL.Image.open(io.BytesIO(served.content)).size == (512, 384)


def test_a_picture_the_store_has_lost_is_named_and_the_export_exits_1(dataset, storage, check_flags, tmp_path):
    from heartbeat.db.models import Image

    lost = dataset["records"][0]["id"]
    storage.delete(Image.get_by_id(lost).storage_key)
    folder = tmp_path / "again"
    done = heartbeat(
        "export", "--format", "coco", "--table", "faces.boxes", "--images", str(folder),
        "-o", str(tmp_path / "again.json"), *check_flags,
    )  # fmt: skip
    assert done.returncode == 1
    assert f"image {lost}: its bytes are missing from storage" in done.stderr
    assert sorted(path.name for path in folder.iterdir()) == sorted(
        name for name in (path.name for path in dataset["folder"].iterdir()) if not name.startswith(lost)
    )
    assert len(json.loads((tmp_path / "again.json").read_text())["images"]) == 3  # the document is whole
