"""An open server (on loopback, never a token) serves only what a local client sends: requests to a
loopback ``Host`` (no DNS rebinding) and no write a browser sends from another origin; and once a
token has existed, the server is never open again, even with every token revoked.

Every route of the route table is tried, each method, HEAD too, and a path no route has.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import falcon.testing
import pytest

from heartbeat.api.routes import ROUTES
from heartbeat.app import create_app
from heartbeat.auth import tokens
from heartbeat.auth.roles import Access
from heartbeat.db.models import ApiToken, Image, Software
from helpers import image_bytes, multipart, register, upload

FOREIGN_HOSTS = [
    "rebound.example",  # a page's own name, rebound to 127.0.0.1
    "rebound.example:8080",
    "127.0.0.1.nip.io",
    "localhost.rebound.example",
    "0.0.0.0:8080",  # reaches loopback on Linux, but is no loopback name
    "10.0.0.7",
    "[::2]:8080",
    "",
    "localhost:http",  # no port
    "user@localhost",
]
LOOPBACK_HOSTS = [
    "localhost",
    "localhost:8080",
    "LocalHost.",
    "dashboard.localhost:8080",  # RFC 6761: browsers resolve every .localhost name to loopback themselves
    "127.0.0.1",
    "127.9.8.7:80",
    "[::1]",
    "[::1]:8080",
]
CROSS_ORIGIN = {
    "cross-site": {"Sec-Fetch-Site": "cross-site"},
    "same-site": {"Sec-Fetch-Site": "same-site"},  # another port of localhost: the same site, another origin
    "foreign-origin": {"Origin": "http://rebound.example"},
    "null-origin": {"Origin": "null"},  # a file:// page, a sandboxed frame
    "another-port": {"Origin": "http://localhost:9999"},
    "another-scheme": {"Origin": "https://localhost"},
    "another-name": {"Origin": "http://127.0.0.1"},  # the same machine, another origin than the request's own
}
SAME_ORIGIN = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
READ_METHODS = ("GET", "HEAD", "OPTIONS")
BODY = {"token": "not-the-lease", "info": {}, "error": "x", "results": [], "name": "x", "url": "http://x.example/"}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def image_id(client) -> str:
    register(client, "face_detection", tables={"faces": {"x": "int"}})
    return upload(client).json["id"]


@pytest.fixture
def signed_path(client, image_id) -> str:
    """The path and query of the image's signed URL (local storage: served here; on S3, by the store)."""
    url = urlsplit(client.simulate_get(f"/v1/images/{image_id}/url").json["url"])
    return f"{url.path}?{url.query}"


def every_request(image_id: str, signed_path: str) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(method, route template, path, simulate_request's keyword arguments) for every method of every
    route, HEAD for every GET, a multipart upload, a path no route has and a method nobody serves."""
    blob_path, _, blob_query = signed_path.partition("?")
    for route in ROUTES:
        path = (
            route.path.replace("{image_id}", image_id)
            .replace("{name}", "face_detection")
            .replace("{table}", "faces")
            .replace("{upload_id}", "no-such-upload")
        )
        query = ""
        if "{key:path}" in route.path:
            path, query = blob_path, blob_query
        for method in [*route.operations, *(["HEAD"] if "GET" in route.operations else [])]:
            if method in READ_METHODS or method == "DELETE":
                yield method, route.path, path, {"query_string": query}
            else:
                yield method, route.path, path, {"query_string": query, "json": BODY}
    form = multipart(file=image_bytes((9, 9, 9)))
    yield "POST", "/v1/images", "/v1/images", {"body": form["body"], "headers": form["headers"]}
    yield "GET", "", "/no/such/route", {}
    yield "BREW", "/v1/images", "/v1/images", {}


def send(client, method: str, path: str, arguments: dict[str, Any], headers: dict[str, str]) -> Any:
    return client.simulate_request(method, path, **(arguments | {"headers": arguments.get("headers", {}) | headers}))


def state() -> tuple[Any, ...]:
    """What a write could change: the images, the software and their settings."""
    return (
        sorted(Image.select(Image.id).tuples()),
        sorted(Software.select(Software.name, Software.paused, Software.lease_seconds).tuples()),
    )


# --- Host -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", FOREIGN_HOSTS)
def test_an_open_server_answers_only_requests_to_a_loopback_host(client, image_id, signed_path, host):
    before = state()
    for method, _template, path, arguments in every_request(image_id, signed_path):
        result = send(client, method, path, arguments, {"Host": host})
        where = f"{method} {path} Host {host!r}"
        assert result.status_code == 403, f"{where} -> {result.status_code}"
        if method != "HEAD":
            assert "loopback" in result.json["description"], where
    assert state() == before

    blob_path, _, blob_query = signed_path.partition("?")
    for loopback in LOOPBACK_HOSTS:
        local = {"Host": loopback}
        assert client.simulate_get("/v1/images", headers=local).json["images"][0]["id"] == image_id, loopback
        if blob_path.startswith("/v1/blobs/"):  # local storage: this server's own signed route
            assert client.simulate_get(blob_path, query_string=blob_query, headers=local).status_code == 200
        assert client.simulate_post("/v1/software/face_detection/pause", headers=local).status_code == 200


def test_an_open_server_also_answers_the_host_of_its_public_url(settings, database, storage, clock):
    named = dataclasses.replace(settings, public_url="http://heartbeat.lan:8080/")
    client = falcon.testing.TestClient(create_app(named, database=database, storage=storage, clock=clock))
    assert client.simulate_get("/v1/images", headers={"Host": "heartbeat.lan:8080"}).status_code == 200
    assert client.simulate_get("/v1/images", headers={"Host": "other.lan:8080"}).status_code == 403


# --- writes from another origin ----------------------------------------------------------------------


@pytest.mark.parametrize("headers", CROSS_ORIGIN.values(), ids=CROSS_ORIGIN.keys())
def test_an_open_server_takes_only_the_writes_of_its_own_origin(client, image_id, signed_path, headers):
    before = state()
    writes = 0
    for method, _template, path, arguments in every_request(image_id, signed_path):
        if method in READ_METHODS:
            continue
        writes += 1
        result = send(client, method, path, arguments, headers)
        assert result.status_code == 403, f"{method} {path} {headers} -> {result.status_code} {result.text}"
        assert "another origin" in result.json["description"]
    table_writes = sum(method not in READ_METHODS for route in ROUTES for method in route.operations)
    assert writes == table_writes + 2 > 15  # every POST, PUT, PATCH and DELETE, the upload form, BREW
    assert state() == before

    # What the dashboard's buttons send: same-origin fetches, on any loopback name and port.
    assert client.simulate_post("/v1/software/face_detection/pause", headers=SAME_ORIGIN).status_code == 200
    on_a_port = {"Host": "127.0.0.1:8080", "Origin": "http://127.0.0.1:8080", "Sec-Fetch-Site": "same-origin"}
    assert client.simulate_post("/v1/software/face_detection/resume", headers=on_a_port).status_code == 200
    assert upload(client, image_bytes((3, 3, 3)), headers=SAME_ORIGIN).status_code == 201
    typed = {"Sec-Fetch-Site": "none"}  # the user's own navigation
    assert client.simulate_post("/v1/software", json={"name": "ocr"}, headers=typed).status_code == 201
    assert client.simulate_delete(f"/v1/images/{image_id}", headers=SAME_ORIGIN).status_code == 204
    # A client that is no browser sends neither header.
    assert client.simulate_post("/v1/software", json={"name": "plates"}).status_code == 201
    # Reading is no write (and a page of another origin cannot read the answer).
    assert client.simulate_get("/v1/images", headers=headers).status_code == 200


# --- once a token has existed ------------------------------------------------------------------------

NEEDS_A_TOKEN = {
    (method, route.path)
    for route in ROUTES
    for method, operation in route.operations.items()
    if operation.access is not Access.PUBLIC
}


def tokenless_statuses(client, image_id: str, signed_path: str) -> dict[tuple[str, str], int]:
    """The status of each request without a token to a route that needs one."""
    return {
        (method, template): send(client, method, path, arguments, {}).status_code
        for method, template, path, arguments in every_request(image_id, signed_path)
        if (method, template) in NEEDS_A_TOKEN
    }


def test_revoking_the_last_token_locks_the_api_until_a_token_is_made(
    client, settings, database, storage, clock, image_id, signed_path
):
    row, secret = tokens.create_token("admin", clock=clock)
    tokens.revoke_token(row.id, clock=clock)
    statuses = tokenless_statuses(client, image_id, signed_path)
    assert len(statuses) >= 25
    assert set(statuses.values()) == {401}, {key: status for key, status in statuses.items() if status != 401}
    assert client.simulate_get("/v1/images", headers=bearer(secret)).status_code == 401
    assert client.simulate_get("/v1/health").status_code == 200  # the public routes stay public

    # A restart (a new app on the same database) finds the database's record, as every process does.
    restarted = falcon.testing.TestClient(create_app(settings, database=database, storage=storage, clock=clock))
    assert restarted.simulate_get("/v1/images").status_code == 401
    assert restarted.simulate_get("/", headers={"Host": "rebound.example"}).status_code == 200  # no longer open
    assert ApiToken.select().count() == 1  # the revoked row stays: it is that record

    _, new_secret = tokens.create_token("reader", clock=clock)
    assert restarted.simulate_get("/v1/images").status_code == 401
    assert restarted.simulate_get("/v1/images", headers=bearer(new_secret)).status_code == 200


def test_a_token_made_while_the_server_runs_closes_it_for_good_and_tokens_guard_every_host(
    client, clock, image_id, signed_path
):
    assert client.simulate_get("/v1/images").status_code == 200
    row, secret = tokens.create_token("admin", clock=clock)
    assert client.simulate_get("/v1/images").status_code == 401

    # Tokens protect it now: any Host (a reverse proxy's name) and any origin, with a token.
    foreign = {"Host": "api.example.org"} | CROSS_ORIGIN["cross-site"] | CROSS_ORIGIN["foreign-origin"]
    assert client.simulate_get("/v1/images", headers=foreign | bearer(secret)).status_code == 200
    assert upload(client, image_bytes((7, 7, 7)), headers=foreign | bearer(secret)).status_code == 201
    assert client.simulate_get("/v1/images", headers=foreign).status_code == 401
    assert client.simulate_get("/v1/health", headers=foreign).status_code == 200
    blob_path, _, blob_query = signed_path.partition("?")
    if blob_path.startswith("/v1/blobs/"):
        assert client.simulate_get(blob_path, query_string=blob_query, headers=foreign).status_code == 200

    tokens.revoke_token(row.id, clock=clock)
    assert client.simulate_get("/v1/images").status_code == 401
