"""``where``: images by what the software found. Property-based: random images, results and
extra-table rows, random expressions; the API must return exactly the images a plain Python
evaluation of the same expression selects, on SQLite and on MariaDB. Numbers include fractions,
exponents and integers past 64 bits; expressions also come deep and long, past the limits too,
and none answers a 5xx."""

from __future__ import annotations

import dataclasses
import operator
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heartbeat.query.parse import MAX_DEPTH, MAX_EXPRESSION_CHARS, MAX_TERMS
from helpers import image_bytes, multipart, register

OPERATORS = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
TEXTS = ["a", "b", "Z", "é", "a'b"]
ORIGINS = [None, *TEXTS]
COLUMNS = {"a": "int", "b": "float", "t": "text", "f": "bool"}
ABSENT = object()


@dataclasses.dataclass
class Picture:
    origin: str | None
    priority: int
    width: int
    status: str  # of the "sw" job: pending, done or failed
    info: Any
    rows: list[dict[str, Any]]
    id: str = ""

    @property
    def version(self) -> str | None:
        return "1" if self.status == "done" else None


# Numbers as a literal: small ones the data holds, fractions and exponents around them, integers
# past 64 bits, doubles up to 1e300 (repr writes 1e+20 and 1.5e-07 as exponents).
numbers = st.one_of(
    st.integers(-3, 4),
    st.sampled_from([0.5, -1.5, 2.25, 3.5, -0.0, 1.5e-7, 1e20]),
    st.integers(2**63 - 2, 2**80) | st.integers(-(2**80), -(2**63) + 1),
    st.floats(-1e300, 1e300, allow_nan=False),
)
scalars = st.one_of(numbers, st.sampled_from(TEXTS), st.booleans(), st.none())
infos = st.one_of(
    st.none(),
    st.lists(scalars, max_size=2),
    st.fixed_dictionaries({}, optional={"k": scalars, "n": st.fixed_dictionaries({}, optional={"m": scalars})}),
)
rows = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "a": st.integers(-3, 3) | st.none(),
            "b": st.sampled_from([0.5, 1.0, -2.0]) | st.none(),
            "t": st.sampled_from(TEXTS) | st.none(),
            "f": st.booleans() | st.none(),
        },
    ),
    max_size=3,
)
pictures = st.lists(
    st.builds(
        Picture,
        origin=st.sampled_from(ORIGINS),
        priority=st.integers(-2, 2),
        width=st.integers(1, 4),
        status=st.sampled_from(["pending", "done", "failed"]),
        info=infos,
        rows=rows,
    ),
    min_size=1,
    max_size=6,
)


def literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def term(kind: str) -> st.SearchStrategy[tuple[str, Any]]:
    """A term as text, and a function of a Picture that says whether it holds."""
    ops = st.sampled_from(list(OPERATORS))
    if kind == "image":
        text_field = st.tuples(st.just("origin"), ops, st.sampled_from([*TEXTS, None]))
        number_field = st.tuples(st.sampled_from(["priority", "width"]), ops, numbers)
        return (
            st.one_of(text_field, number_field)
            .filter(_sensible)
            .map(lambda t: (f"{t[0]} {t[1]} {literal(t[2])}", lambda p: _holds(getattr(p, t[0]), t[1], t[2])))
        )
    if kind == "job":
        return (
            st.one_of(
                st.tuples(st.just("status"), ops, st.sampled_from(["done", "pending", "failed", None])),
                st.tuples(st.just("version"), ops, st.sampled_from(["done", "1", "2", None])),
            )
            .filter(_sensible)
            .map(lambda t: (f"sw.{t[0]} {t[1]} {literal(t[2])}", lambda p: _holds(getattr(p, t[0]), t[1], t[2])))
        )
    if kind == "info":
        return (
            st.tuples(st.sampled_from([("k",), ("n", "m")]), ops, scalars)
            .filter(lambda t: _sensible(t))
            .map(
                lambda t: (
                    f"sw.info.{'.'.join(t[0])} {t[1]} {literal(t[2])}",
                    lambda p: _info_holds(p, t[0], t[1], t[2]),
                )
            )
        )
    row_terms = st.tuples(st.sampled_from(list(COLUMNS)), ops, scalars).filter(_column_sensible)
    counted = st.tuples(st.lists(row_terms, max_size=2), ops, st.integers(0, 3) | numbers)
    return counted.map(
        lambda t: (
            "sw.rows.count"
            + (f"({' and '.join(f'{c} {o} {literal(v)}' for c, o, v in t[0])})" if t[0] else "")
            + f" {t[1]} {t[2]}",
            lambda p: OPERATORS[t[1]](
                sum(1 for row in _rows(p) if all(_holds(row.get(c), o, v) for c, o, v in t[0])), t[2]
            ),
        )
    )


def _sensible(t: tuple[Any, str, Any]) -> bool:
    return not ((t[2] is None or isinstance(t[2], bool)) and t[1] not in ("=", "!="))


def _column_sensible(t: tuple[str, str, Any]) -> bool:
    column, _op, value = t
    if not _sensible(t):
        return False
    kind = COLUMNS[column]
    if value is None:
        return True
    if isinstance(value, bool):
        return kind == "bool"
    if isinstance(value, str):
        return kind == "text"
    return kind in ("int", "float")


def _holds(value: Any, op: str, wanted: Any) -> bool:
    if wanted is None:
        return (value is None) == (op == "=")
    return value is not None and OPERATORS[op](value, wanted)


def _info_holds(picture: Picture, keys: tuple[str, ...], op: str, wanted: Any) -> bool:
    value: Any = picture.info if picture.status == "done" else None
    for key in keys:
        value = value.get(key, ABSENT) if isinstance(value, dict) else ABSENT
    if wanted is None:
        return (value is ABSENT or value is None) == (op == "=")
    if isinstance(wanted, bool):
        return isinstance(value, bool) and OPERATORS[op](value, wanted)
    if isinstance(wanted, str):
        return isinstance(value, str) and OPERATORS[op](value, wanted)
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        value = float(value)  # an integer past 64 bits compares as the double nearest it
    return isinstance(value, int | float) and not isinstance(value, bool) and OPERATORS[op](value, wanted)


def _rows(picture: Picture) -> list[dict[str, Any]]:
    return picture.rows if picture.status == "done" else []


terms = st.sampled_from(["image", "job", "info", "count"]).flatmap(term)
expressions = st.recursive(
    terms,
    lambda inner: st.one_of(
        inner.map(lambda t: (f"not ({t[0]})", lambda p, f=t[1]: not f(p))),
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
            lambda t: (
                f"({t[0][0]}) {t[1]} ({t[2][0]})",
                (lambda p, a=t[0][1], b=t[2][1], o=t[1]: (a(p) and b(p)) if o == "and" else (a(p) or b(p))),
            )
        ),
    ),
    max_leaves=4,
)


def store(client, pictures_: list[Picture]) -> None:
    for number, picture in enumerate(pictures_):
        fields = {"priority": str(picture.priority)} | ({"origin": picture.origin} if picture.origin else {})
        form = multipart(fields, image_bytes((number * 40 % 256, 9, 9), size=(picture.width, 3), fmt="PNG"))
        answer = client.simulate_post("/v1/images", body=form["body"], headers=form["headers"])
        assert answer.status_code == 201, answer.text
        picture.id = answer.json["id"]
    jobs = client.simulate_post("/v1/software/sw/claim", json={"max": 100}).json["jobs"]
    by_image = {picture.id: picture for picture in pictures_}
    assert sorted(job["image_id"] for job in jobs) == sorted(by_image), "one job for each picture"
    for job in jobs:
        picture = by_image[job["image_id"]]
        base = f"/v1/software/sw/jobs/{job['image_id']}"
        if picture.status == "done":
            body = {"token": job["token"], "info": picture.info, "rows": {"rows": picture.rows}}
            assert client.simulate_put(f"{base}/result", json=body).status_code == 200
        elif picture.status == "failed":
            body = {"token": job["token"], "error": "no", "retry": False}
            assert client.simulate_post(f"{base}/fail", json=body).status_code == 200
        else:
            assert client.simulate_post(f"{base}/release", json={"token": job["token"]}).status_code == 200


def selected(client, where: str) -> list[str]:
    found, cursor = [], None
    while True:
        params = {"where": where, "limit": 2} | ({"cursor": cursor} if cursor else {})
        answer = client.simulate_get("/v1/images", params=params)
        assert answer.status_code == 200, (where, answer.text)
        found += [image["id"] for image in answer.json["images"]]
        cursor = answer.json["next_cursor"]
        if cursor is None:
            return found


@pytest.mark.fuzz
@pytest.mark.timeout(600)  # 150 datasets: past the suite's 120 s when three passes share 2 cores
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pictures_=pictures, queries=st.lists(expressions, min_size=1, max_size=5))
def test_where_selects_exactly_what_python_selects(client, pictures_, queries):
    if client.simulate_get("/v1/software/sw").status_code == 404:
        register(client, "sw", tables={"rows": COLUMNS})
    for image in client.simulate_get("/v1/images", params={"limit": 1000}).json["images"]:
        assert client.simulate_delete(f"/v1/images/{image['id']}").status_code == 204
    store(client, pictures_)
    in_upload_order = sorted(pictures_, key=lambda picture: picture.id)  # one upload time: ID order
    for text, holds in queries:
        expected = [picture.id for picture in in_upload_order if holds(picture)]
        assert selected(client, text) == expected, text


LIMITS = ("nested deeper than", "more than", "longer than", "is beyond")


def _comparisons(text: str) -> int:
    """How many FIELD OP VALUE terms ``text`` holds (a count with a row expression is not one itself)."""
    return len(re.findall(r"!=|<=|>=|=|<|>", text)) - text.count(".count(")


# Long and deep: up to 5 terms said up to 120 times over, joined by one operator, under up to 24
# `not (`, in up to 40 plain parentheses (no nesting of their own); past the limits or within them.
long_and_deep = st.tuples(
    st.lists(terms, min_size=1, max_size=5),
    st.integers(1, 120),
    st.sampled_from(["and", "or"]),
    st.integers(0, 24),
    st.integers(0, 40),
)


@pytest.mark.fuzz
@pytest.mark.timeout(600)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pictures_=pictures, shape=long_and_deep)
def test_deep_and_long_expressions_answer_what_python_selects_or_400_naming_a_limit(client, pictures_, shape):
    some, times, op, negations, parentheses = shape
    parts = some * times
    inner = f" {op} ".join(f"({text})" for text, _holds in parts)
    text = "not (" * negations + "(" * parentheses + inner + ")" * (parentheses + negations)
    if client.simulate_get("/v1/software/sw").status_code == 404:
        register(client, "sw", tables={"rows": COLUMNS})
    for image in client.simulate_get("/v1/images", params={"limit": 1000}).json["images"]:
        assert client.simulate_delete(f"/v1/images/{image['id']}").status_code == 204
    store(client, pictures_)
    answer = client.simulate_get("/v1/images", params={"where": text, "limit": 1000})
    depth = negations + (len(parts) > 1) + max(3 if ".count(" in part else 0 for part, _holds in parts)
    within = depth <= MAX_DEPTH and _comparisons(text) <= MAX_TERMS and len(text) <= MAX_EXPRESSION_CHARS
    if answer.status_code == 400:
        assert not within, (text, answer.text)  # (within the limits, only a huge number is refused)
        assert any(limit in answer.json["description"] for limit in LIMITS), answer.text
        return
    assert answer.status_code == 200, (text, answer.text)
    combine = all if op == "and" else any
    expected = [
        picture.id
        for picture in sorted(pictures_, key=lambda picture: picture.id)
        if combine(holds(picture) for _text, holds in parts) != (negations % 2 == 1)
    ]
    assert [image["id"] for image in answer.json["images"]] == expected, text


@pytest.mark.parametrize(
    ("where", "column"),
    [
        ("origin = ", 10),
        ("origin == 'a'", 9),
        ("nobody.status = 'done'", 1),
        ("width = 'wide'", 1),
        ("sw.rows.count(nope > 1) > 0", 15),
        ("origin < null", 1),
        ("sw.info.k = 1 and (width > 2", 29),
    ],
)
def test_a_bad_expression_is_400_naming_the_column_of_the_fault(client, where, column):
    register(client, "sw", tables={"rows": COLUMNS})
    answer = client.simulate_get("/v1/images", params={"where": where})
    assert answer.status_code == 400, answer.text
    assert f"column {column}" in answer.json["description"], answer.json["description"]


# The mistakes people make, what each refusal must say (the contract's Queries), on every route that
# takes an expression.
MISTAKES = [
    ("sw.status == 'done'", "column 12: expected `=` (one equals sign)"),
    ('sw.status = "done"', "column 13: text takes single quotes"),
    ("sw.status = done", "column 13: expected a value; text takes single quotes ('done')"),
    ("width > 1 && height > 1", "column 11: `&&` is written `and`"),
    ("width > 1 || height > 1", "column 11: `||` is written `or`"),
    ("!(width > 1)", "column 1: `!` is written `not`"),
    ("origin <> 'a'", "`<>` is written `!=`"),
    ("origin in ('a', 'b')", "column 8: `in (...)` is not in the language: write `x = 'a' or x = 'b'`"),
    ("origin like 'a%'", "`like` is not in the language"),
    ("sw.status = 'finished'", "no job is ever 'finished': a status is one of pending, claimed, done, failed"),
    ("uploaded_date > '2026-12-01'", "uploaded_date is a number (seconds since 1970"),
    ("(width > 1", "ends too early, at column 11: expected `)`"),
    ("width > 1 height", "column 11: expected `)`, `and` or `or`"),
]
ROUTES_WITH_WHERE = {
    "images": lambda client, where: client.simulate_get("/v1/images", params={"where": where}),
    "export": lambda client, where: client.simulate_get("/v1/export", params={"where": where}),
    "requeue": lambda client, where: client.simulate_post(
        "/v1/software/sw/requeue", json={"status": "done", "where": where}
    ),
    "erasures": lambda client, where: client.simulate_post("/v1/erasures", json={"where": where}),
    "retention": lambda client, where: client.simulate_post(
        "/v1/retention", json={"name": "p", "where": where, "max_age_seconds": 60}
    ),
}


@pytest.mark.parametrize("route", ROUTES_WITH_WHERE)
def test_a_refusal_says_where_and_what_was_expected_there(client, route):
    register(client, "sw", tables={"rows": COLUMNS})
    for where, says in MISTAKES:
        answer = ROUTES_WITH_WHERE[route](client, where)
        assert answer.status_code == 400, (where, answer.text)
        assert says in answer.json["description"], (where, answer.json["description"])


def test_requeue_takes_a_where_expression(client):
    register(client, "sw", tables={"rows": COLUMNS})
    for number, origin in enumerate(["a", "b", "a"]):
        form = multipart({"origin": origin}, image_bytes((number * 50, 1, 1)))
        assert client.simulate_post("/v1/images", body=form["body"], headers=form["headers"]).status_code == 201
    for job in client.simulate_post("/v1/software/sw/claim", json={"max": 3}).json["jobs"]:
        body = {"token": job["token"], "info": {"k": 1}}
        assert client.simulate_put(f"/v1/software/sw/jobs/{job['image_id']}/result", json=body).status_code == 200
    answer = client.simulate_post("/v1/software/sw/requeue", json={"status": "done", "where": "origin = 'a'"})
    assert answer.json == {"requeued": 2}
    assert client.simulate_get("/v1/software/sw").json["counts"]["done"] == 1
    bad = client.simulate_post("/v1/software/sw/requeue", json={"status": "done", "where": "origin ="})
    assert bad.status_code == 400 and "column" in bad.json["description"]


def test_result_rows_that_name_different_columns_keep_every_value(client):
    """A result's rows need not name the same columns: each keeps what it names (the first row once
    decided the columns of all, and a later row's other values were lost)."""
    register(client, "sw", tables={"rows": COLUMNS})
    picture = Picture(None, 0, 1, "done", None, [{}, {"a": 1}, {"b": 0.5, "t": "x"}, {"f": True, "a": 2}])
    store(client, [picture])
    rows = client.simulate_get("/v1/software/sw/tables/rows").json["rows"]
    assert [{column: row[column] for column in COLUMNS} for row in rows] == [
        dict.fromkeys(COLUMNS) | row for row in picture.rows
    ]
    assert selected(client, "sw.rows.count(a = 1) = 1 and sw.rows.count(b = null) = 3") == [picture.id]
