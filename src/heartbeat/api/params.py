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
import jsonschema

from heartbeat import jsontext
from heartbeat.api import schemas
from heartbeat.errors import InvalidInput, NotFound, NotJson, TooLarge
from heartbeat.paging import DEFAULT_LIMIT, CursorGrammar

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


def cursor(req: falcon.Request, grammar: CursorGrammar) -> Any:
    """The sort key named by the ``cursor`` parameter (None without one); 400 for a cursor not of ours."""
    return grammar.parse(req.get_param("cursor"))


def query(req: falcon.Request, name: str, schema: dict[str, Any]) -> str | None:
    """The query parameter ``name`` (None when absent), checked against ``schema``; 400 on mismatch."""
    value = req.get_param(name)
    if value is not None:
        check(value, schema, where=name)
    return value


def base_url(req: falcon.Request, public_url: str | None) -> str:
    """How workers reach this API: the configured public URL, else the request's own host."""
    return public_url.rstrip("/") if public_url else req.prefix


_validators: dict[int, Any] = {}


def _validator(schema: dict[str, Any]) -> Any:
    """One compiled validator per schema object (the schemas are module constants)."""
    validator = _validators.get(id(schema))
    if validator is None:
        validator_class = jsonschema.validators.validator_for(schema)
        validator_class.check_schema(schema)
        validator = _validators[id(schema)] = validator_class(schema)
    return validator


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
    return integral(media, schema)


def check_storable(value: Any, max_depth: int = jsontext.MAX_JSON_DEPTH) -> None:
    """:class:`InvalidInput` (400) for JSON that parsed but cannot be stored and sent back: a lone
    surrogate, a number beyond the largest double, nesting deeper than ``max_depth``."""
    try:
        jsontext.check_value(value, max_depth)
    except ValueError as error:
        raise InvalidInput(f"the body is not storable JSON: {error}") from None


def check(value: Any, schema: dict[str, Any], *, where: str = "") -> None:
    """:class:`InvalidInput` (400) naming the first place where ``value`` does not match ``schema``."""
    error = jsonschema.exceptions.best_match(_validator(schema).iter_errors(value))
    if error is not None:
        where = "/".join([where, *(str(part) for part in error.absolute_path)]).strip("/")
        raise InvalidInput(f"{where}: {error.message}" if where else error.message)


def integral(value: Any, schema: dict[str, Any]) -> Any:
    """``value`` (valid against ``schema``) with each float that ``schema`` types as an integer made
    an int, so that ``96673.0`` is used as ``96673`` everywhere (MySQL refuses ``LIMIT 2.0``).

    Follows ``properties``, ``additionalProperties`` and ``items``, the keywords our schemas nest with.
    """
    if not _mentions_integer(schema):
        return value
    if isinstance(value, float) and value.is_integer() and "integer" in _types(schema):
        return int(value)
    if isinstance(value, dict):
        properties, extra = schema.get("properties", {}), schema.get("additionalProperties")
        return {
            key: integral(item, properties.get(key, extra if isinstance(extra, dict) else {}))
            for key, item in value.items()
        }
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [integral(item, schema["items"]) for item in value]
    return value


def _types(schema: dict[str, Any]) -> list[str]:
    kinds = schema.get("type", [])
    return [kinds] if isinstance(kinds, str) else kinds


_mentions: dict[int, bool] = {}


def _mentions_integer(schema: Any) -> bool:
    """Whether ``schema`` or any schema inside it types something as an integer (cached per schema)."""
    if not isinstance(schema, dict):
        return False
    found = _mentions.get(id(schema))
    if found is None:
        nested = [*schema.get("properties", {}).values(), schema.get("additionalProperties"), schema.get("items")]
        found = _mentions[id(schema)] = "integer" in _types(schema) or any(_mentions_integer(s) for s in nested)
    return found


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
