"""``GET /openapi.json``: an OpenAPI 3.1 document of every route.

Request bodies are the very schemas ``read_body`` checks (``api/schemas.py``); the responses are
described here. ``tests/test_openapi.py`` keeps the document and the routes in step, and the
schemathesis run checks the answers against it.
"""

from __future__ import annotations

from typing import Any

import falcon

from heartbeat import __version__
from heartbeat.api import schemas
from heartbeat.paging import DEFAULT_LIMIT, NAME_ORDER, ROW_ORDER, UPLOAD_ORDER, CursorGrammar
from heartbeat.registry import STATUSES

Schema = dict[str, Any]

NUMBER_OR_NULL: Schema = {"type": ["number", "null"]}
STRING_OR_NULL: Schema = {"type": ["string", "null"]}
STATUS: Schema = {"enum": list(STATUSES)}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Schema], required: tuple[str, ...] | None = None) -> Schema:
    return {"type": "object", "properties": properties, "required": list(required or properties)}


COMPONENTS: dict[str, Schema] = {
    "Error": _object({"title": {"type": "string"}, "description": {"type": "string"}}, ("title",)),
    "Image": _object(
        {
            "id": schemas.IMAGE_ID,
            "filename": {"type": "string"},
            "uploaded_date": {"type": "number"},
            "origin": STRING_OR_NULL,
            "other_data": {"type": ["object", "null"]},
            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "size": {"type": "integer", "minimum": 0},
            "content_type": {"type": "string"},
            "width": {"type": "integer", "minimum": 1},
            "height": {"type": "integer", "minimum": 1},
            "priority": schemas.PRIORITY,
        }
    ),
    "Counts": _object({status: {"type": "integer", "minimum": 0} for status in STATUSES}),
    "Software": _object(
        {
            "name": schemas.NAME,
            "lease_seconds": {"type": "integer"},
            "max_attempts": {"type": "integer"},
            "tables": {"type": "object", "additionalProperties": {"type": "object"}},
            "paused": {"type": "boolean"},
            "after": {"type": "array", "items": schemas.NAME},
            "origins": {"type": ["array", "null"], "items": {"type": "string"}},
            "counts": _ref("Counts"),
            "throughput": _object(
                {
                    "window_seconds": {"type": "integer", "minimum": 1},
                    "done": {"type": "integer", "minimum": 0},
                    "failed": {"type": "integer", "minimum": 0},
                }
            ),
        }
    ),
    "Job": _object(
        {
            "image_id": schemas.IMAGE_ID,
            "status": STATUS,
            "info": {},
            "attempts": {"type": "integer", "minimum": 0},
            "claimed_at": NUMBER_OR_NULL,
            "lease_expires_at": NUMBER_OR_NULL,
            "finished_at": NUMBER_OR_NULL,
            "error": STRING_OR_NULL,
        }
    ),
    "ClaimedJob": _object(
        {
            "image_id": schemas.IMAGE_ID,
            "token": {"type": "string"},
            "attempt": {"type": "integer", "minimum": 1},
            "lease_expires_at": {"type": "number"},
            "url": {"type": "string"},
            "url_expires_at": {"type": "number"},
            "image": _ref("Image"),
            "upstream": {
                "type": "object",
                "description": "for a software with `after`: each upstream software's `info` for this image",
            },
        },
        ("image_id", "token", "attempt", "lease_expires_at", "url", "url_expires_at", "image"),
    ),
    "SignedUrl": _object({"url": {"type": "string"}, "expires_at": {"type": "number"}}),
    "Upload": _object(
        {
            "upload_id": {"type": "string", "minLength": 1, "maxLength": 32},
            "url": {"type": "string"},
            "method": {"const": "PUT"},
            "expires_at": {"type": "number"},
            "max_bytes": {"type": "integer", "minimum": 1},
        }
    ),
}

IMAGE_WITH_JOBS: Schema = {
    "allOf": [_ref("Image"), _object({"jobs": {"type": "object", "additionalProperties": STATUS}})]
}
UPLOADED: Schema = {"allOf": [_ref("Image"), _object({"duplicate": {"type": "boolean"}})]}


def _page(key: str, item: Schema, grammar: CursorGrammar) -> Schema:
    return _object(
        {key: {"type": "array", "items": item}, "next_cursor": _cursor(grammar) | {"type": ["string", "null"]}}
    )


def _cursor(grammar: CursorGrammar) -> Schema:
    return {"type": "string", "pattern": grammar.pattern}


def _path(name: str, schema: Schema | None = None) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _paging(grammar: CursorGrammar) -> list[Schema]:
    return [
        _query("limit", schemas.LIMIT, f"page size (default {DEFAULT_LIMIT})"),
        _query("cursor", _cursor(grammar), "the previous page's `next_cursor`; any other string answers 400"),
    ]


IMAGE_ID_PARAM = _path("image_id", schemas.IMAGE_ID)
NAME_PARAM = _path("name", schemas.NAME)

ERRORS = {
    "400": "bad field or body",
    "401": "no token, or an unknown or revoked one",
    "403": "the token's role does not allow this",
    "404": "unknown image, software or table",
    "409": "stale or wrong token, or a conflict",
    "413": "too large",
    "415": "not a supported image, or a body that is not JSON",
    "422": "well-formed but refused",
    "503": "the database or the object store is unreachable, or the server is busy (too many uploads by URL "
    "at once); `Retry-After` says when to try again",
}
RETRY_AFTER: Schema = {
    "description": "seconds to wait before trying again",
    "schema": {"type": "integer", "minimum": 1},
}


def _json(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _operation(
    summary: str,
    ok: tuple[int, Schema | None] | list[tuple[int, Schema | None]],
    *,
    errors: str = "",
    body: Schema | None = None,
    body_optional: bool = False,
    parameters: list[Schema] | None = None,
    public: bool = False,
) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, schema in ok if isinstance(ok, list) else [ok]:
        responses[str(status)] = {"description": summary} | ({"content": _json(schema)} if schema else {})
    codes = ([] if public else ["401", "403"]) + errors.split()
    for code in sorted(codes):
        responses[code] = {"description": ERRORS[code], "content": _json(_ref("Error"))}
        if code == "503":
            responses[code]["headers"] = {"Retry-After": RETRY_AFTER}
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": not body_optional, "content": _json(body)}
    if public:
        operation["security"] = []
    return operation


def _upload_form() -> dict[str, Any]:
    fields = schemas.UPLOAD_FORM_FIELDS
    url = fields["properties"]["url"]
    form = fields | {
        # An empty field counts as absent, so the url field may be empty where a file is sent.
        "properties": {"file": {"type": "string", "format": "binary"}}
        | fields["properties"]
        | {"url": url | {"minLength": 0}},
        "oneOf": [
            {"required": ["file"], "properties": {"url": {"maxLength": 0}}},
            {"required": ["url"], "properties": {"url": {"minLength": 1}, "file": False}},
        ],
        "description": "`file` (the bytes) or `url` (the server fetches it), not both; an empty field counts as "
        "absent. Bytes that are not a supported image answer 415, too many bytes or pixels 413.",
    }
    encoding = {"other_data": {"contentType": "application/json"}}
    return {
        "required": True,
        "content": {"multipart/form-data": {"schema": form, "encoding": encoding}} | _json(schemas.IMAGE_BY_URL),
    }


def _claim_operation() -> dict[str, Any]:
    operation = _operation(
        "lease the earliest-uploaded claimable jobs, waiting up to `wait_seconds` for one. A process lets at "
        "most --max-waiting-claims claims wait at once: a claim beyond that which finds no job is answered at "
        "once with no jobs and `Retry-After`",
        (200, _object({"jobs": {"type": "array", "items": _ref("ClaimedJob")}})),
        errors="400 404",
        body=schemas.CLAIM,
        body_optional=True,
    )
    operation["responses"]["200"]["headers"] = {
        "Retry-After": RETRY_AFTER | {"description": "with no jobs: no room to wait; claim again after this long"}
    }
    return operation


def _paths() -> dict[str, Any]:
    job = [NAME_PARAM, IMAGE_ID_PARAM]
    upload = _operation(
        "upload an image: multipart `file` or `url`, or a JSON body with `url`. A malformed url (host, port, "
        "IPv6 brackets, spaces, control characters, user info), one the address guard refuses, or a fetch past "
        "HEARTBEAT_URL_DEADLINE_SECONDS answers 422; more uploads by URL at once than --max-url-fetches, 503",
        [(201, UPLOADED), (200, UPLOADED)],
        errors="400 413 415 422 503",
    )
    upload["requestBody"] = _upload_form()
    return {
        "/": {
            "get": {
                "summary": "the dashboard page",
                "security": [],
                "responses": {"200": {"description": "the dashboard", "content": {"text/html": {}}}},
            }
        },
        "/v1/health": {
            "get": _operation(
                "whether the database and the object store answer",
                [(200, {"type": "object"}), (503, {"type": "object"})],
                public=True,
            )
        },
        "/v1/images": {
            "get": _operation(
                "images, oldest first",
                (200, _page("images", _ref("Image"), UPLOAD_ORDER)),
                errors="400 404",
                parameters=[
                    *_paging(UPLOAD_ORDER),
                    _query("origin", schemas.TEXT, "only images of this origin"),
                    _query("status", schemas.IMAGE_STATUS, schemas.IMAGE_STATUS["description"]),
                    _query("order", schemas.ORDER, "oldest first (default) or newest first"),
                    _query(
                        "include",
                        schemas.INCLUDE,
                        "`jobs` (each software's job status), `thumbnail` (a presigned `thumbnail_url`)",
                    ),
                ],
            ),
            "post": upload,
        },
        "/v1/images/{image_id}": {
            "parameters": [IMAGE_ID_PARAM],
            "get": _operation("the image, with each software's job status", (200, IMAGE_WITH_JOBS), errors="404"),
            "patch": _operation(
                "change the image's priority", (200, IMAGE_WITH_JOBS), errors="400 404", body=schemas.IMAGE_CHANGES
            ),
            "delete": _operation(
                "delete the image, its jobs and rows, then its bytes (bytes a failing store keeps are removed by "
                "`heartbeat check --fix`)",
                (204, None),
                errors="404 503",
            ),
        },
        "/v1/images/{image_id}/url": {
            "parameters": [IMAGE_ID_PARAM],
            "get": _operation(
                "a presigned GET URL for the bytes (404 also when the store has lost them)",
                (200, _ref("SignedUrl")),
                errors="404 503",
            ),
        },
        "/v1/images/{image_id}/thumbnail": {
            "parameters": [IMAGE_ID_PARAM],
            "get": _operation("a redirect to a presigned URL of the image's thumbnail", (307, None), errors="404"),
        },
        "/v1/images/{image_id}/content": {
            "parameters": [IMAGE_ID_PARAM],
            "get": _operation("a redirect to the presigned URL", (307, None), errors="404 503"),
        },
        "/v1/blobs/{key}": {
            "parameters": [_path("key")],
            "get": _operation(
                "the bytes behind a URL this server signed (local storage)",
                (200, None),
                errors="403 404",
                parameters=[
                    _query("expires", {"type": "string"}, "from the signed URL"),
                    _query("signature", {"type": "string"}, "from the signed URL"),
                ],
                public=True,
            ),
            "put": {
                **_operation(
                    "the bytes of a direct upload, to a PUT URL this server signed (local storage)",
                    (204, None),
                    errors="403 404 413",
                    parameters=[
                        _query("expires", {"type": "string"}, "from the signed URL"),
                        _query("signature", {"type": "string"}, "from the signed URL"),
                    ],
                    public=True,
                ),
                "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {}}}},
            },
        },
        "/v1/uploads": {
            "post": _operation(
                "start a direct upload: a presigned URL to PUT the bytes to, straight into the store",
                (201, _ref("Upload")),
                errors="400 503",
                body=schemas.UPLOAD,
                body_optional=True,
            ),
        },
        "/v1/uploads/{upload_id}/complete": {
            "parameters": [_path("upload_id", {"type": "string", "minLength": 1, "maxLength": 64})],
            "post": _operation(
                "check the uploaded bytes as an upload and register the image (refused bytes are deleted)",
                [(201, UPLOADED), (200, UPLOADED)],
                errors="400 404 409 413 415 503",
                body=schemas.UPLOAD_COMPLETE,
                body_optional=True,
            ),
        },
        "/v1/software": {
            "get": _operation(
                "every software with its job counts, by name",
                (200, _page("software", _ref("Software"), NAME_ORDER)),
                errors="400",
                parameters=_paging(NAME_ORDER),
            ),
            "post": _operation(
                "register a software; existing images get a pending job",
                (201, _ref("Software")),
                errors="400 409 422",
                body=schemas.SOFTWARE,
            ),
        },
        "/v1/software/{name}": {
            "parameters": [NAME_PARAM],
            "get": _operation("one software", (200, _ref("Software")), errors="404"),
        },
        "/v1/software/{name}/requeue": {
            "parameters": [NAME_PARAM],
            "post": _operation(
                "failed or done jobs back to pending",
                (200, _object({"requeued": {"type": "integer", "minimum": 0}})),
                errors="400 404",
                body=schemas.REQUEUE,
            ),
        },
        "/v1/software/{name}/pause": {
            "parameters": [NAME_PARAM],
            "post": _operation("pause: claims find no jobs until resumed", (200, _ref("Software")), errors="404"),
        },
        "/v1/software/{name}/resume": {
            "parameters": [NAME_PARAM],
            "post": _operation("resume a paused software", (200, _ref("Software")), errors="404"),
        },
        "/v1/software/{name}/claim": {
            "parameters": [NAME_PARAM],
            "post": _claim_operation(),
        },
        "/v1/software/{name}/results": {
            "parameters": [NAME_PARAM],
            "post": _operation(
                "submit many results; each judged on its own",
                (
                    200,
                    _object(
                        {
                            "results": {
                                "type": "array",
                                "items": _object(
                                    {
                                        "image_id": STRING_OR_NULL,
                                        "status": {"enum": ["done", "stale", "invalid"]},
                                        "description": {"type": "string"},
                                    },
                                    ("image_id", "status"),
                                ),
                            }
                        }
                    ),
                ),
                errors="400 404",
                body=schemas.BATCH_RESULTS,
            ),
        },
        "/v1/software/{name}/jobs": {
            "parameters": [NAME_PARAM],
            "get": _operation(
                "the software's jobs, in upload order",
                (200, _page("jobs", _ref("Job"), UPLOAD_ORDER)),
                errors="400 404",
                parameters=[*_paging(UPLOAD_ORDER), _query("status", schemas.JOB_STATUS, "only jobs with this status")],
            ),
        },
        "/v1/software/{name}/jobs/{image_id}": {
            "parameters": job,
            "get": _operation("one job", (200, _ref("Job")), errors="404"),
        },
        "/v1/software/{name}/jobs/{image_id}/extend": {
            "parameters": job,
            "post": _operation(
                "extend the lease",
                (200, _object({"lease_expires_at": {"type": "number"}})),
                errors="400 404 409",
                body=schemas.EXTEND,
            ),
        },
        "/v1/software/{name}/jobs/{image_id}/result": {
            "parameters": job,
            "put": _operation(
                "submit the result and extra-table rows",
                (200, _ref("Job")),
                errors="400 404 409 422",
                body=schemas.RESULT,
            ),
        },
        "/v1/software/{name}/jobs/{image_id}/fail": {
            "parameters": job,
            "post": _operation(
                "report a failure: retry after a backoff, or failed",
                (200, _ref("Job")),
                errors="400 404 409",
                body=schemas.FAIL,
            ),
        },
        "/v1/software/{name}/jobs/{image_id}/release": {
            "parameters": job,
            "post": _operation(
                "give the job back at once", (200, _ref("Job")), errors="400 404 409", body=schemas.RELEASE
            ),
        },
        "/v1/software/{name}/tables/{table}": {
            "parameters": [NAME_PARAM, _path("table", schemas.NAME)],
            "get": _operation(
                "rows of one of the software's extra tables",
                (200, _page("rows", _object({"id": {"type": "integer"}, "image_id": {"type": "string"}}), ROW_ORDER)),
                errors="400 404",
                parameters=[*_paging(ROW_ORDER), _query("image_id", schemas.TEXT, "only this image's rows")],
            ),
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {"description": "the Prometheus text format", "content": {"text/plain": {}}},
                    "401": {"description": ERRORS["401"], "content": _json(_ref("Error"))},
                    "403": {"description": ERRORS["403"], "content": _json(_ref("Error"))},
                },
            }
        },
        "/openapi.json": {"get": _operation("this document", (200, {"type": "object"}))},
    }


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Heartbeat",
            "version": __version__,
            "description": "A database and work coordinator for images that computer-vision software analyses.",
        },
        "servers": [{"url": "/"}],
        "paths": _paths(),
        "components": {
            "schemas": COMPONENTS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


class OpenApi:
    def __init__(self) -> None:
        self._document = openapi_document()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._document
