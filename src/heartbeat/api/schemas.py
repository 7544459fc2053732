"""JSON Schemas of the request bodies, checked by Falcon's jsonschema validator (400 on mismatch)."""

from __future__ import annotations

from typing import Any

from heartbeat.ingest import MAX_PRIORITY
from heartbeat.registry import MAX_ATTEMPTS, MAX_LEASE_SECONDS, MAX_ORIGINS, NAME_PATTERN

Schema = dict[str, Any]

IMAGE_ID: Schema = {"type": "string", "minLength": 1, "maxLength": 32}
TOKEN: Schema = {"type": "string", "minLength": 1, "maxLength": 64}
LEASE_SECONDS: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_LEASE_SECONDS}
NAME: Schema = {"type": "string", "pattern": NAME_PATTERN.pattern}
ORIGIN: Schema = {"type": "string", "minLength": 1, "maxLength": 255}
PRIORITY: Schema = {"type": "integer", "minimum": -MAX_PRIORITY, "maximum": MAX_PRIORITY}
ROWS: Schema = {
    "type": "object",
    "propertyNames": NAME,
    "additionalProperties": {"type": "array", "items": {"type": "object"}},
}


def _object(properties: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


IMAGE_BY_URL = _object(
    {
        "url": {"type": "string", "minLength": 1, "maxLength": 4096},
        "origin": {"type": ["string", "null"], "maxLength": 255},
        "other_data": {"type": ["object", "null"]},
        "priority": PRIORITY,
    },
    ("url",),
)

IMAGE_CHANGES = _object({"priority": PRIORITY}, ("priority",))

UPLOAD = _object({"filename": {"type": ["string", "null"], "maxLength": 255}})

UPLOAD_COMPLETE = _object(
    {
        "origin": {"type": ["string", "null"], "maxLength": 255},
        "other_data": {"type": ["object", "null"]},
        "priority": PRIORITY,
    }
)

SOFTWARE = _object(
    {
        "name": NAME,
        "lease_seconds": LEASE_SECONDS,
        "max_attempts": {"type": "integer", "minimum": 1, "maximum": MAX_ATTEMPTS},
        "tables": {
            "type": "object",
            "propertyNames": NAME,
            "additionalProperties": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": NAME,
                "additionalProperties": {"enum": ["text", "int", "float", "bool", "json", "time"]},
            },
        },
        "after": {"type": "array", "items": NAME, "uniqueItems": True, "maxItems": 100},
        "origins": {
            "type": ["array", "null"],
            "items": ORIGIN,
            "uniqueItems": True,
            "minItems": 1,
            "maxItems": MAX_ORIGINS,
        },
    },
    ("name",),
)

CLAIM = _object(
    {
        "max": {"type": "integer", "minimum": 1, "maximum": 100},
        "lease_seconds": LEASE_SECONDS,
        "wait_seconds": {"type": "number", "minimum": 0, "maximum": 20},
    }
)

EXTEND = _object({"token": TOKEN, "lease_seconds": LEASE_SECONDS}, ("token",))

RESULT = _object({"token": TOKEN, "info": {}, "rows": ROWS}, ("token", "info"))

# The batch checks only its frame; each result is judged on its own, as the single submit judges it.
BATCH_RESULTS = _object(
    {"results": {"type": "array", "minItems": 1, "maxItems": 100}},
    ("results",),
)
BATCH_RESULT = _object({"image_id": IMAGE_ID, "token": TOKEN, "info": {}, "rows": ROWS}, ("image_id", "token", "info"))

FAIL = _object(
    {
        "token": TOKEN,
        "error": {"type": "string", "maxLength": 65536},
        "retry": {"type": "boolean"},
        "retry_after": {"type": "number", "minimum": 0, "maximum": 86400},
    },
    ("token", "error"),
)

RELEASE = _object({"token": TOKEN}, ("token",))

REQUEUE = _object(
    {
        "status": {"enum": ["failed", "done"]},
        "image_ids": {"type": "array", "items": IMAGE_ID, "maxItems": 10000},
    },
    ("status",),
)
