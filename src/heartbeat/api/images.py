"""``/v1/images``: upload (multipart or by URL), list, read, hand out URLs, delete."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import falcon

from heartbeat import jsontext
from heartbeat.api import schemas
from heartbeat.api.params import base_url, page_limit, read_body
from heartbeat.catalog import Catalog, describe_image
from heartbeat.config import Settings
from heartbeat.db.models import Image
from heartbeat.errors import InvalidInput, MissingObject
from heartbeat.ingest import Ingest, Ingested, check_metadata
from heartbeat.metrics import Metrics
from heartbeat.queue import JobQueue
from heartbeat.registry import Registry
from heartbeat.storage import SignedUrl, Storage
from heartbeat.thumbnails import thumbnail_key

FORM_FIELDS = ("url", "origin", "other_data", "priority")
INTEGER = re.compile(r"-?[0-9]{1,10}")


INCLUDES = frozenset({"jobs", "thumbnail"})


class ImageCollection:
    def __init__(
        self, ingest: Ingest, catalog: Catalog, registry: Registry, queue: JobQueue, signer: UrlSigner, metrics: Metrics
    ):
        self._metrics = metrics
        self._ingest = ingest
        self._catalog = catalog
        self._registry = registry
        self._queue = queue
        self._signer = signer

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        order = req.get_param("order", default="oldest")
        if order not in ("oldest", "newest"):
            raise InvalidInput("order must be oldest or newest")
        include = set(req.get_param_as_list("include", delimiter=",", default=[]))
        if include - INCLUDES:
            raise InvalidInput(f"include takes {', '.join(sorted(INCLUDES))}")
        images, cursor = self._catalog.page(
            origin=req.get_param("origin"),
            status=req.get_param("status"),
            cursor=req.get_param("cursor"),
            limit=page_limit(req),
            newest_first=order == "newest",
        )
        described = []
        software = self._registry.all() if "jobs" in include else []
        for image in images:
            item = describe_image(image, self._queue.statuses(image.id, software) if "jobs" in include else None)
            if "thumbnail" in include:
                item["thumbnail_url"] = self._signer.thumbnail(req, image.id).url
            described.append(item)
        resp.media = {"images": described, "next_cursor": cursor}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.content_type and req.content_type.startswith("multipart/form-data"):
            result = self._from_form(req)
        else:
            result = self._from_json(req)
        answer_ingested(req, resp, result, self._metrics)

    def _from_json(self, req: falcon.Request) -> Ingested:
        media = read_body(req, schemas.IMAGE_BY_URL)
        origin, other_data, priority = media.get("origin"), media.get("other_data"), media.get("priority", 0)
        check_metadata(origin, other_data, priority)
        with self._ingest.fetch(media["url"]) as (path, filename):
            return self._ingest.store(path, filename=filename, origin=origin, other_data=other_data, priority=priority)

    def _from_form(self, req: falcon.Request) -> Ingested:
        with contextlib.ExitStack() as stack:
            fields: dict[str, str] = {}
            upload: tuple[Path, str | None] | None = None
            for part in req.get_media():
                if part.name == "file":
                    if upload is not None:
                        raise InvalidInput("send one file per upload")
                    upload = (stack.enter_context(self._ingest.receive(part.stream)), part.filename)
                elif part.name in FORM_FIELDS:
                    text = part.get_text()
                    if text:  # an empty field, as HTML forms send them, counts as absent
                        fields[part.name] = text
                else:
                    raise InvalidInput(f"unknown form field {part.name!r}; expected file, {', '.join(FORM_FIELDS)}")
            origin, other_data = fields.get("origin"), _json_object(fields.get("other_data"))
            priority = _integer(fields.get("priority", "0"), "priority")
            check_metadata(origin, other_data, priority)
            if (upload is None) == ("url" not in fields):
                raise InvalidInput("send either a file or a url")
            if upload is None:
                upload = stack.enter_context(self._ingest.fetch(fields["url"]))
            path, filename = upload
            return self._ingest.store(path, filename=filename, origin=origin, other_data=other_data, priority=priority)


def _integer(text: str, field: str) -> int:
    if not INTEGER.fullmatch(text):  # stricter than int(), which takes " 5" and "1_0"
        raise InvalidInput(f"{field} must be an integer")
    return int(text)


def answer_ingested(req: falcon.Request, resp: falcon.Response, result: Ingested, metrics: Metrics) -> None:
    """201 with the new image and its Location, or 200 with the image those bytes already are."""
    (metrics.uploads if result.created else metrics.duplicates).inc()
    resp.media = describe_image(result.image) | {"duplicate": not result.created}
    resp.status = falcon.HTTP_201 if result.created else falcon.HTTP_200
    resp.location = f"{req.prefix}/v1/images/{result.image.id}"


def _json_object(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = jsontext.loads(text)
    except ValueError:
        raise InvalidInput("other_data must be a JSON object") from None
    if not isinstance(value, dict):
        raise InvalidInput("other_data must be a JSON object")
    return value


class UrlSigner:
    """Presigned GET URLs for an image's bytes and its thumbnail, based on how the caller reached us."""

    def __init__(self, storage: Storage, settings: Settings):
        self._storage = storage
        self._settings = settings

    def _sign(self, req: falcon.Request, key: str) -> SignedUrl:
        return self._storage.presigned_get(
            key,
            expires_seconds=self._settings.signed_url_seconds,
            base_url=base_url(req, self._settings.public_url),
        )

    def image(self, req: falcon.Request, image: Image) -> SignedUrl:
        """A URL for the image's bytes; :class:`MissingObject` (404) when the store has lost them."""
        if self._storage.stat(image.storage_key) is None:
            raise MissingObject(
                f"the bytes of image {image.id} are missing from storage (`heartbeat check` lists such images)"
            )
        return self._sign(req, image.storage_key)

    def thumbnail(self, req: falcon.Request, image_id: str) -> SignedUrl:
        return self._sign(req, thumbnail_key(image_id))


class ImageItem:
    def __init__(self, catalog: Catalog, registry: Registry, queue: JobQueue, signer: UrlSigner):
        self._catalog = catalog
        self._registry = registry
        self._queue = queue
        self._signer = signer

    def on_get(self, req: falcon.Request, resp: falcon.Response, image_id: str) -> None:
        image = self._catalog.get(image_id)
        resp.media = describe_image(image, self._queue.statuses(image.id, self._registry.all()))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, image_id: str) -> None:
        media = read_body(req, schemas.IMAGE_CHANGES)
        image = self._catalog.set_priority(image_id, media["priority"])
        resp.media = describe_image(image, self._queue.statuses(image.id, self._registry.all()))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, image_id: str) -> None:
        self._catalog.delete(image_id)
        resp.status = falcon.HTTP_204

    def on_get_url(self, req: falcon.Request, resp: falcon.Response, image_id: str) -> None:
        signed = self._signer.image(req, self._catalog.get(image_id))
        resp.media = {"url": signed.url, "expires_at": signed.expires_at}

    def on_get_content(self, req: falcon.Request, resp: falcon.Response, image_id: str) -> None:
        raise falcon.HTTPTemporaryRedirect(self._signer.image(req, self._catalog.get(image_id)).url)

    def on_get_thumbnail(self, req: falcon.Request, resp: falcon.Response, image_id: str) -> None:
        raise falcon.HTTPTemporaryRedirect(self._signer.thumbnail(req, self._catalog.get(image_id).id).url)
