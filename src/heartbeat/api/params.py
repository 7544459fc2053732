"""Small readers of query parameters and request bodies shared by the resources."""

from __future__ import annotations

import json
from typing import Any

import falcon
import falcon.media
import jsonschema

from heartbeat.paging import DEFAULT_LIMIT, MAX_LIMIT

MAX_JSON_BYTES = 16 * 1024 * 1024
MAX_JSON_DEPTH = 64


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


def _nesting_depth(value: Any) -> int:
    """How deeply arrays and objects nest in ``value``, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                break
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _loads(text: str) -> Any:
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if _nesting_depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def json_handler() -> falcon.media.JSONHandler:
    """Falcon's JSON handler, refusing (400) JSON nested deeper than ``MAX_JSON_DEPTH``."""
    return falcon.media.JSONHandler(loads=_loads)


def read_body(req: falcon.Request, schema: dict[str, Any], *, optional: bool = False) -> dict[str, Any]:
    """The JSON body checked against ``schema``; 400 with the first mismatch.

    With ``optional`` an empty body counts as ``{}``.
    """
    if req.content_length and "json" not in (req.content_type or ""):
        raise falcon.HTTPUnsupportedMediaType(description="send the body as JSON (Content-Type: application/json)")
    if req.content_length and req.content_length > MAX_JSON_BYTES:
        raise falcon.HTTPContentTooLarge(description=f"a JSON body may be at most {MAX_JSON_BYTES} bytes")
    media = req.get_media(default_when_empty={} if optional else None)
    if media is None:
        raise falcon.HTTPBadRequest(title="Missing body", description="this route needs a JSON body")
    error = jsonschema.exceptions.best_match(_validator(schema).iter_errors(media))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path)
        raise falcon.MediaValidationError(
            title="Request data failed validation",
            description=f"{where}: {error.message}" if where else error.message,
        )
    return media
