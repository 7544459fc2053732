"""``GET /v1/export``: every image a query selects, with the results, as JSON lines, CSV or COCO,
streamed, without reading any image's bytes."""

from __future__ import annotations

import csv
import io
import json

import pytest
from pycocotools.coco import COCO

from heartbeat.db.models import Software, column_attribute, extra_table_model
from helpers import claim, distinct_images, image_bytes, multipart, register, stored_keys, upload

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
    found = exported["images"][exported["found"]]
    assert (image["file_name"], image["heartbeat_id"]) == (f"{found['id']}.png", found["id"])
    assert image["original_filename"] == found["filename"]
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


# --- COCO: what is a box, and what names a picture --------------------------------------------

BOX_TABLE = {"boxes": {"x": "float", "y": "float", "w": "float", "h": "float", "kind": "text"}}
GOOD = {"x": 1, "y": 2, "w": 3, "h": 4, "kind": "cat"}


def coco_of_one_result(client, rows: list[dict]) -> dict:
    """The COCO export (category ``kind``) of one image whose result has ``rows``."""
    register(client, "faces", tables=BOX_TABLE)
    upload(client, image_bytes())
    [job] = claim(client, "faces")
    body = {"token": job["token"], "info": {}, "rows": {"boxes": rows}}
    assert client.simulate_put(f"{SW}/jobs/{job['image_id']}/result", json=body).status_code == 200
    return export(client, format="coco", table="faces.boxes", category="kind").json


@pytest.mark.parametrize(
    "bad",
    [
        {"w": -3, "h": -4},  # the row: once a box of area 12
        {"w": -3},
        {"h": -4},
        {"w": 0},
        {"h": 0},
        {"w": 0, "h": 0},
        {"x": None},
        {"y": None},
        {"w": None},
        {"h": None},
        {"kind": None},  # a box of no category
        {"w": 1e200, "h": 1e200},  # an area past the largest double: COCO's area would be null
    ],
)
def test_coco_leaves_out_rows_that_are_no_box_of_a_category(client, bad):
    document = coco_of_one_result(client, [GOOD | bad, GOOD])
    assert [annotation["bbox"] for annotation in document["annotations"]] == [[1, 2, 3, 4]]
    assert [annotation["area"] for annotation in document["annotations"]] == [12]
    assert [category["name"] for category in document["categories"]] == ["cat"]


@pytest.mark.parametrize(
    ("kind", "values", "names"),
    [
        ("bool", [True, False], ["true", "false"]),
        ("int", [7, 7, 8], ["7", "8"]),
        ("json", [{"a": [1, "x"]}, "cat"], ['{"a": [1, "x"]}', "cat"]),
    ],
)
def test_coco_names_a_category_by_the_value_as_stored(client, kind, values, names):
    register(client, "faces", tables={"boxes": {"x": "float", "y": "float", "w": "float", "h": "float", "kind": kind}})
    upload(client, image_bytes())
    [job] = claim(client, "faces")
    rows = [{"x": 1, "y": 2, "w": 3, "h": 4, "kind": value} for value in values]
    body = {"token": job["token"], "info": {}, "rows": {"boxes": rows}}
    assert client.simulate_put(f"{SW}/jobs/{job['image_id']}/result", json=body).status_code == 200
    document = export(client, format="coco", table="faces.boxes", category="kind").json
    assert [category["name"] for category in document["categories"]] == names


@pytest.mark.parametrize("column", ["x", "y", "w", "h"])
def test_coco_leaves_out_a_row_whose_coordinate_is_not_a_number(client, database, column):
    if database.features.mysql:
        pytest.skip("a MySQL DOUBLE column holds numbers alone; SQLite keeps whatever a row was given")
    assert len(coco_of_one_result(client, [GOOD])["annotations"]) == 1
    software = Software.get(Software.name == "faces")
    model = extra_table_model(software.id, "boxes", software.tables["boxes"])
    model.update({getattr(model, column_attribute(column)): "12a"}).execute()  # written behind the API's back
    assert client.simulate_get(f"{SW}/tables/boxes").json["rows"][0][column] == "12a"
    assert export(client, format="coco", table="faces.boxes", category="kind").json["annotations"] == []


def upload_named(client, data: bytes, filename: str, **fields: str) -> dict:
    form = multipart(fields, data, filename=filename)
    answer = client.simulate_post("/v1/images", body=form["body"], headers=form["headers"])
    assert answer.status_code == 201, answer.text
    return answer.json


def test_coco_file_names_are_unique_and_lead_back_to_the_heartbeat_image(client):
    register(client, "faces", tables=BOX_TABLE)
    jpeg = upload_named(client, image_bytes((1, 2, 3)), "img.jpg")  # two cameras, one name
    png = upload_named(client, image_bytes((4, 5, 6), fmt="PNG"), "img.jpg")
    images = export(client, format="coco", table="faces.boxes").json["images"]
    assert sorted(
        (image["file_name"], image["heartbeat_id"], image["original_filename"]) for image in images
    ) == sorted([(f"{jpeg['id']}.jpg", jpeg["id"], "img.jpg"), (f"{png['id']}.png", png["id"], "img.jpg")])
    assert [(image["id"], image["width"], image["height"]) for image in images] == [(1, 32, 24), (2, 32, 24)]


# --- CSV cells a spreadsheet would run -----------------------------------------------------------

FORMULAS = ["=1+1", "+1+1", "-1+1", "@SUM(A1)", "\t=1+1", "\r=1+1"]


def test_csv_cells_a_spreadsheet_would_run_as_formulas_get_a_leading_quote_and_other_formats_keep_them(client):
    register(client, "faces", tables=BOX_TABLE)
    stored = [
        upload_named(client, data, f"{formula}.png", origin=formula)
        for formula, data in zip(FORMULAS, distinct_images(len(FORMULAS)), strict=True)
    ]
    safe = upload_named(client, image_bytes(), "a=b.jpg", origin="north -1")  # not at the start: as it is
    rows = list(csv.DictReader(io.StringIO(export(client, format="csv").text, newline="")))
    by_id = {row["id"]: row for row in rows}
    for formula, image in zip(FORMULAS, stored, strict=True):
        row = by_id[image["id"]]
        assert (row["origin"], row["filename"]) == ("'" + formula, f"'{formula}.png")
    assert (by_id[safe["id"]]["origin"], by_id[safe["id"]]["filename"]) == ("north -1", "a=b.jpg")
    lines = {line["id"]: line for line in map(json.loads, export(client, format="jsonl").text.splitlines())}
    coco = {image["heartbeat_id"]: image for image in export(client, format="coco", table="faces.boxes").json["images"]}
    for formula, image in zip(FORMULAS, stored, strict=True):
        assert (lines[image["id"]]["origin"], lines[image["id"]]["filename"]) == (formula, f"{formula}.png")
        assert coco[image["id"]]["original_filename"] == f"{formula}.png"


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_every_kind_of_csv_cell_is_guarded_but_numbers_stay_numbers(start):
    from heartbeat.catalog.export import csv_cell

    assert csv_cell(f"{start}x") == f"'{start}x"  # an ID, a status, any text column
    assert json.loads(csv_cell({"note": f"{start}x"})) == {"note": f"{start}x"}  # JSON text: begins with {
    assert json.loads(csv_cell([f"{start}x"])) == [f"{start}x"]
    assert (csv_cell(-5), csv_cell(-0.5), csv_cell(None)) == (-5, -0.5, "")


# --- list-valued parameters -----------------------------------------------------------------------


@pytest.fixture
def statements(database, monkeypatch) -> list[str]:
    """Every SQL statement run from here on."""
    run: list[str] = []
    execute_sql = database.engine.execute_sql

    def counted(sql, params=None, *args, **kwargs):
        run.append(sql)
        return execute_sql(sql, params, *args, **kwargs)

    monkeypatch.setattr(database.engine, "execute_sql", counted)
    return run


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_software_named_many_times_is_exported_once_and_read_once(client, exported, statements, fmt):
    once = export(client, format=fmt, software="faces,ocr")
    statements_once = len(statements)
    statements.clear()
    again = export(client, format=fmt, software=",".join(["faces"] * 20_000 + ["ocr", "faces"]))
    assert len(statements) == statements_once  # not 20,000 times the queries of one software
    assert again.content == once.content
    if fmt == "csv":
        assert again.text.splitlines()[0].endswith(",faces.status,ocr.status")
    unknown = client.simulate_get("/v1/export", params={"format": fmt, "software": "nobody,faces,nobody,ghost"})
    assert unknown.status_code == 404  # distinct names, one unknown: refused as before
    assert "nobody" in unknown.json["description"]
