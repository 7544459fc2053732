"""The contract's "Text and numbers": what a client sends must be Unicode text and finite doubles, else
400 and nothing is stored; every answer is strict JSON; a cursor the server did not make is 400.
Each example of issue 12, with its right answer, on whichever database the pass runs.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import quote

import falcon.testing
import jsonschema
import pytest

from heartbeat.db.models import Image, Software, job_model
from helpers import claim, distinct_images, image_bytes, multipart, register, stored_keys, upload
from strict_json import strict_json

FD = "/v1/software/face_detection"
SURROGATE = "\ud800"
BEYOND_A_DOUBLE = ["1e999", "-1e999", "1" + "0" * 400]
JSON = {"Content-Type": "application/json"}


def send(client: falcon.testing.TestClient, method: str, path: str, value: Any, **numbers: str) -> Any:
    """``value`` as JSON text with every non-ASCII character escaped, so that a lone surrogate goes as
    ``"\\ud800"``; each string ``"<name>"`` in it becomes the raw number text ``numbers[name]``."""
    text = json.dumps(value)
    for name, literal in numbers.items():
        text = text.replace(json.dumps(name), literal)
    return client.simulate_request(method, path, body=text, headers=JSON)


def answer(result: falcon.testing.Result) -> Any:
    """The answer's body, read strictly."""
    return strict_json(result.content)


def assert_reads_still_answer(client: falcon.testing.TestClient, image_count: int) -> None:
    """Every list, read and claim answers 200 with strict JSON, and sees ``image_count`` images."""
    images = answer(client.simulate_get("/v1/images", params={"include": "jobs,thumbnail"}))["images"]
    assert len(images) == image_count
    for image in images:
        assert answer(client.simulate_get(f"/v1/images/{image['id']}"))["id"] == image["id"]
    assert answer(client.simulate_get("/v1/software"))["software"][0]["counts"]
    assert len(answer(client.simulate_get(f"{FD}/jobs"))["jobs"]) == image_count
    answer(client.simulate_get(f"{FD}/tables/faces"))
    claimed = client.simulate_post(f"{FD}/claim", json={"max": 100})
    assert claimed.status_code == 200, claimed.text
    assert all(job["image"]["id"] for job in answer(claimed)["jobs"])


@pytest.fixture
def software(client):
    register(client, "face_detection", tables={"faces": {"x": "int", "label": "text"}})


@pytest.fixture
def one_image(client, software) -> str:
    return upload(client, distinct_images(1)[0]).json["id"]


# --- input: lone surrogates ------------------------------------------------------------------------

OTHER_DATA_WITH_A_SURROGATE = [
    {"k": SURROGATE},
    {SURROGATE: 1},
    {"k": [[{"deep": "\udfff"}]]},
    {"k": "ok", "list": ["a", "b\udc00c"]},
]


@pytest.mark.parametrize("other_data", OTHER_DATA_WITH_A_SURROGATE)
def test_a_lone_surrogate_in_other_data_of_a_form_upload_is_400_and_stores_nothing(
    client, storage, one_image, other_data
):
    before = stored_keys(storage)
    result = upload(client, image_bytes(), other_data=json.dumps(other_data))
    assert result.status_code == 400, result.text
    assert "surrogate" in answer(result)["description"]
    assert stored_keys(storage) == before
    assert_reads_still_answer(client, 1)


@pytest.mark.parametrize(
    "body",
    [
        {"url": "http://127.0.0.1:9/x.jpg", "other_data": {"k": SURROGATE}},
        {"url": "http://127.0.0.1:9/x.jpg", "other_data": {SURROGATE: {"nested": True}}},
        {"url": "http://127.0.0.1:9/x.jpg", "origin": f"cam{SURROGATE}"},
        {"url": f"http://127.0.0.1:9/{SURROGATE}.jpg"},
    ],
)
def test_a_lone_surrogate_in_a_json_upload_is_400_before_anything_is_fetched(client, storage, one_image, body):
    before = stored_keys(storage)
    result = send(client, "POST", "/v1/images", body)
    assert result.status_code == 400, result.text  # not the 422 a fetch of a loopback address would be
    assert stored_keys(storage) == before
    assert_reads_still_answer(client, 1)


def test_a_lone_surrogate_in_a_direct_upload_is_400(client, one_image):
    assert send(client, "POST", "/v1/uploads", {"filename": f"caf{SURROGATE}.png"}).status_code == 400
    started = client.simulate_post("/v1/uploads", json={"filename": "cafe.png"}).json
    completed = send(client, "POST", f"/v1/uploads/{started['upload_id']}/complete", {"other_data": {"k": SURROGATE}})
    assert completed.status_code == 400, completed.text
    assert_reads_still_answer(client, 1)


@pytest.mark.parametrize("info", [{"k": SURROGATE}, [SURROGATE], SURROGATE, {SURROGATE: None}])
def test_a_lone_surrogate_in_a_result_is_400_and_the_job_stays_claimed(client, one_image, info):
    [job] = claim(client)
    body = {"token": job["token"], "info": info}
    assert send(client, "PUT", f"{FD}/jobs/{one_image}/result", body).status_code == 400
    assert answer(client.simulate_get(f"{FD}/jobs/{one_image}"))["status"] == "claimed"
    rows = {"faces": [{"x": 1, "label": SURROGATE}]}
    bad_row = {"token": job["token"], "info": 1, "rows": rows}
    assert send(client, "PUT", f"{FD}/jobs/{one_image}/result", bad_row).status_code == 400
    assert answer(client.simulate_get(f"{FD}/tables/faces"))["rows"] == []
    good = client.simulate_put(f"{FD}/jobs/{one_image}/result", json={"token": job["token"], "info": "ok"})
    assert good.status_code == 200, good.text


def test_in_a_batch_an_item_with_a_lone_surrogate_or_a_number_past_a_double_is_invalid_alone(client, software):
    ids = [upload(client, data).json["id"] for data in distinct_images(4)]
    jobs = {job["image_id"]: job for job in claim(client, max=4)}
    results = [
        {"image_id": ids[0], "token": jobs[ids[0]]["token"], "info": {"faces": 1}},
        {"image_id": ids[1], "token": jobs[ids[1]]["token"], "info": {"k": SURROGATE}},
        {"image_id": ids[2], "token": jobs[ids[2]]["token"], "info": {"v": "<too big>"}},
        {"image_id": ids[3], "token": jobs[ids[3]]["token"], "info": [[[SURROGATE]]]},
    ]
    result = send(client, "POST", f"{FD}/results", {"results": results}, **{"<too big>": "1e999"})
    assert result.status_code == 200, result.text
    verdicts = [(item["image_id"], item["status"]) for item in answer(result)["results"]]
    assert verdicts == [(ids[0], "done"), (ids[1], "invalid"), (ids[2], "invalid"), (ids[3], "invalid")]
    statuses = {job["image_id"]: job["status"] for job in answer(client.simulate_get(f"{FD}/jobs"))["jobs"]}
    assert statuses == {ids[0]: "done", ids[1]: "claimed", ids[2]: "claimed", ids[3]: "claimed"}


def test_a_batch_item_whose_image_id_is_a_lone_surrogate_is_invalid_and_echoed_as_null(client, one_image):
    [job] = claim(client)
    results = [{"image_id": SURROGATE, "token": job["token"], "info": 1}]
    result = send(client, "POST", f"{FD}/results", {"results": results})
    assert answer(result)["results"] == [
        {"image_id": None, "status": "invalid", "description": result.json["results"][0]["description"]}
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"name": "plates", "origins": [SURROGATE]},
        {"name": "plates", "origins": ["road", f"cam{SURROGATE}"]},
        {"name": "plates", "tables": {SURROGATE: {"x": "int"}}},
        {"name": "plates", "tables": {"boxes": {SURROGATE: "int"}}},
        {"name": "plates", "after": [SURROGATE]},
        {"name": f"plates{SURROGATE}"},
    ],
)
def test_a_lone_surrogate_at_registration_is_400_and_registers_nothing(client, one_image, body):
    result = send(client, "POST", "/v1/software", body)
    assert result.status_code == 400, result.text
    assert [item["name"] for item in answer(client.simulate_get("/v1/software"))["software"]] == ["face_detection"]
    assert_reads_still_answer(client, 1)


def test_a_lone_surrogate_in_the_error_of_a_failure_is_400_and_the_job_stays_claimed(client, one_image):
    [job] = claim(client)
    body = {"token": job["token"], "error": f"CUDA out of memory {SURROGATE}", "retry": False}
    assert send(client, "POST", f"{FD}/jobs/{one_image}/fail", body).status_code == 400
    assert answer(client.simulate_get(f"{FD}/jobs/{one_image}"))["status"] == "claimed"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", f"{FD}/jobs/{{image}}/extend", {"token": SURROGATE}),
        ("POST", f"{FD}/jobs/{{image}}/release", {"token": SURROGATE}),
        ("POST", f"{FD}/requeue", {"status": "done", "image_ids": [SURROGATE]}),
        ("PATCH", "/v1/images/{image}", {"priority": 1, SURROGATE: 2}),
        ("POST", f"{FD}/claim", {SURROGATE: 1}),
    ],
)
def test_a_lone_surrogate_anywhere_in_any_json_body_is_400(client, one_image, method, path, body):
    claim(client)
    result = send(client, method, path.format(image=one_image), body)
    assert result.status_code == 400, result.text
    assert "surrogate" in answer(result)["description"]


def test_an_utf8_encoded_surrogate_in_a_json_body_is_not_utf8_and_is_400(client, one_image):
    body = b'{"url": "http://127.0.0.1:9/x.jpg", "origin": "\xed\xa0\x80"}'
    result = client.simulate_post("/v1/images", body=body, headers=JSON)
    assert result.status_code == 400, result.text
    assert_reads_still_answer(client, 1)


# --- input: numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize("number", BEYOND_A_DOUBLE)
def test_a_number_past_the_largest_double_is_400_wherever_it_is_sent(client, storage, one_image, number):
    before = stored_keys(storage)
    form = upload(client, image_bytes(), other_data=f'{{"v": {number}}}')
    assert form.status_code == 400, form.text
    by_url = send(
        client, "POST", "/v1/images", {"url": "http://127.0.0.1:9/x.jpg", "other_data": {"v": "<n>"}}, **{"<n>": number}
    )
    assert by_url.status_code == 400, by_url.text
    assert stored_keys(storage) == before
    [job] = claim(client)
    result = send(
        client, "PUT", f"{FD}/jobs/{one_image}/result", {"token": job["token"], "info": {"v": "<n>"}}, **{"<n>": number}
    )
    assert result.status_code == 400, result.text
    assert "largest double" in answer(result)["description"]
    assert answer(client.simulate_get(f"{FD}/jobs/{one_image}"))["status"] == "claimed"
    assert_reads_still_answer(client, 1)


@pytest.mark.parametrize(
    ("literal", "value"), [("1e308", 1e308), ("5e-324", 5e-324), (str(2**64), 2**64), ("-0.0", -0.0), ("1e-400", 0.0)]
)
def test_a_number_a_double_holds_is_kept(client, one_image, literal, value):
    result = upload(client, image_bytes(), other_data=f'{{"v": {literal}}}')
    assert result.status_code == 201, result.text
    assert answer(client.simulate_get(f"/v1/images/{result.json['id']}"))["other_data"] == {"v": value}


def test_an_integral_float_is_an_integer_where_the_schema_says_integer(client, clock, software):
    """JSON Schema counts 96673.0 as an integer, and schemathesis sends it so."""
    image = upload(client).json["id"]
    changed = client.simulate_patch(f"/v1/images/{image}", body='{"priority": 96673.0}', headers=JSON)
    assert changed.status_code == 200, changed.text
    assert '"priority": 96673,' in changed.text and answer(changed)["priority"] == 96673
    registered = client.simulate_post(
        "/v1/software", body='{"name": "ocr", "lease_seconds": 60.0, "max_attempts": 3.0}', headers=JSON
    )
    assert registered.status_code == 201, registered.text
    assert (registered.json["lease_seconds"], registered.json["max_attempts"]) == (60, 3)
    assert '"lease_seconds": 60,' in registered.text
    upload(client, image_bytes((1, 2, 3)))
    claimed = client.simulate_post(f"{FD}/claim", body='{"max": 2.0, "lease_seconds": 30.0}', headers=JSON)
    assert claimed.status_code == 200, claimed.text  # MySQL refuses LIMIT 2.0
    assert [job["lease_expires_at"] for job in claimed.json["jobs"]] == [clock.now + 30] * 2
    assert client.simulate_patch(f"/v1/images/{image}", body='{"priority": 1.5}', headers=JSON).status_code == 400


@pytest.mark.parametrize(
    ("limit", "status"),
    [
        ("2.0", 200),
        ("2", 200),
        ("1e1", 200),
        ("1_0", 400),
        (" 2", 400),
        ("2.5", 400),
        ("1e999", 400),
        ("0", 400),
        ("1001", 400),
    ],
)
def test_a_limit_is_read_as_a_json_number_that_must_be_an_integer(client, seeded, limit, status):
    for path in PAGED:
        result = client.simulate_get(path, query_string=f"limit={quote(limit)}")
        assert result.status_code == status, (path, result.text)
    if status == 200:
        assert len(answer(client.simulate_get("/v1/images", query_string=f"limit={quote(limit)}"))["images"]) == min(
            int(float(limit)), 5
        )


# --- input: multipart, query strings, paths, headers ----------------------------------------------


def _form(*parts: bytes) -> dict[str, Any]:
    body = b"".join(b"--b\r\n" + part + b"\r\n" for part in parts) + b"--b--\r\n"
    return {"body": body, "headers": {"Content-Type": "multipart/form-data; boundary=b"}}


FILE_PART = b'Content-Disposition: form-data; name="file"; filename="cafe.png"\r\n\r\n'


@pytest.mark.parametrize(
    "parts",
    [
        [b'Content-Disposition: form-data; name="file"; filename="caf\xe9.png"\r\n\r\n'],
        [b"Content-Disposition: form-data; name=\"file\"; filename*=utf-8''caf%E9.png\r\n\r\n"],
        [b"Content-Disposition: form-data; name=\"file\"; filename*=utf-7''caf+2AA-.png\r\n\r\n"],
        [FILE_PART, b'Content-Disposition: form-data; name="origin"\r\n\r\ncaf\xe9'],
        [
            FILE_PART,
            b'Content-Disposition: form-data; name="origin"\r\nContent-Type: text/plain; charset=utf-7\r\n\r\n+2AA-',
        ],
        [
            FILE_PART,
            b'Content-Disposition: form-data; name="other_data"\r\nContent-Type: application/json\r\n\r\n{"k": "\xff"}',
        ],
        [FILE_PART, b'Content-Disposition: form-data; name="origin"\r\nContent-Type: text/pl\xe4in\r\n\r\nx'],
        [FILE_PART, b'Content-Disposition: form-data; name="\xe9"\r\n\r\nx'],
    ],
    ids=[
        "latin1-filename",
        "rfc5987-latin1",
        "utf7-surrogate-filename",
        "latin1-field",
        "utf7-surrogate-field",
        "json-part-not-utf8",
        "latin1-content-type",
        "latin1-field-name",
    ],
)
def test_a_form_part_that_is_not_unicode_text_is_400_and_stores_nothing(client, storage, one_image, parts):
    before = stored_keys(storage)
    data = image_bytes((9, 9, 9))
    parts = [part + data if part is parts[0] else part for part in parts]
    result = client.simulate_post("/v1/images", **_form(*parts))
    assert result.status_code == 400, result.text
    assert stored_keys(storage) == before
    assert_reads_still_answer(client, 1)


def test_a_form_field_in_another_declared_charset_is_read_in_it(client):
    part = b'Content-Disposition: form-data; name="origin"\r\nContent-Type: text/plain; charset=latin-1\r\n\r\ncaf\xe9'
    result = client.simulate_post("/v1/images", **_form(FILE_PART + image_bytes(), part))
    assert result.status_code == 201, result.text
    assert answer(result)["origin"] == "café"


def test_other_data_may_be_sent_as_a_json_part(client):
    part = (
        b'Content-Disposition: form-data; name="other_data"\r\nContent-Type: application/json\r\n\r\n{"k": "\xc3\xa9"}'
    )
    result = client.simulate_post("/v1/images", **_form(FILE_PART + image_bytes(), part))
    assert result.status_code == 201, result.text
    assert answer(result)["other_data"] == {"k": "é"}


def test_a_form_field_sent_twice_is_400(client, storage, one_image):
    before = stored_keys(storage)
    origin = b'Content-Disposition: form-data; name="origin"\r\n\r\n'
    result = client.simulate_post(
        "/v1/images", **_form(FILE_PART + image_bytes((5, 5, 5)), origin + b"a", origin + b"b")
    )
    assert result.status_code == 400, result.text
    assert stored_keys(storage) == before


def test_an_upload_form_with_neither_file_nor_url_is_400_as_the_document_says(client, one_image):
    result = client.simulate_post("/v1/images", **multipart({"origin": "cam"}))
    assert result.status_code == 400, result.text
    form = client.simulate_get("/openapi.json").json["paths"]["/v1/images"]["post"]["requestBody"]["content"]
    schema = form["multipart/form-data"]["schema"]
    assert not jsonschema.Draft202012Validator(schema).is_valid({"origin": "cam"})
    assert jsonschema.Draft202012Validator(schema).is_valid({"origin": "cam", "url": "http://example.com/a.jpg"})
    assert not jsonschema.Draft202012Validator(schema).is_valid({"file": "", "url": "http://example.com/a.jpg"})
    assert jsonschema.Draft202012Validator(schema).is_valid({"file": "", "url": ""}), "an empty field is absent"
    with_empty_url = client.simulate_post("/v1/images", **multipart({"url": ""}, image_bytes((7, 7, 7))))
    assert with_empty_url.status_code == 201, with_empty_url.text


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/v1/images", "origin=%FF"),
        ("/v1/images", "origin=caf%E9"),
        ("/v1/images", "status=face_detection%3Adone%ED%A0%80"),
        ("/v1/software", "cursor=%C3"),
        (f"{FD}/jobs", "status=done&x=%80"),
        (f"{FD}/tables/faces", "image_id=%FF%FE"),
        ("/v1/blobs/images/x.jpg", "expires=1&signature=%FF"),
    ],
)
def test_a_query_string_that_is_not_utf8_is_400(client, one_image, path, query):
    result = client.simulate_get(path, query_string=query)
    assert result.status_code == 400, result.text
    assert answer(result)["description"] == "the query string is not UTF-8 text once percent-decoded"


@pytest.mark.parametrize(
    "path", ["/v1/images/\xff", "/v1/software/caf\xe9", f"{FD}/jobs/\xed\xa0\x80", "/v1/blobs/images/\xff.jpg"]
)
def test_a_path_that_is_not_utf8_names_nothing(client, one_image, path):
    # PEP 3333: the server hands the path over percent-decoded, its bytes read as latin-1.
    result = client.simulate_get("/", extras={"PATH_INFO": path})
    assert result.status_code == 404, result.text
    assert "UTF-8" in answer(result)["description"]


def test_a_request_id_that_is_not_sane_text_is_replaced_not_echoed(client, one_image):
    result = client.simulate_get("/v1/images", headers={"X-Request-ID": "caf\xe9\x00"})
    assert result.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{16}", result.headers["X-Request-ID"])


def test_an_empty_status_filter_is_400_as_the_document_says(client, one_image):
    result = client.simulate_get("/v1/images", query_string="status=")
    assert result.status_code == 400, result.text
    parameters = client.simulate_get("/openapi.json").json["paths"]["/v1/images"]["get"]["parameters"]
    [status] = [parameter["schema"] for parameter in parameters if parameter["name"] == "status"]
    assert not jsonschema.Draft202012Validator(status).is_valid("")
    assert jsonschema.Draft202012Validator(status).is_valid("face_detection:done")


# --- cursors -------------------------------------------------------------------------------------

PAGED = {"/v1/images": "images", f"{FD}/jobs": "jobs", f"{FD}/tables/faces": "rows", "/v1/software": "software"}


def documented(pattern: str, text: str) -> bool:
    """Whether ``text`` matches the document's ECMA-262 ``pattern`` (``^...$``), whose ``$`` is the end
    of the text: Python's would also match before a final newline, its fullmatch does not."""
    return re.fullmatch(pattern, text) is not None


def cursor_pattern(client: falcon.testing.TestClient, path: str) -> str:
    template = path.replace("face_detection", "{name}").replace("faces", "{table}")
    parameters = client.simulate_get("/openapi.json").json["paths"][template]["get"]["parameters"]
    [pattern] = [parameter["schema"]["pattern"] for parameter in parameters if parameter["name"] == "cursor"]
    return pattern


@pytest.fixture
def seeded(client, software):
    for name in ("ocr", "plates", "zebra"):
        register(client, name)
    ids = [upload(client, data).json["id"] for data in distinct_images(5)]  # all at the same clock time
    for job in claim(client, max=5):
        rows = {"faces": [{"x": 1, "label": "a"}, {"x": 2, "label": "b"}]}
        client.simulate_put(
            f"{FD}/jobs/{job['image_id']}/result", json={"token": job["token"], "info": 1, "rows": rows}
        )
    return ids


def base64url(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize("path", PAGED)
@pytest.mark.parametrize(
    "cursor",
    [
        base64url([SURROGATE]),  # the example
        base64url([1700000000.0, "abcd"]),  # the cursors of before
        "",
        "1700000000.0~",
        "~abc",
        "1e9~abc",
        "1700000000.0~abc\n",
        "1700000000.0~" + "a" * 33,
        "1" * 310 + "~a",
        "Plates",
        "1" * 19,
        "-1",
        "\uff11\uff12",  # fullwidth digits, which int() would take
    ],
)
def test_a_cursor_the_server_did_not_make_is_400_on_every_paged_route(client, seeded, path, cursor):
    result = client.simulate_get(path, params={"cursor": cursor})
    assert result.status_code == 400, result.text
    assert answer(result)["description"] == "cursor is not valid"
    assert not documented(cursor_pattern(client, path), cursor), "the document refuses it too"


@pytest.mark.parametrize("path", PAGED)
def test_cursors_page_through_every_list_once_and_match_the_documented_pattern(client, seeded, path):
    key = PAGED[path]
    everything = answer(client.simulate_get(path, params={"limit": 1000}))[key]
    seen, cursor = [], None
    while True:
        page = answer(client.simulate_get(path, params={"limit": 2} | ({"cursor": cursor} if cursor else {})))
        seen += page[key]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert documented(cursor_pattern(client, path), cursor), cursor
    assert seen == everything and len(everything) >= 4


@pytest.mark.parametrize("date", [1e-7, 1e16 + 2, 123.456e20, 0.1])
def test_an_upload_date_repr_writes_with_an_exponent_pages_by_its_exact_expansion(client, clock, software, date):
    clock.now = date
    ids = sorted(upload(client, data).json["id"] for data in distinct_images(3))
    first = answer(client.simulate_get("/v1/images", params={"limit": 1}))
    assert re.fullmatch(r"-?[0-9]+(\.[0-9]+)?~.+", first["next_cursor"]), first["next_cursor"]
    assert float(first["next_cursor"].partition("~")[0]) == date
    rest = answer(client.simulate_get("/v1/images", params={"cursor": first["next_cursor"]}))
    assert [image["id"] for image in first["images"] + rest["images"]] == ids
    jobs = answer(client.simulate_get(f"{FD}/jobs", params={"limit": 2}))
    more = answer(client.simulate_get(f"{FD}/jobs", params={"cursor": jobs["next_cursor"]}))
    assert [job["image_id"] for job in jobs["jobs"] + more["jobs"]] == ids


def test_a_cursor_past_the_largest_double_is_a_position_after_everything(client, seeded):
    cursor = "9" * 309 + ".5~zz"
    assert answer(client.simulate_get("/v1/images", params={"cursor": cursor})) == {"images": [], "next_cursor": None}
    newest = answer(client.simulate_get("/v1/images", params={"cursor": cursor, "order": "newest"}))
    assert len(newest["images"]) == len(seeded)
    assert answer(client.simulate_get(f"{FD}/jobs", params={"cursor": "-" + cursor}))["jobs"]


def test_every_string_the_cursor_pattern_admits_is_taken(client, seeded):
    for path, cursor in [
        ("/v1/images", "0~a"),
        ("/v1/images", "-5.25~Z_-.~"),
        ("/v1/images", "1700000000.0~" + "z" * 32),
        (f"{FD}/jobs", "0." + "0" * 1073 + "5~x"),
        (f"{FD}/tables/faces", "0" * 18),
        ("/v1/software", "a"),
    ]:
        assert documented(cursor_pattern(client, path), cursor)
        assert client.simulate_get(path, params={"cursor": cursor}).status_code == 200, (path, cursor)


# --- output --------------------------------------------------------------------------------------


def test_a_value_stored_before_text_was_checked_is_sent_back_repaired(client, one_image):
    """Lone surrogates and infinities that older servers stored: U+FFFD and null, never a 500."""
    Image.update(other_data={"k": SURROGATE, "v": float("inf"), SURROGATE: [float("nan")]}).execute()
    Software.update(origins=[f"cam{SURROGATE}"]).execute()
    image = answer(client.simulate_get(f"/v1/images/{one_image}"))
    assert image["other_data"] == {"k": "\ufffd", "v": None, "\ufffd": [None]}
    assert answer(client.simulate_get("/v1/software"))["software"][0]["origins"] == ["cam\ufffd"]
    [job] = answer(client.simulate_post(f"{FD}/claim", json={}))["jobs"]
    assert job["image"]["other_data"]["k"] == "\ufffd"
    done = client.simulate_put(f"{FD}/jobs/{one_image}/result", json={"token": job["token"], "info": 1})
    assert done.status_code == 200
    jobs = job_model("face_detection")
    jobs.update(info={"score": float("-inf"), "label": f"x{SURROGATE}"}).execute()
    assert answer(client.simulate_get(f"{FD}/jobs/{one_image}"))["info"] == {"score": None, "label": "x\ufffd"}
    assert answer(client.simulate_get(f"{FD}/jobs"))["jobs"][0]["info"]["score"] is None


def test_an_error_that_quotes_what_the_client_sent_is_strict_json(client, one_image):
    result = send(client, "POST", "/v1/software", {"name": "x" * 60 + "é"})
    assert result.status_code == 400
    assert answer(result)["description"]
    unknown = client.simulate_get("/v1/software/caf%C3%A9")
    assert unknown.status_code == 404 and "café" in answer(unknown)["description"]
