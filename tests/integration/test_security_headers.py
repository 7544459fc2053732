"""Every answer carries ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``:
JSON, every kind of error (Falcon's own 404 and 405 included), the dashboard's and /docs's files, the
signed blob downloads, /metrics and /openapi.json. The dashboard's page and /docs also carry a
Content-Security-Policy that runs only their own scripts and forbids framing (that the browser
honours it, and that the pages break none of it, is tested in test_dashboard.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import falcon
import falcon.testing
import pytest

from heartbeat.app import create_app
from helpers import fetch_url, image_bytes, unreachable_database, upload

Request = Callable[[falcon.testing.TestClient, str], falcon.testing.Result]


class Boom:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise RuntimeError("a bug")


@pytest.fixture
def image_id(client) -> str:
    return upload(client).json["id"]


def signed_download(client: falcon.testing.TestClient, image_id: str) -> Any:
    return fetch_url(client, client.simulate_get(f"/v1/images/{image_id}/url").json["url"])


ANSWERS: dict[str, tuple[int, Request]] = {
    "json-list": (200, lambda client, image_id: client.simulate_get("/v1/images")),
    "json-created": (201, lambda client, image_id: upload(client, image_bytes((1, 2, 3)))),
    "redirect": (307, lambda client, image_id: client.simulate_get(f"/v1/images/{image_id}/content")),
    "no-content": (204, lambda client, image_id: client.simulate_delete(f"/v1/images/{image_id}")),
    "bad-request": (400, lambda client, image_id: client.simulate_get("/v1/images", params={"limit": "0"})),
    "unauthorized": (
        401,
        lambda client, image_id: client.simulate_get("/v1/images", headers={"Authorization": "Bearer hb_no-such"}),
    ),
    "not-found": (404, lambda client, image_id: client.simulate_get("/v1/images/nope")),
    "falcon-not-found": (404, lambda client, image_id: client.simulate_get("/v1/no/such/route")),
    "falcon-method-not-allowed": (405, lambda client, image_id: client.simulate_patch("/v1/health")),
    "too-large": (
        413,
        lambda client, image_id: client.simulate_post(
            "/v1/software", body=b"{}", headers={"Content-Type": "application/json", "Content-Length": str(2**30)}
        ),
    ),
    "unsupported": (415, lambda client, image_id: client.simulate_post("/v1/software", body=b"x")),
    "unexpected-error": (500, lambda client, image_id: client.simulate_get("/boom")),
    "dashboard-page": (200, lambda client, image_id: client.simulate_get("/")),
    "dashboard-script": (200, lambda client, image_id: client.simulate_get("/dashboard/app.js")),
    "dashboard-style": (200, lambda client, image_id: client.simulate_get("/dashboard/style.css")),
    "docs-page": (200, lambda client, image_id: client.simulate_get("/docs")),
    "docs-script": (200, lambda client, image_id: client.simulate_get("/docs/assets/swagger-ui-bundle.js")),
    "docs-missing-file": (404, lambda client, image_id: client.simulate_get("/docs/assets/index.html")),
    "metrics": (200, lambda client, image_id: client.simulate_get("/metrics")),
    "openapi": (200, lambda client, image_id: client.simulate_get("/openapi.json")),
    "health": (200, lambda client, image_id: client.simulate_get("/v1/health")),
}


@pytest.mark.parametrize(("status", "request_"), ANSWERS.values(), ids=ANSWERS.keys())
def test_every_answer_carries_nosniff_and_no_referrer(app, client, image_id, status, request_):
    app.add_route("/boom", Boom())
    result = request_(client, image_id)
    assert result.status_code == status, result.text
    assert result.headers["X-Content-Type-Options"] == "nosniff"
    assert result.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.local_storage
def test_a_signed_download_and_a_refused_one_carry_them_too(client, image_id):
    download = signed_download(client, image_id)
    refused = client.simulate_get("/v1/blobs/images/xx/nope.jpg", params={"expires": "1", "signature": "0"})
    assert (download.status_code, refused.status_code) == (200, 403)
    for answer in (download, refused):
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "no-referrer"


def test_an_unreachable_database_answer_carries_them_too(settings, storage, clock):
    unreachable = unreachable_database()
    client = falcon.testing.TestClient(create_app(settings, database=unreachable, storage=storage, clock=clock))
    for result in (client.simulate_get("/v1/health"), client.simulate_get("/v1/images")):
        assert result.status_code == 503
        assert result.headers["X-Content-Type-Options"] == "nosniff"
        assert result.headers["Referrer-Policy"] == "no-referrer"


def policy(header: str) -> dict[str, set[str]]:
    """A Content-Security-Policy header as {directive: sources}."""
    directives = (part.split() for part in header.split(";") if part.strip())
    return {name: set(sources) for name, *sources in directives}


@pytest.mark.parametrize("path", ["/", "/docs"])
def test_the_dashboard_and_docs_pages_run_only_their_own_scripts_and_cannot_be_framed(client, path):
    page = policy(client.simulate_get(path).headers["Content-Security-Policy"])
    assert page["frame-ancestors"] == {"'none'"}
    assert page["script-src"] == {"'self'"}
    assert page["style-src"] == {"'self'"}
    assert page["connect-src"] == {"'self'"}
    assert page["default-src"] == {"'none'"}
    assert page["base-uri"] == {"'none'"}
    # Thumbnails and pictures come by presigned URL from the object store, which may be any host.
    assert page["img-src"] >= {"'self'", "https:"}
