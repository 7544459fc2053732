"""``where`` at its edges: no expression, however deep, long or large its numbers, answers a 5xx on
any route that takes one; what the server will not run is a 400 naming the limit, and everything
within the limits runs, with the right answer, on SQLite and MariaDB. Numbers compare exactly as
written (``width < 16.5`` is not ``width < 16``), and a statement stops at HEARTBEAT_QUERY_SECONDS."""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable
from typing import Any

import falcon
import pytest

from heartbeat.query.parse import MAX_DEPTH, MAX_EXPRESSION_CHARS, MAX_TERMS
from helpers import heartbeat, image_bytes, register, upload

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
TABLE = {"x": "int", "y": "float", "z": "time"}
# Three images: their size in pixels, priority, the "sw" result's info and its rows of table "t".
IMAGES = [
    ((1, 2), -2, {"v": 16, "w": 9007199254740993, "q1": 1}, [{"x": 16, "y": 16.5}, {"x": 2**63 - 1, "z": 1e9}]),
    ((16, 3), 0, {"v": 16.5, "w": 0.1, "big": 99999999999999999999}, [{"x": -2, "y": 0.1, "z": -1.5}]),
    ((17, 16), 16, {"v": -1.5, "w": "16"}, [{"y": -1.5}]),
]
NUMBERS = [
    "16",
    "16.5",
    "-1.5",
    "1e1",
    "1.6E1",
    "+16",
    "-0",
    "0.1",
    "2.5e-1",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "99999999999999999999",
    "-99999999999999999999",
    "1e300",
    "-1e300",
    "1700000000.5",
]


def number(text: str) -> int | float:
    """A literal as the contract reads it: an integer exactly, else the nearest double."""
    return int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)


def store(client: falcon.testing.TestClient) -> list[dict[str, Any]]:
    """The three IMAGES, each with a done "sw" job; their records as the API lists them."""
    register(client, "sw", tables={"t": TABLE})
    for number_, ((width, height), priority, _info, _rows) in enumerate(IMAGES):
        data = image_bytes((number_ * 70, 9, 9), size=(width, height), fmt="PNG")
        answer = upload(client, data, origin=f"o{number_}", priority=str(priority))
        assert answer.status_code == 201, answer.text
    records = client.simulate_get("/v1/images", params={"limit": 10}).json["images"]
    by_origin = {record["origin"]: record for record in records}
    for job in client.simulate_post("/v1/software/sw/claim", json={"max": 10}).json["jobs"]:
        _size, _priority, info, rows = IMAGES[int(next(r["origin"] for r in records if r["id"] == job["image_id"])[1:])]
        body = {"token": job["token"], "info": info, "rows": {"t": rows}}
        answer = client.simulate_put(f"/v1/software/sw/jobs/{job['image_id']}/result", json=body)
        assert answer.status_code == 200, answer.text
    return [by_origin[f"o{number_}"] for number_ in range(len(IMAGES))]


def images(client: falcon.testing.TestClient, where: str) -> falcon.testing.Result:
    return client.simulate_get("/v1/images", params={"where": where, "limit": 10})


def selected(client: falcon.testing.TestClient, where: str) -> list[str]:
    answer = images(client, where)
    assert answer.status_code == 200, (where, answer.text)
    return [image["id"] for image in answer.json["images"]]


# -- numbers ---------------------------------------------------------------------------------------


def test_numbers_compare_exactly_as_written_on_every_numeric_field(client):
    """``width < 16.5`` holds for 16 (it ran as ``width < 16``); integers past 64 bits, exponents,
    fractions and negative numbers compare as Python compares them, on each image field, an info
    value (one past 64 bits as the double nearest it) and each number column of an extra table."""
    records = store(client)
    fields: dict[str, Callable[[int], list[Any]]] = {
        name: (lambda index, name=name: [records[index][name]])
        for name in ("width", "height", "size", "priority", "uploaded_date")
    }
    fields["sw.info.v"] = lambda index: [IMAGES[index][2]["v"]]
    fields["sw.info.w"] = lambda index: [w for w in [IMAGES[index][2]["w"]] if not isinstance(w, str)]
    fields["sw.info.big"] = lambda index: [float(b) for b in [IMAGES[index][2].get("big")] if b is not None]
    for column in TABLE:
        fields[f"sw.t.count({column} OP N) > 0"] = lambda index, column=column: [
            row[column] for row in IMAGES[index][3] if row.get(column) is not None
        ]
    wrong = []
    for field, values in fields.items():
        for op, compare in OPERATORS.items():
            for text in NUMBERS:
                where = field.replace("OP", op).replace("N", text) if "OP" in field else f"{field} {op} {text}"
                expected = [
                    record["id"]
                    for index, record in enumerate(records)
                    if any(compare(value, number(text)) for value in values(index))
                ]
                if sorted(selected(client, where)) != sorted(expected):
                    wrong.append(where)
    assert wrong == []


def test_width_below_a_fraction_counts_the_width_below_it(client):
    """The issue's example: ``width < 16.5`` selects the image 16 pixels wide."""
    records = store(client)
    assert sorted(selected(client, "width < 16.5")) == sorted(records[i]["id"] for i in (0, 1))
    assert selected(client, "width = 16.5") == []
    assert sorted(selected(client, "width != 16.5")) == sorted(record["id"] for record in records)


@pytest.mark.parametrize("literal", ["1e400", "-1e400", "1" + "0" * 400 + ".5", "9" * 5000])
def test_a_number_past_every_double_is_400(client, literal):
    store(client)
    answer = images(client, f"size < {literal}")
    assert answer.status_code == 400, answer.text
    assert "is beyond 1.79769e+308" in answer.json["description"]


# -- limits, on every route ------------------------------------------------------------------------


def over(op: str, terms: list[str]) -> str:
    return f" {op} ".join(terms)


def nested(depth: int, inner: str, never: str = "origin = 'none'", always: str = "priority > -100") -> str:
    """``inner`` under ``depth`` levels of ``or`` and ``and`` (each pair two levels)."""
    for _ in range(depth // 2):
        inner = f"({never} or ({always} and {inner}))"
    return inner


# expression, the images (by index) it selects; each runs within the limits
WITHIN = {
    "size = 99999999999999999999": [],
    "size < 99999999999999999999": [0, 1, 2],
    "size > -99999999999999999999 and priority < 9223372036854775808": [0, 1, 2],
    "not " * MAX_DEPTH + "origin = 'o1'": [1],
    "not " * (MAX_DEPTH - 1) + "origin = 'o1'": [0, 2],
    nested(MAX_DEPTH, "origin = 'o1'"): [1],
    nested(MAX_DEPTH, "sw.info.v = 16", "sw.info.v = 1234", "sw.info.v > -100"): [0],
    "sw.t.count(" + nested(MAX_DEPTH - 2, "x = -2", "x = 12345", "x > -100") + ") > 0": [1],
    nested(MAX_DEPTH - 10, "sw.t.count(" + nested(8, "x = -2", "x = 1234", "y > -100") + ") > 0", "sw.info.v = 1234"): [
        1
    ],
    over("or", [f"origin = 'o{n + 2}'" for n in range(MAX_TERMS)]): [2],
    over("or", [f"sw.info.q{n} = 1" for n in range(1, MAX_TERMS + 1)]): [0],
    over("or", [f"sw.t.count(x = {n}) > 0" for n in range(MAX_TERMS - 1, -1, -1)]): [0],
    over("and", [f"sw.t.count(x != {n}) >= 1" for n in range(MAX_TERMS)]): [0, 1],
    over("or", [f"sw.t.count > {n}" for n in range(2, MAX_TERMS + 2)]): [],
    over("or", ["sw.status = 'failed'" for _ in range(MAX_TERMS - 1)] + ["sw.info.w = 0.1"]): [1],
    "sw.t.count(" + over("or", [f"y = {n}.5" for n in range(MAX_TERMS)]) + ") >= 1": [0],
    nested(MAX_DEPTH - 2, "sw.t.count(" + over("or", [f"y = {n}.5" for n in range(MAX_TERMS - 16)]) + ") >= 1"): [0],
}
# expression, a text the refusal says (the limit), the column it names
BEYOND = {
    "not " * 600 + "origin = 'a'": (f"nested deeper than {MAX_DEPTH}", 4 * MAX_DEPTH + 1),
    nested(MAX_DEPTH + 2, "origin = 'o1'"): (f"nested deeper than {MAX_DEPTH}", None),
    over("or", [f"origin = 'o{n}'" for n in range(MAX_TERMS + 1)]): (f"more than {MAX_TERMS} terms", None),
    "sw.t.count(" + over("or", ["x = 1"] * (MAX_TERMS + 1)) + ") > 0": (f"more than {MAX_TERMS} terms", None),
    "origin = '" + "a" * MAX_EXPRESSION_CHARS + "'": (f"longer than {MAX_EXPRESSION_CHARS} characters", None),
    "(" * 3000 + "origin = 'a'" + ")" * 2999: ("ends too early", None),
}


def listed(client: falcon.testing.TestClient, where: str) -> tuple[int, Any]:
    answer = images(client, where)
    return answer.status_code, [image["id"] for image in answer.json["images"]] if answer.status_code == 200 else answer


def exported(client: falcon.testing.TestClient, where: str) -> tuple[int, Any]:
    answer = client.simulate_get("/v1/export", params={"where": where, "format": "jsonl"})
    if answer.status_code != 200:
        return answer.status_code, answer
    return 200, [json.loads(line)["id"] for line in answer.text.splitlines()]


def requeued(client: falcon.testing.TestClient, where: str) -> tuple[int, Any]:
    answer = client.simulate_post("/v1/software/sw/requeue", json={"status": "done", "where": where})
    if answer.status_code != 200:
        return answer.status_code, answer
    pending = client.simulate_get("/v1/images", params={"status": "sw:pending", "limit": 10}).json["images"]
    assert answer.json["requeued"] == len(pending)
    return 200, [image["id"] for image in pending]


ROUTES = {"images": listed, "export": exported, "requeue": requeued}


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("where", list(WITHIN), ids=lambda where: where[:40])
def test_every_expression_within_the_limits_runs_with_the_right_answer(client, route, where):
    """On SQLite these answered 503 "unreachable" (parser stack overflow, the expression depth) or
    500 (an integer past 64 bits) before."""
    records = store(client)
    status, found = ROUTES[route](client, where)
    assert status == 200, found.text
    assert sorted(found) == sorted(records[index]["id"] for index in WITHIN[where])


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("where", list(BEYOND), ids=lambda where: where[:40])
def test_an_expression_past_a_limit_is_400_naming_it(client, route, where):
    """``not`` 600 times answered 500 (Python's recursion limit) on every engine."""
    store(client)
    status, answer = ROUTES[route](client, where)
    assert status == 400, answer
    said, column = BEYOND[where]
    description = answer.json["description"]
    assert said in description and "column" in description, description
    if column is not None:
        assert f"column {column}:" in description, description
    assert client.simulate_get("/v1/software/sw").json["counts"]["done"] == len(IMAGES)  # nothing requeued


def test_heartbeat_export_refuses_a_deep_expression_in_one_line(client, db_flags):
    """It printed a traceback (RecursionError)."""
    store(client)
    done = heartbeat("export", "--where", "not " * 600 + "origin = 'a'", *db_flags)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: where: at column") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr


# -- database faults and time limits ---------------------------------------------------------------


def test_a_statement_the_database_refuses_is_500_not_503_unreachable(app, client, database):
    """A syntax error or an expression too complex is no outage: a retry would fail the same way, and
    503 with Retry-After made the SDK retry for ever."""

    class Broken:
        def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
            database.execute("SELECT (" * 300 + "1" + ")" * 300 if not database.features.mysql else "SELEC 1")

    app.add_route("/broken", Broken())
    answer = client.simulate_get("/broken")
    assert answer.status_code == 500, answer.text
    assert "Retry-After" not in answer.headers
    assert client.simulate_get("/v1/images").status_code == 200


def slow_where(terms: int = 120) -> str:
    """An expression that reads every row of the image's big table once per term, finding none."""
    return over("or", [f"sw.t.count(x = -{n} and y > 0) > 0" for n in range(1, terms + 1)])


@pytest.fixture
def one_big_table(client):
    """One image whose "sw" result has 10,000 rows (the most one result has) in table "t"."""
    register(client, "sw", tables={"t": TABLE})
    assert upload(client, image_bytes(), origin="big").status_code == 201
    job = client.simulate_post("/v1/software/sw/claim", json={"max": 1}).json["jobs"][0]
    rows = [{"x": n, "y": float(n)} for n in range(10_000)]
    body = {"token": job["token"], "info": {}, "rows": {"t": rows}}
    assert client.simulate_put(f"/v1/software/sw/jobs/{job['image_id']}/result", json=body).status_code == 200
    return job["image_id"]


def test_a_query_stops_at_heartbeat_query_seconds_with_503_and_retry_after(
    client, database, one_big_table, monkeypatch
):
    monkeypatch.setattr(database, "query_seconds", 0.01)
    for answer in (
        images(client, slow_where()),
        client.simulate_post("/v1/software/sw/requeue", json={"status": "done", "where": slow_where()}),
    ):
        assert answer.status_code == 503, answer.text
        assert answer.headers.get("Retry-After"), answer.headers
        assert "HEARTBEAT_QUERY_SECONDS" in answer.json["description"]
    # the connection goes on serving, and the requeue changed nothing
    assert selected(client, "origin = 'big'") == [one_big_table]
    assert client.simulate_get("/v1/software/sw").json["counts"]["done"] == 1
    monkeypatch.setattr(database, "query_seconds", 60)
    assert selected(client, slow_where()) == []  # the same query, given the time
    assert client.simulate_post("/v1/software/sw/claim", json={"max": 1}).status_code == 200


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "coco"])
def test_an_export_past_heartbeat_query_seconds_is_a_503_not_a_body_cut_short(
    client, database, one_big_table, monkeypatch, fmt
):
    boxes = {"x": "float", "y": "float", "w": "float", "h": "float"}
    register(client, "detector", tables={"boxes": boxes})
    params = {"format": fmt, "where": slow_where()} | ({"table": "detector.boxes"} if fmt == "coco" else {})
    monkeypatch.setattr(database, "query_seconds", 0.01)
    answer = client.simulate_get("/v1/export", params=params)
    assert answer.status_code == 503, answer.text
    assert answer.headers.get("Retry-After"), answer.headers
    assert "HEARTBEAT_QUERY_SECONDS" in answer.json["description"]
    assert not database.in_transaction(), "its snapshot ended with it"
    monkeypatch.setattr(database, "query_seconds", 60)
    assert client.simulate_get("/v1/export", params=params).status_code == 200


# -- what QA found past the examples -------------------------------------------------------


def test_info_doubles_written_with_an_exponent_compare_as_their_value_on_every_engine(client):
    """JSON writers put small and large doubles as 1e-05 or 1e+16; MariaDB types those INTEGER."""
    register(client, "sw")
    scores = [1e-05, 5e-06, 1e16, 3e17, 7e-10, 1.5, 1]
    ids = {}
    for index, score in enumerate(scores):
        answer = upload(client, image_bytes((index * 30, 7, 7)), origin=f"s{index}")
        ids[score] = answer.json["id"]
    for job in client.simulate_post("/v1/software/sw/claim", json={"max": 10}).json["jobs"]:
        [score] = [score for score, image_id in ids.items() if image_id == job["image_id"]]
        body = {"token": job["token"], "info": {"score": score}}
        assert client.simulate_put(f"/v1/software/sw/jobs/{job['image_id']}/result", json=body).status_code == 200
    for where, truth in (
        ("sw.info.score = 1", lambda v: v == 1),
        ("sw.info.score > 0.5", lambda v: v > 0.5),
        ("sw.info.score = 1e-05", lambda v: v == 1e-05),
        ("sw.info.score < 1e-05", lambda v: v < 1e-05),
        ("sw.info.score >= 1e16", lambda v: v >= 1e16),
    ):
        assert sorted(selected(client, where)) == sorted(ids[v] for v in scores if truth(v)), where


def test_number_literals_of_any_length_answer_no_5xx(client):
    store(client)
    zeros = "0" * 5000
    assert selected(client, f"width = {zeros}16") == selected(client, "width = 16")
    assert selected(client, f"width > -{zeros}1") == selected(client, "width > -1")
    for where in (f"sw.t.count >= {zeros}", f"sw.t.count(x = {zeros}1) >= 0"):
        assert images(client, where).status_code == 200, where
    underflow = images(client, "width > 1e-400")
    assert underflow.status_code == 400 and "nearer to 0" in underflow.json["description"]
    assert selected(client, "width > 0e-400") == selected(client, "width > 0")


@pytest.mark.parametrize(
    ("where", "said"),
    [
        ("sw.status == 'done'", "expected `=`"),
        ('sw.status = "done"', "text takes single quotes"),
        ('origin = "o1"', "text takes single quotes"),
        ("sw.status = 'dne'", "no job is ever 'dne'"),
        ("sw.status = 'DONE'", "no job is ever 'DONE'"),
        ("sw.status != 'outdated'", "no job is ever 'outdated'"),
    ],
)
def test_a_refusal_says_what_was_expected_and_a_status_no_job_can_have_is_refused(client, where, said):
    store(client)
    for answer in (
        images(client, where),
        client.simulate_get("/v1/export", params={"where": where}),
        client.simulate_post("/v1/software/sw/requeue", json={"status": "done", "where": where}),
    ):
        assert answer.status_code == 400, answer.text
        assert said in answer.json["description"], answer.json
    assert client.simulate_get("/v1/software/sw").json["counts"]["done"] == len(IMAGES), "nothing requeued"
