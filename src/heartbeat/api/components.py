"""The answers' JSON Schemas, as the OpenAPI document shows them: its named component schemas, and
the builders the route table describes answers and parameters with.

Request bodies are not here: they are the very schemas ``read_body`` checks (``api/schemas.py``).
"""

from __future__ import annotations

from heartbeat.api import schemas
from heartbeat.api.schemas import Schema
from heartbeat.db.models import JobStatus
from heartbeat.db.paging import DEFAULT_LIMIT, CursorGrammar

NUMBER_OR_NULL: Schema = {"type": ["number", "null"]}
STRING_OR_NULL: Schema = {"type": ["string", "null"]}
STATUS: Schema = {"enum": [str(status) for status in JobStatus]}


def ref(name: str) -> Schema:
    """A reference to the component schema ``name``."""
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Schema], required: tuple[str, ...] | None = None) -> Schema:
    """An object with these properties, all of them required unless ``required`` names some."""
    return {"type": "object", "properties": properties, "required": list(required or properties)}


COMPONENTS: dict[str, Schema] = {
    "Error": obj({"title": {"type": "string"}, "description": {"type": "string"}}, ("title",)),
    "Image": obj(
        {
            "id": schemas.IMAGE_ID,
            "filename": {"type": "string"},
            "uploaded_date": {"type": "number"},
            "origin": STRING_OR_NULL,
            "other_data": {"type": ["object", "null"]},
            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "size": {"type": "integer", "minimum": 0},
            "content_type": {"type": "string"},
            "width": {
                "type": "integer",
                "minimum": 1,
                "description": "upright: after `orientation`, as every coordinate in a result",
            },
            "height": {"type": "integer", "minimum": 1, "description": "upright, as `width`"},
            "orientation": {
                "type": "integer",
                "minimum": 1,
                "maximum": 8,
                "description": "the EXIF orientation of the bytes (kept as uploaded), 1 when they have none",
            },
            "priority": schemas.PRIORITY,
        }
    ),
    "Counts": obj(
        {str(status): {"type": "integer", "minimum": 0} for status in JobStatus}
        | {"outdated": {"type": "integer", "minimum": 0, "description": "done, with a result of another version"}}
    ),
    "Software": obj(
        {
            "name": schemas.NAME,
            "version": schemas.VERSION,
            "lease_seconds": {"type": "integer"},
            "max_attempts": {"type": "integer"},
            "tables": {"type": "object", "additionalProperties": {"type": "object"}},
            "paused": {"type": "boolean"},
            "after": {"type": "array", "items": schemas.NAME},
            "origins": {"type": ["array", "null"], "items": {"type": "string"}},
            "max_in_flight": {"type": ["integer", "null"], "minimum": 1},
            "rate": {"type": ["object", "null"], "additionalProperties": {"type": "integer", "minimum": 1}},
            "in_flight": {
                "type": "integer",
                "minimum": 0,
                "description": "its jobs claimed under a lease that has not run out",
            },
            "counts": ref("Counts"),
            "throughput": obj(
                {
                    "window_seconds": {"type": "integer", "minimum": 1},
                    **{str(status): {"type": "integer", "minimum": 0} for status in (JobStatus.DONE, JobStatus.FAILED)},
                }
            ),
        }
    ),
    "Job": obj(
        {
            "image_id": schemas.IMAGE_ID,
            "status": STATUS,
            "info": {},
            "attempts": {"type": "integer", "minimum": 0},
            "claimed_at": NUMBER_OR_NULL,
            "lease_expires_at": NUMBER_OR_NULL,
            "finished_at": NUMBER_OR_NULL,
            "error": STRING_OR_NULL,
            "version": STRING_OR_NULL | {"description": "the software's version its result came from"},
        }
    ),
    "ClaimedJob": obj(
        {
            "image_id": schemas.IMAGE_ID,
            "token": {"type": "string"},
            "attempt": {"type": "integer", "minimum": 1},
            "lease_expires_at": {"type": "number"},
            "version": schemas.VERSION,
            "url": {"type": "string"},
            "url_expires_at": {"type": "number"},
            "image": ref("Image"),
            "upstream": {
                "type": "object",
                "description": "for a software with `after`: each upstream software's `info` for this image",
            },
        },
        ("image_id", "token", "attempt", "lease_expires_at", "version", "url", "url_expires_at", "image"),
    ),
    "SignedUrl": obj({"url": {"type": "string"}, "expires_at": {"type": "number"}}),
    "Upload": obj(
        {
            "upload_id": {"type": "string", "minLength": 1, "maxLength": 32},
            "url": {"type": "string"},
            "method": {"const": "PUT"},
            "expires_at": {"type": "number"},
            "max_bytes": {"type": "integer", "minimum": 1},
        }
    ),
}

IMAGE_WITH_JOBS: Schema = {"allOf": [ref("Image"), obj({"jobs": {"type": "object", "additionalProperties": STATUS}})]}
UPLOADED: Schema = {"allOf": [ref("Image"), obj({"duplicate": {"type": "boolean"}})]}
RETRY_AFTER: Schema = {
    "description": "seconds to wait before trying again",
    "schema": {"type": "integer", "minimum": 1},
}

# The schema of each path field, by its name: the same name means the same thing in every path.
PATH_FIELDS: dict[str, Schema] = {
    "image_id": schemas.IMAGE_ID,
    "name": schemas.NAME,
    "table": schemas.NAME,
    "upload_id": {"type": "string", "minLength": 1, "maxLength": 64},
    "key": {"type": "string"},
}


def page(key: str, item: Schema, grammar: CursorGrammar) -> Schema:
    """A page of a listing: ``key`` holds the items, ``next_cursor`` where the next page starts."""
    return obj({key: {"type": "array", "items": item}, "next_cursor": cursor(grammar) | {"type": ["string", "null"]}})


def cursor(grammar: CursorGrammar) -> Schema:
    return {"type": "string", "pattern": grammar.pattern}


def query(name: str, schema: Schema, description: str) -> Schema:
    """An optional query parameter."""
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def paging(grammar: CursorGrammar) -> tuple[Schema, ...]:
    """The ``limit`` and ``cursor`` parameters of a listing in ``grammar``'s order."""
    return (
        query("limit", schemas.LIMIT, f"page size (default {DEFAULT_LIMIT})"),
        query("cursor", cursor(grammar), "the previous page's `next_cursor`; any other string answers 400"),
    )
