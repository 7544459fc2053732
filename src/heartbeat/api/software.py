"""``/v1/software``: register and read software, read their extra tables, requeue jobs."""

from __future__ import annotations

import falcon

from heartbeat.api import schemas
from heartbeat.api.components import obj, page, paging, ref
from heartbeat.api.components import query as parameter
from heartbeat.api.params import page_limit, query, read_body
from heartbeat.api.routing import Operation, Parts, Reply, Route, json_body
from heartbeat.auth.roles import Access
from heartbeat.catalog.extra_rows import read_rows
from heartbeat.catalog.registry import Registry
from heartbeat.db.paging import NAME_ORDER, ROW_ORDER
from heartbeat.queue import JobQueue

SOFTWARE = "/v1/software/{name}"  # also where a registration's Location points


class SoftwareCollection:
    def __init__(self, registry: Registry):
        self._registry = registry

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        listed, next_cursor = self._registry.page(req.get_param("cursor"), page_limit(req))
        resp.media = {"software": [self._registry.describe(item) for item in listed], "next_cursor": next_cursor}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        media = read_body(req, schemas.SOFTWARE)
        software = self._registry.register(
            media["name"],
            lease_seconds=media.get("lease_seconds"),
            max_attempts=media.get("max_attempts"),
            tables=media.get("tables"),
            after=media.get("after"),
            origins=media.get("origins"),
            max_in_flight=media.get("max_in_flight"),
            rate=media.get("rate"),
            **({"version": media["version"]} if "version" in media else {}),
        )
        resp.media = self._registry.describe(software)
        resp.status = falcon.HTTP_201
        resp.location = req.prefix + SOFTWARE.format(name=software.name)


class SoftwareItem:
    def __init__(self, registry: Registry, queue: JobQueue):
        self._registry = registry
        self._queue = queue

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = self._registry.describe(self._registry.fresh(name))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        media = read_body(req, schemas.SOFTWARE_PATCH)
        resp.media = self._registry.describe(self._registry.change(name, media))
        self._queue.signal.notify(name)  # resumed, or jobs reopened: waiting claims look again at once

    def on_post_pause(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = self._registry.describe(self._registry.set_paused(name, True))

    def on_post_resume(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = self._registry.describe(self._registry.set_paused(name, False))
        self._queue.signal.notify(name)  # waiting claims look again at once

    def on_post_requeue(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        software = self._registry.get(name)
        media = read_body(req, schemas.REQUEUE)
        where = self._registry.where(media.get("where"))
        count = self._queue.claims.requeue(software, media["status"], media.get("image_ids"), where)
        resp.media = {"requeued": count}


class ExtraTable:
    def __init__(self, registry: Registry):
        self._registry = registry

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str, table: str) -> None:
        software = self._registry.get(name)
        shown, next_cursor = read_rows(
            software,
            table,
            image_id=query(req, "image_id", schemas.TEXT),
            cursor=req.get_param("cursor"),
            limit=page_limit(req),
        )
        resp.media = {"rows": shown, "next_cursor": next_cursor}


# --- its routes ----------------------------------------------------------------------------------


def software_collection(parts: Parts) -> SoftwareCollection:
    return SoftwareCollection(parts.registry)


def software_item(parts: Parts) -> SoftwareItem:
    return SoftwareItem(parts.registry, parts.queue)


def extra_table(parts: Parts) -> ExtraTable:
    return ExtraTable(parts.registry)


ROUTES: list[Route] = [
    Route(
        "/v1/software",
        software_collection,
        {
            "GET": Operation(
                Access.READ,
                "every software with its job counts, by name",
                Reply(200, page("software", ref("Software"), NAME_ORDER)),
                errors=(400,),
                parameters=paging(NAME_ORDER),
            ),
            "POST": Operation(
                Access.ADMIN,
                "register a software; existing images get a pending job",
                Reply(201, ref("Software")),
                errors=(400, 409, 422),
                body=json_body(schemas.SOFTWARE),
            ),
        },
    ),
    Route(
        SOFTWARE,
        software_item,
        {
            "GET": Operation(Access.READ, "one software", Reply(200, ref("Software")), errors=(404,)),
            "PATCH": Operation(
                Access.ADMIN,
                "change its version (a new one reopens the done jobs of other versions unless "
                "`recompute` is false), lease_seconds, max_attempts or paused",
                Reply(200, ref("Software")),
                errors=(400, 404),
                body=json_body(schemas.SOFTWARE_PATCH),
            ),
        },
    ),
    Route(
        "/v1/software/{name}/requeue",
        software_item,
        {
            "POST": Operation(
                Access.ADMIN,
                "failed or done jobs back to pending",
                Reply(200, obj({"requeued": {"type": "integer", "minimum": 0}})),
                errors=(400, 404),
                body=json_body(schemas.REQUEUE),
            )
        },
        suffix="requeue",
    ),
    Route(
        "/v1/software/{name}/pause",
        software_item,
        {
            "POST": Operation(
                Access.ADMIN, "pause: claims find no jobs until resumed", Reply(200, ref("Software")), errors=(404,)
            )
        },
        suffix="pause",
    ),
    Route(
        "/v1/software/{name}/resume",
        software_item,
        {"POST": Operation(Access.ADMIN, "resume a paused software", Reply(200, ref("Software")), errors=(404,))},
        suffix="resume",
    ),
    Route(
        "/v1/software/{name}/tables/{table}",
        extra_table,
        {
            "GET": Operation(
                Access.READ,
                "rows of one of the software's extra tables",
                Reply(200, page("rows", obj({"id": {"type": "integer"}, "image_id": {"type": "string"}}), ROW_ORDER)),
                errors=(400, 404),
                parameters=(*paging(ROW_ORDER), parameter("image_id", schemas.TEXT, "only this image's rows")),
            )
        },
    ),
]
