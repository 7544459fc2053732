"""A fuzzer of our own, beside schemathesis: hostile text and numbers in every field of every route.

Hypothesis draws arbitrary Unicode (lone surrogates, NUL, 4-byte characters, very long text), numbers
at and past the edges of a double (``1e308``, ``5e-324``, ``1e999`` as raw JSON text, ``2**64``,
``-0.0``), deep and wide JSON, and bytes that are not UTF-8, and sends them to every JSON field, query
parameter, path parameter, form field and read header. The routes and fields come from the OpenAPI
document, so a new route or field is fuzzed without a word here.

After each request: never a 5xx, and a 4xx is a JSON error body. After each example: every list,
read and claim still answers 200, every answer parsed by a strict reader (no NaN, no Infinity, no
lone surrogate). Examples are derandomized, so a run is the same on every machine.
"""

from __future__ import annotations

import itertools
import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, quote_from_bytes, urlsplit

import falcon.testing
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heartbeat.api import schemas
from heartbeat.api.openapi import openapi_document
from heartbeat.api.routes import ROUTES
from helpers import claim, distinct_images, image_bytes, register, upload
from strict_json import storable, strict_json

pytestmark = pytest.mark.fuzz

SOFTWARE = "face_detection"
LEASE_SECONDS = 1
FUZZ = settings(
    max_examples=60,
    derandomize=True,  # the same examples on every machine: CI is reproducible
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
DOCUMENT = openapi_document(ROUTES)
PLACEHOLDER = "\x01fuzz\x01"  # stands where the drawn fragment goes; no generated body holds it

# --- what is drawn --------------------------------------------------------------------------------

# Text: any code point, lone surrogates (category Cs) and NUL included; 4-byte characters; long text.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
long_text = st.sampled_from([256, 4097, 70_000]).flatmap(
    lambda length: st.sampled_from(["x", "\U0001f600", "é", "\x00", "\ud800"]).map(lambda char: char * length)
)
hostile_text = st.one_of(any_text, long_text, st.sampled_from(["", "\ud800", "\udfff\ud800", "a\x00b", "\U0010ffff"]))
NUMBERS = ["1e308", "-1e308", "5e-324", "1e999", "-1e999", "1e-400", str(2**64), "-0.0", "96673.0", "1" + "0" * 400]
number_text = st.one_of(
    st.sampled_from(NUMBERS),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers().map(str),
)


def _json_text(value: str) -> bytes:
    return json.dumps(value).encode()  # ASCII escapes: a lone surrogate travels as "\ud800"


string_fragment = hostile_text.map(_json_text)
scalar_fragment = st.one_of(
    string_fragment,
    number_text.map(str.encode),
    st.sampled_from([b"true", b"false", b"null"]),
    st.sampled_from([b'"\xff"', b'"\xed\xa0\x80"', b"NaN", b"-Infinity"]),  # not JSON at all
)
fragment = st.recursive(
    scalar_fragment,
    lambda children: st.one_of(
        st.lists(children, max_size=5).map(lambda items: b"[" + b",".join(items) + b"]"),
        st.lists(st.tuples(string_fragment, children), max_size=5).map(
            lambda pairs: b"{" + b",".join(key + b":" + value for key, value in pairs) + b"}"
        ),
    ),
    max_leaves=12,
)
deep = st.sampled_from([63, 64, 65, 200, 100_000]).flatmap(
    lambda depth: st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]).map(lambda ends: ends[0] * depth + ends[1] * depth)
)
wide = st.sampled_from([1_000, 20_000]).map(
    lambda width: b"{" + b",".join(b'"k%d":%d' % (i, i) for i in range(width)) + b"}"
)
any_fragment = st.one_of(fragment, fragment, fragment, deep, wide)
raw_bytes = st.one_of(st.binary(max_size=40), hostile_text.map(lambda text: text.encode("utf-8", "surrogatepass")))

# --- the routes, from the document --------------------------------------------------------------

KEY = object()  # in a field path: an object's key (of additionalProperties) rather than a value


def json_operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, path template, body schema) of every operation that takes a JSON body."""
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            body = operation.get("requestBody", {}) if isinstance(operation, dict) else {}
            schema = body.get("content", {}).get("application/json", {}).get("schema")
            if schema is not None:
                # The batch's items are each judged as a single result is: fuzz them as one.
                if schema is schemas.BATCH_RESULTS:
                    schema = schemas.BATCH_RESULTS | {
                        "properties": {"results": {"type": "array", "items": schemas.BATCH_RESULT}}
                    }
                yield method.upper(), path, schema


def field_paths(schema: dict[str, Any], prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a body of ``schema`` where a value (or an object's key) can be put."""
    yield prefix
    for name, child in schema.get("properties", {}).items():
        yield from field_paths(child, (*prefix, name))
    extra = schema.get("additionalProperties", {} if _free_form(schema) else None)
    if isinstance(extra, dict):
        yield (*prefix, KEY)
        yield from field_paths(extra, (*prefix, "*"))
    if isinstance(schema.get("items"), dict):
        yield from field_paths(schema["items"], (*prefix, 0))


def _free_form(schema: dict[str, Any]) -> bool:
    """An object of any keys (``other_data``, a row): its keys and values are fuzzed too."""
    kinds = schema.get("type", [])
    return "object" in ([kinds] if isinstance(kinds, str) else kinds) and not schema.get("properties")


JSON_TARGETS = [
    (method, path, schema, field) for method, path, schema in json_operations() for field in field_paths(schema)
]
QUERY_TARGETS = [
    (method.upper(), path, parameter["name"])
    for path, item in DOCUMENT["paths"].items()
    for method, operation in item.items()
    if method in ("get", "post", "put", "delete", "patch")
    for parameter in operation.get("parameters", [])
    if parameter["in"] == "query"
]
PATH_TARGETS = [
    (method.upper(), path, parameter["name"])
    for path, item in DOCUMENT["paths"].items()
    for parameter in item.get("parameters", [])
    if parameter["in"] == "path"
    for method in item
    if method in ("get", "post", "put", "delete", "patch")
]
FORM_FIELDS = [*schemas.UPLOAD_FORM_FIELDS["properties"], "filename", "name"]


# --- a world to send them into ---------------------------------------------------------------


class World:
    """The app behind the test client with a software, images, and a claimed job per example, so
    that a request reaches past the 404s and 409s to where values are stored."""

    def __init__(self, client: falcon.testing.TestClient, clock: Any, log: pytest.LogCaptureFixture):
        self.client = client
        self.clock = clock
        self.log = log
        self._pictures = (
            image_bytes(((i * 37) % 256, (i * 91) % 256, (i // 256) % 256)) for i in itertools.count(1000)
        )
        self._names = (f"fuzz_{i}" for i in itertools.count())
        register(
            client,
            SOFTWARE,
            lease_seconds=LEASE_SECONDS,
            max_attempts=1000,
            tables={"faces": {"x": "int", "label": "text"}},
        )
        for data in distinct_images(3):
            assert upload(client, data).status_code == 201

    def new_job(self) -> dict[str, Any]:
        """A job of ours, claimed now: its image ID and token (a new image when none is left)."""
        self.clock.advance(LEASE_SECONDS + 1)  # every lease of the examples before has run out
        jobs = claim(self.client, SOFTWARE)
        if not jobs:
            assert upload(self.client, next(self._pictures)).status_code == 201
            jobs = claim(self.client, SOFTWARE)
        return jobs[0]

    def path(self, template: str, job: dict[str, Any], **given: str) -> str:
        values = {"name": SOFTWARE, "image_id": job["image_id"], "table": "faces", "key": "images/x.jpg"}
        if "{upload_id}" in template and "upload_id" not in given:
            values["upload_id"] = self.client.simulate_post("/v1/uploads", json={}).json["upload_id"]
        if "{webhook_id}" in template and "webhook_id" not in given:  # a public address: no lookup, no send
            hook = self.client.simulate_post("/v1/webhooks", json={"url": "http://93.184.216.34/hook"})
            values["webhook_id"] = hook.json["id"]
        return template.format(**(values | given))

    def valid(self, name: str, schema: dict[str, Any], job: dict[str, Any]) -> Any:
        """A value ``schema`` takes, named ``name`` in its body, that reaches as far as can be."""
        known = {"token": job["token"], "image_id": job["image_id"], "name": next(self._names)}
        known |= {"url": "http://127.0.0.1:9/x.jpg", "status": "done", "info": {"fuzz": True}, "error": "e"}
        if name in known:
            return known[name]
        if "enum" in schema:
            return schema["enum"][0]
        kind = schema.get("type")
        kind = kind[0] if isinstance(kind, list) else kind
        if kind == "object":
            body = {
                key: self.valid(key, child, job)
                for key, child in schema.get("properties", {}).items()
                if key in schema.get("required", [])
            }
            if schema.get("minProperties") and isinstance(schema.get("additionalProperties"), dict):
                body["c"] = self.valid("c", schema["additionalProperties"], job)
            return body
        return {"integer": schema.get("minimum", 1), "number": 1, "boolean": True, "array": [], "string": "x"}.get(
            kind, {}
        )

    def reads_still_answer(self) -> None:
        """Every list, read and claim: 200 and strict JSON, over everything stored so far."""
        client = self.client
        self.clock.advance(LEASE_SECONDS + 1)
        read(client.simulate_get("/v1/images", params={"limit": 1000}))
        newest = {"limit": 5, "order": "newest", "include": "jobs,thumbnail"}  # a query per job: the newest only
        for image in read(client.simulate_get("/v1/images", params=newest))["images"][:2]:
            read(client.simulate_get(f"/v1/images/{image['id']}"))
        listed = read(client.simulate_get("/v1/software", params={"limit": 1000}))["software"]
        for name in {SOFTWARE, listed[-1]["name"]}:
            read(client.simulate_get(f"/v1/software/{name}"))
            read(client.simulate_get(f"/v1/software/{name}/jobs", params={"limit": 1000}))
        read(client.simulate_get(f"/v1/software/{SOFTWARE}/tables/faces", params={"limit": 1000}))
        read(client.simulate_post(f"/v1/software/{SOFTWARE}/claim", json={"max": 100}))
        repaired = [record for record in self.log.records if record.name == "heartbeat.jsontext"]
        assert not repaired, "a value that cannot be sent back as it is was stored"


def utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def read(result: falcon.testing.Result) -> Any:
    assert result.status_code == 200, result.text
    return strict_json(result.content)


def judge(result: falcon.testing.Result | requests.Response, what: str) -> None:
    """Never a 5xx; a 4xx is a strict JSON error body; any JSON answer is strict."""
    status = result.status_code
    assert status < 500, f"{what}: {status} {result.text[:500]}"
    if status >= 400 and status != 405:
        body = strict_json(result.content)
        assert isinstance(body, dict) and body.get("title"), f"{what}: {status} {result.text[:500]}"
    elif "ndjson" in (result.headers.get("content-type") or ""):  # JSON lines: each line strict
        for line in result.content.splitlines():
            strict_json(line)
    elif "json" in (result.headers.get("content-type") or ""):
        strict_json(result.content)


@pytest.fixture
def world(client, clock, caplog) -> World:
    return World(client, clock, caplog)


def _child(schema: dict[str, Any], step: Any) -> dict[str, Any]:
    """The schema of ``step`` (a property, any key ``*``, an item index) inside ``schema``."""
    if isinstance(step, int):
        child = schema.get("items", {})
    else:
        child = schema.get("properties", {}).get(step, schema.get("additionalProperties", {}))
    return child if isinstance(child, dict) else {}


def _put(body: Any, field: tuple[Any, ...], value: Any) -> Any:
    """``body`` with ``value`` at ``field`` (made where it is missing)."""
    if not field:
        return value
    head, *rest = field
    if isinstance(head, int):
        items = list(body) if isinstance(body, list) else []
        items[:1] = [_put(items[0] if items else None, tuple(rest), value)]
        return items
    container = dict(body) if isinstance(body, dict) else {}
    container[head] = _put(container.get(head), tuple(rest), value)
    return container


def _filled(world: World, schema: dict[str, Any], field: tuple[Any, ...], job: dict[str, Any]) -> Any:
    """A valid body, with valid values on the way to ``field`` and a placeholder at it (for ``KEY``,
    a placeholder key holding a valid value)."""
    named = tuple(_key_name(field[:i]) if step == "*" else step for i, step in enumerate(field))
    body = world.valid("", schema, job)
    node, walked = schema, ()
    for original, step in zip(field, named, strict=True):
        if original is KEY:
            return _put(body, (*walked, PLACEHOLDER), world.valid("", _child(node, "*"), job))
        node, walked = _child(node, original), (*walked, step)
        present = _get(body, walked)
        if present is None:
            body = _put(body, walked, world.valid(str(step), node, job))
    return _put(body, walked, PLACEHOLDER)


def _key_name(parents: tuple[Any, ...]) -> str:
    """The key that stands for ``*`` (any key) under ``parents``: one the world knows, so that the
    value goes where it is stored (the ``faces`` table and its ``label`` text column), else any."""
    if parents[-1:] == ("rows",):
        return "faces"
    if parents[-1:] == ("tables",):
        return "fuzz_table"
    if len(parents) >= 3 and parents[-3] == "rows":
        return "label"
    return "k"


def _get(body: Any, field: tuple[Any, ...]) -> Any:
    for step in field:
        if isinstance(step, int):
            body = body[step] if isinstance(body, list) and len(body) > step else None
        else:
            body = body.get(step) if isinstance(body, dict) else None
    return body


# --- the fuzzers ---------------------------------------------------------------------------------


@settings(FUZZ, max_examples=200)
@given(target=st.sampled_from(JSON_TARGETS), value=any_fragment, key=hostile_text)
def test_hostile_json_in_any_field_of_any_body_never_breaks_a_read(world, target, value, key):
    method, template, schema, field = target
    job = world.new_job()
    text = json.dumps(_filled(world, schema, field, job)).encode()
    if field and field[-1] is KEY:
        text = text.replace(_json_text(PLACEHOLDER), _json_text(key))
    elif field and field[-1] == "url":  # any text, but never a host to look up: no real fetch
        url = key if "://" not in key else "http://127.0.0.1:9/" + key
        text = text.replace(_json_text(PLACEHOLDER), _json_text(url))
    else:
        text = text.replace(_json_text(PLACEHOLDER), value)
    path = world.path(template, job)
    result = world.client.simulate_request(method, path, body=text, headers={"Content-Type": "application/json"})
    what = f"{method} {path} {field}: {text[:300]!r}"
    judge(result, what)
    if not storable(text):
        if field[:2] == ("results", 0) and result.status_code == 200:
            assert result.json["results"][0]["status"] == "invalid", what  # a batch judges each item alone
        else:
            assert result.status_code in (400, 413), what
    world.reads_still_answer()


@settings(FUZZ, max_examples=100)
@given(target=st.sampled_from(QUERY_TARGETS), value=raw_bytes)
def test_hostile_bytes_in_any_query_parameter_never_break_a_read(world, target, value):
    method, template, name = target
    job = world.new_job()
    path = world.path(template, job)
    query_string = f"{quote(name)}={quote_from_bytes(value)}"
    if template == "/v1/events/stream" and name != "max_seconds":
        query_string += "&max_seconds=0.05"  # a stream lasts 300 s unless told otherwise
    result = world.client.simulate_request(method, path, query_string=query_string)
    judge(result, f"{method} {path}?{name}={value!r}")
    if not utf8(value):
        assert result.status_code == 400, f"{method} {path}?{name}={value!r}: {result.status_code}"
    world.reads_still_answer()


@settings(FUZZ, max_examples=50)
@given(target=st.sampled_from(PATH_TARGETS), value=raw_bytes)
def test_hostile_bytes_in_any_path_parameter_never_break_a_read(world, target, value):
    method, template, name = target
    job = world.new_job()
    # PEP 3333: the server hands the path over percent-decoded, its bytes read as latin-1.
    raw = world.path(template, job, **{name: "\x00PARAM\x00"}).replace("\x00PARAM\x00", value.decode("latin-1"))
    body = (
        {"body": b"{}", "headers": {"Content-Type": "application/json"}} if method in ("POST", "PUT", "PATCH") else {}
    )
    result = world.client.simulate_request(method, "/", extras={"PATH_INFO": raw}, **body)
    judge(result, f"{method} {raw!r}")
    if not utf8(value):
        assert result.status_code == 404, f"{method} {raw!r}: {result.status_code}"
    world.reads_still_answer()


@settings(FUZZ, max_examples=100)
@given(
    field=st.sampled_from(FORM_FIELDS),
    value=raw_bytes,
    charset=st.sampled_from([None, "utf-8", "latin-1", "utf-7", "utf-16", "unicode_escape", "hex", "nonesuch"]),
    with_file=st.booleans(),
)
def test_hostile_bytes_in_any_form_field_never_break_a_read(world, field, value, charset, with_file):
    picture = next(world._pictures)
    if field in ("filename", "name"):  # within a header's quotes
        value = value.replace(b'"', b"").replace(b"\r", b"").replace(b"\n", b"")
    parts = []
    if field == "filename":
        parts.append(b'Content-Disposition: form-data; name="file"; filename="' + value + b'"\r\n\r\n' + picture)
    else:
        if with_file:
            parts.append(b'Content-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n' + picture)
        name = value if field == "name" else field.encode()
        content_type = b"" if charset is None else b"Content-Type: text/plain; charset=" + charset.encode() + b"\r\n"
        parts.append(b'Content-Disposition: form-data; name="' + name + b'"\r\n' + content_type + b"\r\n" + value)
    body = b"".join(b"--fuzz\r\n" + part + b"\r\n" for part in parts) + b"--fuzz--\r\n"
    result = world.client.simulate_post(
        "/v1/images", body=body, headers={"Content-Type": "multipart/form-data; boundary=fuzz"}
    )
    judge(result, f"form {field}={value!r} charset={charset}")
    if not utf8(value) and (field in ("filename", "name") or charset in (None, "utf-8")):
        assert result.status_code == 400, f"form {field}={value!r} charset={charset}: {result.status_code}"
    world.reads_still_answer()


@settings(FUZZ, max_examples=50)
@given(
    header=st.sampled_from(["X-Request-ID", "Authorization", "Content-Type"]),
    value=raw_bytes,
    route=st.sampled_from([("GET", "/v1/images"), ("POST", f"/v1/software/{SOFTWARE}/claim"), ("POST", "/v1/images")]),
)
def test_hostile_bytes_in_a_header_the_server_reads_never_break_a_read(world, header, value, route):
    method, path = route
    text = value.decode("latin-1").replace("\r", "").replace("\n", "")  # PEP 3333: header bytes read as latin-1
    result = world.client.simulate_request(
        method, path, headers={header: text}, body=b"{}" if method == "POST" else None
    )
    judge(result, f"{method} {path} {header}: {value!r}")
    world.reads_still_answer()


# --- a few against a real server --------------------------------------------------------------


@settings(FUZZ, max_examples=12)
@given(value=any_fragment, where=st.sampled_from(["other_data", "info", "origins"]))
def test_a_real_server_takes_hostile_json_without_a_5xx(served, value, where):
    url, token = served["url"], served["job"]
    if where == "other_data":
        text = b'{"url": "http://127.0.0.1:9/x.jpg", "other_data": {"v": ' + value + b"}}"
        response = requests.post(
            f"{url}/v1/images", data=text, headers={"Content-Type": "application/json"}, timeout=30
        )
    elif where == "info":
        text = b'{"token": ' + _json_text(token["token"]) + b', "info": ' + value + b"}"
        response = requests.put(
            f"{url}/v1/software/{SOFTWARE}/jobs/{token['image_id']}/result",
            data=text,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
    else:
        text = b'{"name": "fuzzed", "origins": [' + value + b"]}"
        response = requests.post(
            f"{url}/v1/software", data=text, headers={"Content-Type": "application/json"}, timeout=30
        )
    judge(response, f"{where}: {value[:200]!r}")
    for path in ("/v1/images", "/v1/software", f"/v1/software/{SOFTWARE}/jobs"):
        listed = requests.get(url + path, timeout=30)
        assert listed.status_code == 200, listed.text
        strict_json(listed.content)


@pytest.fixture
def served(start_server) -> dict[str, Any]:
    """A real ``heartbeat serve`` with a software and one claimed job."""
    server = start_server()
    requests.post(f"{server.url}/v1/software", json={"name": SOFTWARE}, timeout=10).raise_for_status()
    requests.post(f"{server.url}/v1/images", files={"file": ("a.png", image_bytes())}, timeout=10).raise_for_status()
    [job] = requests.post(f"{server.url}/v1/software/{SOFTWARE}/claim", json={}, timeout=10).json()["jobs"]
    return {"url": server.url, "job": job}


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        (b"GET /v1/images/%FF", 404),
        (b"GET /v1/software/%ED%A0%80/jobs", 404),
        (b"GET /v1/images?origin=%ED%A0%80", 400),
        (b"GET /v1/software?cursor=%C3", 400),
        (b"GET /v1/images?origin=caf\xe9", 400),  # raw bytes past ASCII: waitress's own 400, in text
        (b"GET /v1/software/caf\xc3\xa9", 400),
    ],
)
def test_a_real_server_refuses_a_request_line_that_is_not_utf8(served, request_line, status):
    host, port = urlsplit(served["url"]).hostname, urlsplit(served["url"]).port
    with socket.create_connection((host, port), timeout=10) as connection:
        headers = b"Host: localhost\r\nX-Request-ID: caf\xe9\r\nConnection: close\r\n\r\n"
        connection.sendall(request_line + b" HTTP/1.1\r\n" + headers)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert int(head.split()[1]) == status, answer[:500]
    if b"application/json" in head:
        assert strict_json(body)["title"]
