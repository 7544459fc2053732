"""JSON Schemas of the request bodies, form fields and query parameters: the server checks each
request against them (400 on mismatch) and the OpenAPI document shows the very same objects.

Where a rule cannot be a schema (a software that must be registered, bytes that must be an image,
JSON nested no deeper than 64 levels), the server answers as the contract says (404, 415, 422, 400)
and the document says so in words.
"""

from __future__ import annotations

from heartbeat.catalog.registry import LEASE_SECONDS as LEASE_SECONDS
from heartbeat.catalog.registry import NAME as NAME
from heartbeat.catalog.registry import NAME_PATTERN, SOFTWARE_CHANGES, SOFTWARE_FIELDS
from heartbeat.catalog.registry import VERSION as VERSION
from heartbeat.catalog.registry import Schema as Schema
from heartbeat.db.models import JobStatus
from heartbeat.db.paging import MAX_LIMIT
from heartbeat.ingest.registration import MAX_PRIORITY
from heartbeat.query.parse import MAX_EXPRESSION_CHARS
from heartbeat.queue import REQUEUABLE

IMAGE_ID: Schema = {"type": "string", "minLength": 1, "maxLength": 32}
TOKEN: Schema = {"type": "string", "minLength": 1, "maxLength": 64}
PRIORITY: Schema = {"type": "integer", "minimum": -MAX_PRIORITY, "maximum": MAX_PRIORITY}
ROWS: Schema = {
    "type": "object",
    "propertyNames": NAME,
    "additionalProperties": {"type": "array", "items": {"type": "object"}},
}


def _object(properties: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


URL: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": 4096,
    "description": "fetched by the server: 422 when it may not be reached or does not answer with an image",
}

IMAGE_BY_URL = _object(
    {
        "url": URL,
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

SOFTWARE = SOFTWARE_FIELDS
SOFTWARE_PATCH = SOFTWARE_CHANGES

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

WHERE: Schema = {
    "type": "string",
    "minLength": 1,
    "description": f"at most {MAX_EXPRESSION_CHARS} characters: an expression over the images' fields and what "
    "the software found (the contract's "
    "\"Queries\"), e.g. `face_detection.status = 'done' and face_detection.faces.count(w >= 100) >= 2`; "
    "a bad one answers 400 with the column of the fault",
}

REQUEUE = _object(
    {
        "status": {"enum": [str(status) for status in REQUEUABLE]},
        "image_ids": {"type": "array", "items": IMAGE_ID, "maxItems": 10000},
        "where": WHERE,
    },
    ("status",),
)

# The multipart upload's text fields (a file is a part of its own). An empty field, as HTML forms send
# them, counts as absent; ``other_data`` is a JSON object, sent as a part of type application/json
# (or as text).
# MAX_PRIORITY is a power of ten (a test holds it to that): the pattern spells out -MAX_PRIORITY..MAX_PRIORITY.
_PRIORITY_DIGITS = len(str(MAX_PRIORITY)) - 1
FORM_PRIORITY: Schema = {
    "type": "string",
    "pattern": rf"^(-?({MAX_PRIORITY}|[0-9]{{1,{_PRIORITY_DIGITS}}}))?$",
    "description": f"an integer from {-MAX_PRIORITY} to {MAX_PRIORITY}, as text",
}
UPLOAD_FORM_FIELDS = _object(
    {
        "url": URL,
        "origin": {"type": "string", "maxLength": 255},
        "other_data": {"type": "object", "description": "a JSON object"},
        "priority": FORM_PRIORITY,
    }
)

# Query parameters.
LIMIT: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}
TEXT: Schema = {"type": "string"}
JOB_STATUS: Schema = {"enum": [str(status) for status in JobStatus]}
IMAGE_STATUS: Schema = {
    "type": "string",
    "pattern": f"^{NAME_PATTERN.pattern.strip('^$')}:({'|'.join(JobStatus)})$",
    "description": "`<software>:<status>`: only images whose job of that software has that status (404 for "
    "a software that is not registered)",
}
ORDER: Schema = {"enum": ["oldest", "newest"]}
UPRIGHT: Schema = {"enum": ["true", "false"]}
INCLUDES = ("jobs", "thumbnail")
INCLUDE: Schema = {"type": "string", "pattern": f"^({'|'.join(INCLUDES)})(,({'|'.join(INCLUDES)}))*$"}
