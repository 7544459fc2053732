"""The web pages: ``GET /`` (the dashboard), ``GET /docs`` (the API reference, Swagger UI over
``/openapi.json``) and the files they load, all served from this package: they work offline.

- ``/dashboard/{name}``: the dashboard's script and style, and the docs page's own script.
- ``/docs/assets/{name}``: Swagger UI's script and style, from the ``swagger-ui-py`` package's copy.
"""

from __future__ import annotations

import importlib.resources
import mimetypes
from collections.abc import Iterable
from pathlib import Path

import falcon

from heartbeat.api.middleware import PAGE_POLICY
from heartbeat.api.routing import Operation, Parts, Reply, Route
from heartbeat.auth.roles import Access
from heartbeat.errors import NotFound

DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"
SWAGGER_UI_DIR = Path(str(importlib.resources.files("swagger_ui") / "static"))
SWAGGER_UI_FILES = ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-16x16.png", "favicon-32x32.png")
# Swagger UI draws its icons from data: URIs in its style sheet; scripts still come from this origin alone.
DOCS_POLICY = PAGE_POLICY.replace("img-src 'self'", "img-src 'self' data:")


class HtmlPage:
    """One HTML page of :data:`DASHBOARD_DIR`, with its Content-Security-Policy (default: the middleware's)."""

    def __init__(self, name: str, policy: str | None = None):
        self._path = DASHBOARD_DIR / name
        self._policy = policy

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.data = self._path.read_bytes()
        if self._policy:
            resp.set_header("Content-Security-Policy", self._policy)


class StaticFiles:
    """The files of one folder by name (``names``, or all of its files; no subfolders), each with its
    media type; any other name is a 404."""

    def __init__(self, directory: Path, names: Iterable[str] | None = None):
        wanted = set(names) if names is not None else None
        self._files = {
            path.name: path
            for path in directory.iterdir()
            if path.is_file() and (wanted is None or path.name in wanted)
        }
        if wanted is not None and wanted - set(self._files):
            raise FileNotFoundError(f"{directory}: no {sorted(wanted - set(self._files))}")

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        path = self._files.get(name)
        if path is None:
            raise NotFound(f"no file {name!r} here")
        resp.content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        resp.data = path.read_bytes()
        resp.cache_control = ["no-cache"]  # revalidated: a new release's files are seen at once


# --- its routes ----------------------------------------------------------------------------------


def dashboard_page(parts: Parts) -> HtmlPage:
    return HtmlPage("index.html")


def dashboard_files(parts: Parts) -> StaticFiles:
    return StaticFiles(DASHBOARD_DIR)


def docs_page(parts: Parts) -> HtmlPage:
    return HtmlPage("docs.html", DOCS_POLICY)


def docs_assets(parts: Parts) -> StaticFiles:
    return StaticFiles(SWAGGER_UI_DIR, SWAGGER_UI_FILES)


ROUTES: list[Route] = [
    Route(
        "/",
        dashboard_page,
        {
            "GET": Operation(
                Access.PUBLIC, "the dashboard page", Reply(200, media_type="text/html", description="the dashboard")
            )
        },
    ),
    Route(
        "/dashboard/{name}",
        dashboard_files,
        {
            "GET": Operation(
                Access.PUBLIC,
                "a file of the dashboard or the API reference page (app.js, style.css, docs.js, docs.css)",
                Reply(200, media_type="text/plain", description="the file, as its media type"),
                errors=(404,),
            )
        },
    ),
    Route(
        "/docs",
        docs_page,
        {
            "GET": Operation(
                Access.PUBLIC,
                "the API reference: this document, rendered (Swagger UI, served from here: it works offline)",
                Reply(200, media_type="text/html", description="the page"),
            )
        },
    ),
    Route(
        "/docs/assets/{name}",
        docs_assets,
        {
            "GET": Operation(
                Access.PUBLIC,
                "Swagger UI's script, style and icons, for /docs",
                Reply(200, media_type="text/plain", description="the file, as its media type"),
                errors=(404,),
            )
        },
    ),
]
