"""``/v1/webhooks``: subscribe a URL to events, list and change subscriptions, read their deliveries,
replay events. Sending is :mod:`heartbeat.events.delivery`'s, in the server's background threads."""

from __future__ import annotations

from typing import Any

import falcon

from heartbeat.api import schemas
from heartbeat.api.components import NUMBER_OR_NULL, STRING_OR_NULL, obj, page, paging
from heartbeat.api.components import query as parameter
from heartbeat.api.events import CURSOR_SCHEMA
from heartbeat.api.params import page_limit, query, read_body
from heartbeat.api.routing import Operation, Parts, Reply, Route, json_body
from heartbeat.auth.roles import Access
from heartbeat.events.feed import NOW, EventFeed
from heartbeat.events.outbox import EVENT_TYPES
from heartbeat.events.webhooks import (
    DELIVERY_STATUSES,
    POSITION_ORDER,
    WEBHOOK_ORDER,
    Webhooks,
    describe,
    describe_delivery,
)

WEBHOOK = "/v1/webhooks/{webhook_id}"
MAX_URL_CHARS = 2048  # the column's width

URL: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_URL_CHARS,
    "pattern": "^[hH][tT][tT][pP][sS]?://",
    "description": "http(s); 422 when it is malformed, its host does not resolve or is an internal address "
    "that HEARTBEAT_URL_ALLOW does not allow (the rules of an upload by URL)",
}
TYPES: dict[str, Any] = {
    "type": ["array", "null"],
    "items": {"enum": list(EVENT_TYPES)},
    "minItems": 1,
    "description": "the event types it receives; null or absent: every type",
}
SOFTWARE: dict[str, Any] = schemas.NAME | {
    "type": ["string", "null"],
    "description": "only this software's events; null or absent: any",
}


def _body(required: tuple[str, ...]) -> dict[str, Any]:
    properties = {"url": URL, "types": TYPES, "software": SOFTWARE}
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


NEW_WEBHOOK = _body(("url",))
WEBHOOK_CHANGES = _body(())
REPLAY = {
    "type": "object",
    "properties": {"after": CURSOR_SCHEMA},
    "required": ["after"],
    "additionalProperties": False,
}
STATUS: dict[str, Any] = {"enum": list(DELIVERY_STATUSES)}

WEBHOOK_SCHEMA: dict[str, Any] = obj(
    {
        "id": {"type": "string"},
        "url": {"type": "string"},
        "types": {"type": ["array", "null"], "items": {"enum": list(EVENT_TYPES)}},
        "software": STRING_OR_NULL,
        "created_at": {"type": "number"},
    }
)
CREATED_SCHEMA: dict[str, Any] = obj(
    WEBHOOK_SCHEMA["properties"]
    | {
        "secret": {
            "type": "string",
            "pattern": "^whsec_[A-Za-z0-9+/]+={0,2}$",
            "description": "shown this once: verify each delivery with it (Standard Webhooks)",
        }
    }
)
DELIVERY_SCHEMA: dict[str, Any] = obj(
    {
        "event_id": {"type": "string"},
        "status": STATUS,
        "attempts": {"type": "integer", "minimum": 0},
        "last_status_code": {"type": ["integer", "null"]},
        "last_error": STRING_OR_NULL,
        "next_attempt_at": NUMBER_OR_NULL | {"description": "null once delivered or failed"},
    }
)


class WebhookCollection:
    def __init__(self, webhooks: Webhooks):
        self._webhooks = webhooks

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        listed, next_cursor = self._webhooks.page(req.get_param("cursor"), page_limit(req))
        resp.media = {"webhooks": [describe(webhook) for webhook in listed], "next_cursor": next_cursor}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        media = read_body(req, NEW_WEBHOOK)
        webhook = self._webhooks.create(media["url"], media.get("types"), media.get("software"))
        resp.media = describe(webhook, secret=True)
        resp.status = falcon.HTTP_201
        resp.location = req.prefix + WEBHOOK.format(webhook_id=webhook.id)


class WebhookItem:
    def __init__(self, webhooks: Webhooks, feed: EventFeed):
        self._webhooks = webhooks
        self._feed = feed

    def on_get(self, req: falcon.Request, resp: falcon.Response, webhook_id: str) -> None:
        resp.media = describe(self._webhooks.get(webhook_id))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, webhook_id: str) -> None:
        changes = read_body(req, WEBHOOK_CHANGES)
        resp.media = describe(self._webhooks.change(webhook_id, changes))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, webhook_id: str) -> None:
        self._webhooks.delete(webhook_id)
        resp.status = falcon.HTTP_204

    def on_get_deliveries(self, req: falcon.Request, resp: falcon.Response, webhook_id: str) -> None:
        status = query(req, "status", STATUS)
        listed, next_cursor = self._webhooks.deliveries(webhook_id, status, req.get_param("cursor"), page_limit(req))
        resp.media = {"deliveries": [describe_delivery(item) for item in listed], "next_cursor": next_cursor}

    def on_post_replay(self, req: falcon.Request, resp: falcon.Response, webhook_id: str) -> None:
        media = read_body(req, REPLAY)
        self._webhooks.get(webhook_id)
        after = self._feed.position(media["after"])  # 400 for a cursor the server did not make, 410 past retention
        resp.media = {"replayed": self._webhooks.replay(webhook_id, after, self._feed.position(NOW))}


# --- its routes ----------------------------------------------------------------------------------


def webhook_collection(parts: Parts) -> WebhookCollection:
    return WebhookCollection(parts.webhooks)


def webhook_item(parts: Parts) -> WebhookItem:
    return WebhookItem(parts.webhooks, parts.events)


ROUTES: list[Route] = [
    Route(
        "/v1/webhooks",
        webhook_collection,
        {
            "GET": Operation(
                Access.ADMIN,
                "every webhook, by ID (without its secret)",
                Reply(200, page("webhooks", WEBHOOK_SCHEMA, WEBHOOK_ORDER)),
                errors=(400,),
                parameters=paging(WEBHOOK_ORDER),
            ),
            "POST": Operation(
                Access.ADMIN,
                "subscribe a URL to events: each is POSTed to it, signed as Standard Webhooks say",
                Reply(201, CREATED_SCHEMA),
                errors=(400, 422),
                body=json_body(NEW_WEBHOOK),
            ),
        },
    ),
    Route(
        WEBHOOK,
        webhook_item,
        {
            "GET": Operation(Access.ADMIN, "one webhook", Reply(200, WEBHOOK_SCHEMA), errors=(404,)),
            "PATCH": Operation(
                Access.ADMIN,
                "change its url, types or software",
                Reply(200, WEBHOOK_SCHEMA),
                errors=(400, 404, 422),
                body=json_body(WEBHOOK_CHANGES),
            ),
            "DELETE": Operation(Access.ADMIN, "remove it and its deliveries", Reply(204), errors=(404,)),
        },
    ),
    Route(
        WEBHOOK + "/deliveries",
        webhook_item,
        {
            "GET": Operation(
                Access.READ,
                "its deliveries in event order, of one status if asked",
                Reply(200, page("deliveries", DELIVERY_SCHEMA, POSITION_ORDER)),
                errors=(400, 404),
                parameters=(*paging(POSITION_ORDER), parameter("status", STATUS, "only deliveries of this status")),
            )
        },
        suffix="deliveries",
    ),
    Route(
        WEBHOOK + "/replay",
        webhook_item,
        {
            "POST": Operation(
                Access.ADMIN,
                "deliver again every kept event after the cursor `after` that it receives",
                Reply(200, obj({"replayed": {"type": "integer", "minimum": 0}})),
                errors=(400, 404, 410),
                body=json_body(REPLAY),
            )
        },
        suffix="replay",
    ),
]
