"""``/v1/software``: register and read software, read their extra tables, requeue jobs."""

from __future__ import annotations

import falcon

from heartbeat.api import schemas
from heartbeat.api.params import page_limit, query, read_body
from heartbeat.api.routes.software import SOFTWARE
from heartbeat.catalog.extra_rows import read_rows
from heartbeat.catalog.registry import Registry
from heartbeat.queue import JobQueue


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
        count = self._queue.requeue(software, media["status"], media.get("image_ids"), where)
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
