"""``/v1/retention``, ``/v1/erasures`` and ``/v1/audit``: retention policies, erasures with their
receipts, and the audit (read only: no route changes or deletes an entry). The work is
:mod:`heartbeat.privacy`'s; erasures run in the server's background thread."""

from __future__ import annotations

from typing import Any

import falcon

from heartbeat.api import schemas
from heartbeat.api.components import NUMBER_OR_NULL, STRING_OR_NULL, obj, page, paging
from heartbeat.api.components import query as parameter
from heartbeat.api.params import page_limit, query, read_body, token_of
from heartbeat.api.routing import Operation, Parts, Reply, Route, json_body
from heartbeat.auth.roles import Access
from heartbeat.db.paging import NAME_ORDER
from heartbeat.privacy import audit, erasure, retention
from heartbeat.privacy.actions import ACTIONS
from heartbeat.privacy.audit import ENTRY_ORDER, Audit, AuditFilter
from heartbeat.privacy.chores import PrivacyChores
from heartbeat.privacy.erasure import ERASURE_ORDER, MAX_IDS, Erasures
from heartbeat.privacy.retention import RetentionPolicies

POLICY = "/v1/retention/{policy}"
ERASURE = "/v1/erasures/{erasure_id}"
MAX_AGE_SECONDS = 10**10  # about 317 years

NEW_POLICY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": schemas.NAME,
        "where": schemas.WHERE,
        "max_age_seconds": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": MAX_AGE_SECONDS,
            "description": "images uploaded longer ago than this that match `where` are erased",
        },
    },
    "required": ["name", "where", "max_age_seconds"],
    "additionalProperties": False,
}
NEW_ERASURE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "where": schemas.WHERE,
        "image_ids": {"type": "array", "items": schemas.IMAGE_ID, "minItems": 1, "maxItems": MAX_IDS},
    },
    "minProperties": 1,
    "maxProperties": 1,
    "additionalProperties": False,
    "description": "either `where` (every image it matches) or `image_ids` (those that exist)",
}
POLICY_SCHEMA: dict[str, Any] = obj(
    {
        "name": {"type": "string"},
        "where": {"type": "string"},
        "max_age_seconds": {"type": "number"},
        "created_at": {"type": "number"},
        "last_run_at": NUMBER_OR_NULL,
    }
)
RECEIPT_SCHEMA: dict[str, Any] = obj(
    {
        "id": {"type": "string"},
        "status": {"enum": [erasure.RUNNING, erasure.DONE]},
        "matched": {"type": "integer", "minimum": 0},
        "erased": {"type": "integer", "minimum": 0},
        "started_at": {"type": "number"},
        "finished_at": NUMBER_OR_NULL,
        "policy": STRING_OR_NULL | {"description": "the retention policy whose run it is, else null"},
    }
)
ENTRY_SCHEMA: dict[str, Any] = obj(
    {
        "id": {"type": "string"},
        "time": {"type": "number"},
        "token_id": STRING_OR_NULL | {"description": "null for an open server or a command run on the database"},
        "action": {"enum": list(ACTIONS)},
        "image_ids": {"type": "array", "items": {"type": "string"}},
        "detail": {"type": "object", "description": "IDs, counts and names of ours: never a filename or an origin"},
    }
)
AUDIT_PAGE = page("entries", ENTRY_SCHEMA, ENTRY_ORDER)
ACTION: dict[str, Any] = {"enum": list(ACTIONS)}
TOKEN_ID: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 16}


class RetentionCollection:
    def __init__(self, policies: RetentionPolicies):
        self._policies = policies

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        listed, next_cursor = self._policies.page(req.get_param("cursor"), page_limit(req))
        resp.media = {"policies": [retention.describe(policy) for policy in listed], "next_cursor": next_cursor}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        media = read_body(req, NEW_POLICY)
        policy = self._policies.add(media["name"], media["where"], float(media["max_age_seconds"]))
        resp.media = retention.describe(policy)
        resp.status = falcon.HTTP_201
        resp.location = req.prefix + POLICY.format(policy=policy.name)


class RetentionItem:
    def __init__(self, policies: RetentionPolicies):
        self._policies = policies

    def on_get(self, req: falcon.Request, resp: falcon.Response, policy: str) -> None:
        resp.media = retention.describe(self._policies.get(policy))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, policy: str) -> None:
        self._policies.remove(policy)
        resp.status = falcon.HTTP_204


class ErasureCollection:
    def __init__(self, erasures: Erasures, chores: PrivacyChores):
        self._erasures = erasures
        self._chores = chores

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        listed, next_cursor = self._erasures.page(req.get_param("cursor"), page_limit(req))
        resp.media = {"erasures": [erasure.describe(item) for item in listed], "next_cursor": next_cursor}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        media = read_body(req, NEW_ERASURE)
        started = self._erasures.start(
            expression=media.get("where"), image_ids=media.get("image_ids"), token_id=token_of(req)
        )
        self._chores.wake()
        resp.media = erasure.describe(started)
        resp.status = falcon.HTTP_202
        resp.location = req.prefix + ERASURE.format(erasure_id=started.id)


class ErasureItem:
    def __init__(self, erasures: Erasures):
        self._erasures = erasures

    def on_get(self, req: falcon.Request, resp: falcon.Response, erasure_id: str) -> None:
        resp.media = erasure.describe(self._erasures.get(erasure_id))


class AuditLog:
    def __init__(self, audit: Audit):
        self._audit = audit

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        which = AuditFilter(
            image_id=query(req, "image_id", schemas.IMAGE_ID),
            token_id=query(req, "token_id", TOKEN_ID),
            action=query(req, "action", ACTION),
        )
        entries, next_cursor = self._audit.page(which, req.get_param("after"), page_limit(req))
        resp.media = {"entries": [audit.describe_entry(entry) for entry in entries], "next_cursor": next_cursor}


# --- its routes ----------------------------------------------------------------------------------


def retention_collection(parts: Parts) -> RetentionCollection:
    return RetentionCollection(parts.retention)


def retention_item(parts: Parts) -> RetentionItem:
    return RetentionItem(parts.retention)


def erasure_collection(parts: Parts) -> ErasureCollection:
    return ErasureCollection(parts.erasures, parts.chores)


def erasure_item(parts: Parts) -> ErasureItem:
    return ErasureItem(parts.erasures)


def audit_log(parts: Parts) -> AuditLog:
    return AuditLog(parts.audit)


ROUTES: list[Route] = [
    Route(
        "/v1/retention",
        retention_collection,
        {
            "GET": Operation(
                Access.ADMIN,
                "every retention policy, by name",
                Reply(200, page("policies", POLICY_SCHEMA, NAME_ORDER)),
                errors=(400,),
                parameters=paging(NAME_ORDER),
            ),
            "POST": Operation(
                Access.ADMIN,
                "a retention policy: images matching `where` and older than `max_age_seconds` are erased by the "
                "server (every trace, as DELETE erases) within HEARTBEAT_RETENTION_INTERVAL_SECONDS of coming due",
                Reply(201, POLICY_SCHEMA),
                errors=(400, 409),
                body=json_body(NEW_POLICY),
            ),
        },
    ),
    Route(
        POLICY,
        retention_item,
        {
            "GET": Operation(Access.ADMIN, "one retention policy", Reply(200, POLICY_SCHEMA), errors=(404,)),
            "DELETE": Operation(
                Access.ADMIN, "remove the policy (a run it started goes on to its end)", Reply(204), errors=(404,)
            ),
        },
    ),
    Route(
        "/v1/erasures",
        erasure_collection,
        {
            "GET": Operation(
                Access.ADMIN,
                "every erasure's receipt, by ID",
                Reply(200, page("erasures", RECEIPT_SCHEMA, ERASURE_ORDER)),
                errors=(400,),
                parameters=paging(ERASURE_ORDER),
            ),
            "POST": Operation(
                Access.ADMIN,
                "erase every image `where` matches (or those of `image_ids` that exist) in the background, "
                "every trace as DELETE erases; the receipt says how far it is",
                Reply(202, RECEIPT_SCHEMA),
                errors=(400,),
                body=json_body(NEW_ERASURE),
            ),
        },
    ),
    Route(
        ERASURE,
        erasure_item,
        {
            "GET": Operation(
                Access.ADMIN,
                "an erasure's receipt (it survives a restart and names no image, filename or origin)",
                Reply(200, RECEIPT_SCHEMA),
                errors=(404,),
            )
        },
    ),
    Route(
        "/v1/audit",
        audit_log,
        {
            "GET": Operation(
                Access.ADMIN,
                "the audit, oldest first: each access handed out to picture bytes or results in bulk, and each "
                "deletion, erasure, retention run and token change",
                Reply(200, AUDIT_PAGE),
                errors=(400,),
                parameters=(
                    parameter("limit", schemas.LIMIT, "page size (default 100)"),
                    parameter(
                        "after", {"type": "string", "pattern": ENTRY_ORDER.pattern}, "the previous page's `next_cursor`"
                    ),
                    parameter("image_id", schemas.IMAGE_ID, "only entries that name this image"),
                    parameter("token_id", TOKEN_ID, "only entries of requests made with this token"),
                    parameter("action", ACTION, "only entries of this action"),
                ),
            )
        },
    ),
]
