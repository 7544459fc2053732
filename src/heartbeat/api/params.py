"""Readers of what a request carries (its path, query parameters and JSON body), shared by the resources.

Query parameters and bodies are checked against the very schemas the OpenAPI document shows
(``api/schemas.py``), so that the document is exactly as strict as the server.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

import falcon
import falcon.media

from heartbeat import jsontext
from heartbeat.api import schemas
from heartbeat.api.blobs import SIGNED_ROUTE
from heartbeat.db.paging import DEFAULT_LIMIT
from heartbeat.errors import InvalidInput, NotFound, NotJson, TooLarge
from heartbeat.validation import check as check
from heartbeat.validation import integral

MAX_JSON_BYTES = 16 * 1024 * 1024
JSON_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


def page_limit(req: falcon.Request) -> int:
    limit = query_integer(req, "limit", schemas.LIMIT)
    return DEFAULT_LIMIT if limit is None else limit


def query_integer(req: falcon.Request, name: str, schema: dict[str, Any]) -> int | None:
    """The query parameter ``name`` as an integer that ``schema`` takes (None when absent); 400 for
    anything else. It is read as a JSON number, so ``2.0`` counts, as JSON Schema counts it."""
    text = req.get_param(name)
    if text is None:
        return None
    number = float(text) if JSON_NUMBER.fullmatch(text) else None
    if number is None or not number.is_integer():
        raise InvalidInput(f"{name}: {text!r} is not an integer")
    check(int(number), schema, where=name)
    return int(number)


def query_number(req: falcon.Request, name: str, schema: dict[str, Any]) -> float | None:
    """The query parameter ``name`` as a JSON number that ``schema`` takes (None when absent); 400 else."""
    text = req.get_param(name)
    if text is None:
        return None
    if not JSON_NUMBER.fullmatch(text):
        raise InvalidInput(f"{name}: {text[:40]!r} is not a number")
    check(float(text), schema, where=name)
    return float(text)


def query(req: falcon.Request, name: str, schema: dict[str, Any]) -> str | None:
    """The query parameter ``name`` (None when absent), checked against ``schema``; 400 on mismatch."""
    value = req.get_param(name)
    if value is not None:
        check(value, schema, where=name)
    return value


def signed_url_base(req: falcon.Request, public_url: str | None) -> str:
    """Where the API serves the URLs local storage signs (:data:`SIGNED_ROUTE`), as workers reach it:
    under the configured public URL, else the request's own host."""
    return (public_url.rstrip("/") if public_url else req.prefix) + SIGNED_ROUTE.rstrip("/")


def json_handler() -> falcon.media.JSONHandler:
    """Falcon's JSON handler over strict JSON both ways (see :mod:`heartbeat.jsontext`): 400 for a
    body that is not JSON syntax, and answers that cannot be anything but strict JSON. What parses
    but cannot be stored (a lone surrogate, ``1e999``) is refused by :func:`read_body`."""
    return falcon.media.JSONHandler(dumps=jsontext.dumps, loads=jsontext.parse)


def read_body(
    req: falcon.Request, schema: dict[str, Any], *, optional: bool = False, judged_apart: str | None = None
) -> dict[str, Any]:
    """The JSON body, checked for text and numbers that can be stored, then against ``schema``; 400
    with the first fault.

    A number the schema types as ``integer`` comes back as an int even when it was sent as an integral
    float (JSON Schema counts ``96673.0`` as an integer). With ``optional`` an empty body counts as
    ``{}``. ``judged_apart`` names a list whose items the caller checks one by one (a batch, where a
    bad item spoils nothing else), with :func:`check_storable`.
    """
    if req.content_length and "json" not in (req.content_type or ""):
        raise NotJson()
    if req.content_length and req.content_length > MAX_JSON_BYTES:
        raise TooLarge(f"a JSON body may be at most {MAX_JSON_BYTES} bytes")
    media = req.get_media(default_when_empty={} if optional else None)
    if media is None:
        raise InvalidInput("this route needs a JSON body")
    frame = media | {judged_apart: []} if judged_apart and isinstance(media, dict) and judged_apart in media else media
    check_storable(frame)
    check(media, schema)
    checked: dict[str, Any] = integral(media, schema)
    return checked


def check_storable(value: Any, max_depth: int = jsontext.MAX_JSON_DEPTH) -> None:
    """:class:`InvalidInput` (400) for JSON that parsed but cannot be stored and sent back: a lone
    surrogate, a number beyond the largest double, nesting deeper than ``max_depth``."""
    try:
        jsontext.check_value(value, max_depth)
    except ValueError as error:
        raise InvalidInput(f"the body is not storable JSON: {error}") from None


class UnicodeRequestLine:
    """Falcon middleware: the path and the query string, once percent-decoded, must be UTF-8.

    Falcon decodes both with ``errors="replace"``, so ``?origin=%FF`` would silently filter on U+FFFD
    and ``/v1/images/%FF`` name an image ``"\ufffd"``. A query string that is not UTF-8 answers 400; a
    path that is not names nothing: 404. (waitress itself refuses a request line with raw bytes past
    ASCII, unencoded, with its own 400.)
    """

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if not _decodes(_latin1, req.env.get("PATH_INFO", "")):
            raise NotFound("no such route: the path is not UTF-8 text")
        if not _decodes(lambda query: unquote_to_bytes(_latin1(query)), req.query_string or ""):
            raise InvalidInput("the query string is not UTF-8 text once percent-decoded")


def _latin1(wsgi_text: str) -> bytes:
    return wsgi_text.encode("latin-1")  # PEP 3333: the server hands over bytes read as latin-1


def _decodes(to_bytes: Callable[[str], bytes], text: str) -> bool:
    """Whether the bytes ``to_bytes`` makes of ``text`` are UTF-8."""
    if "%" not in text and text.isascii():
        return True
    try:
        to_bytes(text).decode("utf-8")
    except UnicodeError:
        return False
    return True


def token_of(req: falcon.Request) -> str | None:
    """The ID of the token the request came with (None on an open server or a public route)."""
    principal = getattr(req.context, "principal", None)
    return None if principal is None else principal.token_id
