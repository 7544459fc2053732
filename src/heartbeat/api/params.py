"""Small readers of query parameters and request bodies shared by the resources."""

from __future__ import annotations

from typing import Any

import falcon
import falcon.media
import jsonschema

from heartbeat import jsontext
from heartbeat.errors import InvalidInput, NotJson, TooLarge
from heartbeat.paging import DEFAULT_LIMIT, MAX_LIMIT

MAX_JSON_BYTES = 16 * 1024 * 1024


def page_limit(req: falcon.Request) -> int:
    return req.get_param_as_int("limit", min_value=1, max_value=MAX_LIMIT, default=DEFAULT_LIMIT)


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
    """Falcon's JSON handler over strict JSON (400 for NaN, Infinity, or nesting past the depth limit)."""
    return falcon.media.JSONHandler(loads=jsontext.loads)


def read_body(req: falcon.Request, schema: dict[str, Any], *, optional: bool = False) -> dict[str, Any]:
    """The JSON body checked against ``schema``; 400 with the first mismatch.

    With ``optional`` an empty body counts as ``{}``.
    """
    if req.content_length and "json" not in (req.content_type or ""):
        raise NotJson()
    if req.content_length and req.content_length > MAX_JSON_BYTES:
        raise TooLarge(f"a JSON body may be at most {MAX_JSON_BYTES} bytes")
    media = req.get_media(default_when_empty={} if optional else None)
    if media is None:
        raise InvalidInput("this route needs a JSON body")
    check(media, schema)
    return media


def check(value: Any, schema: dict[str, Any]) -> None:
    """:class:`InvalidInput` (400) naming the first place where ``value`` does not match ``schema``."""
    error = jsonschema.exceptions.best_match(_validator(schema).iter_errors(value))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path)
        raise InvalidInput(f"{where}: {error.message}" if where else error.message)
