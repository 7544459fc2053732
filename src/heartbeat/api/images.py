"""``/v1/images``: upload (multipart or by URL), list, read, hand out URLs, delete."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import falcon
import falcon.media.multipart

from heartbeat import jsontext
from heartbeat.api import schemas
from heartbeat.api.components import IMAGE_WITH_JOBS, UPLOADED, page, paging, ref
from heartbeat.api.components import query as parameter
from heartbeat.api.params import check, page_limit, query, read_body, signed_url_base, token_of
from heartbeat.api.routing import Body, Operation, Parts, Reply, Route, json_body
from heartbeat.api.schemas import Schema
from heartbeat.auth.roles import Access
from heartbeat.catalog.images import Catalog, describe_image
from heartbeat.catalog.registry import Registry
from heartbeat.config import Settings
from heartbeat.db.models import Image
from heartbeat.db.paging import UPLOAD_ORDER
from heartbeat.errors import InvalidInput, MissingObject, NotFound
from heartbeat.ingest.decode import upright_picture
from heartbeat.ingest.registration import Ingest, Ingested, check_metadata
from heartbeat.ingest.thumbnails import thumbnail_key
from heartbeat.metrics import Metrics
from heartbeat.privacy import actions
from heartbeat.privacy.audit import Audit
from heartbeat.queue import JobQueue
from heartbeat.storage import SignedUrl, Storage

FORM_FIELDS = tuple(schemas.UPLOAD_FORM_FIELDS["properties"])


IMAGE = "/v1/images/{image_id}"  # also where an upload's Location points


def _upload_form() -> Schema:
    fields = schemas.UPLOAD_FORM_FIELDS
    url = fields["properties"]["url"]
    return fields | {
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


UPLOAD = Body(
    {"multipart/form-data": _upload_form(), "application/json": schemas.IMAGE_BY_URL},
    encoding={"other_data": {"contentType": "application/json"}},
)


class ImageCollection:
    def __init__(
        self,
        ingest: Ingest,
        catalog: Catalog,
        registry: Registry,
        queue: JobQueue,
        signer: UrlSigner,
        metrics: Metrics,
        audit: Audit,
    ):
        self._metrics = metrics
        self._audit = audit
        self._ingest = ingest
        self._catalog = catalog
        self._registry = registry
        self._queue = queue
        self._signer = signer

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        newest_first = query(req, "order", schemas.ORDER) == "newest"
        include = set((query(req, "include", schemas.INCLUDE) or "").split(",")) - {""}
        images, cursor = self._catalog.page(
            origin=query(req, "origin", schemas.TEXT),
            status=query(req, "status", schemas.IMAGE_STATUS),
            where=self._registry.where(query(req, "where", schemas.WHERE)),
            cursor=req.get_param("cursor"),
            limit=page_limit(req),
            newest_first=newest_first,
        )
        if "thumbnail" in include and images and req.method != "HEAD":  # picture URLs handed out: recorded first
            self._audit.record(actions.THUMBNAILS_LISTED, token_of(req), [image.id for image in images])
        described = []
        software = self._registry.all() if "jobs" in include else []
        for image in images:
            item = describe_image(image, self._queue.reads.statuses(image.id, software) if "jobs" in include else None)
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
            fields: dict[str, Any] = {}
            sent: set[str] = set()
            upload: tuple[Path, str | None] | None = None
            for part in req.get_media():
                name, filename = _part_names(part)
                if name == "file":
                    if upload is not None:
                        raise InvalidInput("send one file per upload")
                    upload = (stack.enter_context(self._ingest.receive(part.stream)), filename)
                elif name is not None and name in FORM_FIELDS:
                    if name in sent:
                        raise InvalidInput(f"form field {name} is sent twice")
                    sent.add(name)
                    text = _part_text(part, name)
                    if text:  # an empty field, as HTML forms send them, counts as absent
                        fields[name] = text
                else:
                    raise InvalidInput(f"unknown form field {name!r}; expected file, {', '.join(FORM_FIELDS)}")
            if "other_data" in fields:
                fields["other_data"] = _json_object(fields["other_data"])
            check(fields, schemas.UPLOAD_FORM_FIELDS)
            origin, other_data = fields.get("origin"), fields.get("other_data")
            priority = int(fields.get("priority", "0"))
            check_metadata(origin, other_data, priority)
            if (upload is None) == ("url" not in fields):
                raise InvalidInput("send either a file or a url")
            if upload is None:
                upload = stack.enter_context(self._ingest.fetch(fields["url"]))
            path, filename = upload
            return self._ingest.store(path, filename=filename, origin=origin, other_data=other_data, priority=priority)


def _part_names(part: falcon.media.multipart.BodyPart) -> tuple[str | None, str | None]:
    """A part's field name and file name; 400 when its headers are not UTF-8 or name no Unicode text
    (Falcon decodes them as it reads them, and a raw Latin-1 ``filename="caf\xe9.png"`` is not UTF-8)."""
    try:
        name, filename = part.name, part.filename
    except UnicodeDecodeError:
        raise InvalidInput("a form part's headers must be UTF-8 text") from None
    if not all(jsontext.is_unicode(text) for text in (name or "", filename or "")):
        raise InvalidInput("a form part's name and file name must be Unicode text")
    return name, filename


def _part_text(part: falcon.media.multipart.BodyPart, name: str) -> str:
    """A form field's text, in the part's charset (UTF-8 when it names none); 400 when it is not text."""
    try:
        # get_text is None for a part that is not text/plain, such as other_data sent as application/json.
        text = part.get_text()
        text = part.get_data().decode("utf-8") if text is None else text
    except UnicodeDecodeError:
        raise InvalidInput(f"form field {name} is not UTF-8 text") from None
    if not jsontext.is_unicode(text):  # a charset such as utf-7 can spell a lone surrogate
        raise InvalidInput(f"form field {name} is not Unicode text")
    return text


def answer_ingested(req: falcon.Request, resp: falcon.Response, result: Ingested, metrics: Metrics) -> None:
    """201 with the new image and its Location, or 200 with the image those bytes already are."""
    (metrics.uploads if result.created else metrics.duplicates).inc()
    resp.media = describe_image(result.image) | {"duplicate": not result.created}
    resp.status = falcon.HTTP_201 if result.created else falcon.HTTP_200
    resp.location = req.prefix + IMAGE.format(image_id=result.image.id)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = jsontext.loads(text)
    except ValueError as error:
        raise InvalidInput(f"other_data is not a storable JSON object: {error}") from None
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
            base_url=signed_url_base(req, self._settings.public_url),
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
    def __init__(
        self, catalog: Catalog, registry: Registry, queue: JobQueue, signer: UrlSigner, storage: Storage, audit: Audit
    ):
        self._storage = storage
        self._audit = audit
        self._catalog = catalog
        self._registry = registry
        self._queue = queue
        self._signer = signer

    def on_get(self, req: falcon.Request, resp: falcon.Response, image_id: str) -> None:
        image = self._catalog.get(image_id)
        resp.media = describe_image(image, self._queue.reads.statuses(image.id, self._registry.all()))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, image_id: str) -> None:
        media = read_body(req, schemas.IMAGE_CHANGES)
        image = self._catalog.set_priority(image_id, media["priority"])
        resp.media = describe_image(image, self._queue.reads.statuses(image.id, self._registry.all()))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, image_id: str) -> None:
        self._catalog.delete(image_id, token_id=token_of(req))
        resp.status = falcon.HTTP_204

    def on_get_url(self, req: falcon.Request, resp: falcon.Response, image_id: str) -> None:
        signed = self._signer.image(req, self._catalog.get(image_id))
        if req.method != "HEAD":  # a HEAD answer carries no URL
            self._audit.record(actions.IMAGE_URL, token_of(req), [image_id])
        resp.media = {"url": signed.url, "expires_at": signed.expires_at}

    def on_get_content(self, req: falcon.Request, resp: falcon.Response, image_id: str) -> None:
        """A redirect to the bytes as stored; with ``upright=true``, a picture stored turned (EXIF
        orientation other than 1) is answered upright here, as ``heartbeat export --images`` writes it."""
        image = self._catalog.get(image_id)
        upright = query(req, "upright", schemas.UPRIGHT) == "true"
        self._audit.record(actions.IMAGE_CONTENT, token_of(req), [image_id])
        if not upright or (image.orientation or 1) == 1:
            raise falcon.HTTPTemporaryRedirect(self._signer.image(req, image).url)
        try:
            with self._storage.open(image.storage_key) as stream:
                resp.data = upright_picture(stream)
        except NotFound:
            raise MissingObject(
                f"the bytes of image {image.id} are missing from storage (`heartbeat check` lists such images)"
            ) from None
        resp.content_type = image.content_type

    def on_get_thumbnail(self, req: falcon.Request, resp: falcon.Response, image_id: str) -> None:
        url = self._signer.thumbnail(req, self._catalog.get(image_id).id).url
        self._audit.record(actions.IMAGE_THUMBNAIL, token_of(req), [image_id])
        raise falcon.HTTPTemporaryRedirect(url)


# --- its routes ----------------------------------------------------------------------------------


def image_collection(parts: Parts) -> ImageCollection:
    return ImageCollection(
        parts.ingest,
        parts.catalog,
        parts.registry,
        parts.queue,
        UrlSigner(parts.storage, parts.settings),
        parts.metrics,
        parts.audit,
    )


def image_item(parts: Parts) -> ImageItem:
    return ImageItem(
        parts.catalog, parts.registry, parts.queue, UrlSigner(parts.storage, parts.settings), parts.storage, parts.audit
    )


ROUTES: list[Route] = [
    Route(
        "/v1/images",
        image_collection,
        {
            "GET": Operation(
                Access.READ,
                "images, oldest first",
                Reply(200, page("images", ref("Image"), UPLOAD_ORDER)),
                errors=(400, 404),
                parameters=(
                    *paging(UPLOAD_ORDER),
                    parameter("origin", schemas.TEXT, "only images of this origin"),
                    parameter("status", schemas.IMAGE_STATUS, schemas.IMAGE_STATUS["description"]),
                    parameter("where", schemas.WHERE, schemas.WHERE["description"]),
                    parameter("order", schemas.ORDER, "oldest first (default) or newest first"),
                    parameter(
                        "include",
                        schemas.INCLUDE,
                        "`jobs` (each software's job status), `thumbnail` (a presigned `thumbnail_url`)",
                    ),
                ),
            ),
            "POST": Operation(
                Access.UPLOAD,
                "upload an image: multipart `file` or `url`, or a JSON body with `url`. A malformed url (host, port, "
                "IPv6 brackets, spaces, control characters, user info), one the address guard refuses, or a fetch past "
                "HEARTBEAT_URL_DEADLINE_SECONDS answers 422; more uploads by URL at once than --max-url-fetches, 503",
                (Reply(201, UPLOADED), Reply(200, UPLOADED)),
                errors=(400, 413, 415, 422, 503),
                body=UPLOAD,
            ),
        },
    ),
    Route(
        IMAGE,
        image_item,
        {
            "GET": Operation(
                Access.READ, "the image, with each software's job status", Reply(200, IMAGE_WITH_JOBS), errors=(404,)
            ),
            "PATCH": Operation(
                Access.ADMIN,
                "change the image's priority",
                Reply(200, IMAGE_WITH_JOBS),
                errors=(400, 404),
                body=json_body(schemas.IMAGE_CHANGES),
            ),
            "DELETE": Operation(
                Access.ADMIN,
                "delete the image, its jobs and rows, then its bytes (bytes a failing store keeps are removed by "
                "`heartbeat check --fix`)",
                Reply(204),
                errors=(404, 503),
            ),
        },
    ),
    Route(
        "/v1/images/{image_id}/url",
        image_item,
        {
            "GET": Operation(
                Access.READ,
                "a presigned GET URL for the bytes (404 also when the store has lost them)",
                Reply(200, ref("SignedUrl")),
                errors=(404, 503),
            )
        },
        suffix="url",
    ),
    Route(
        "/v1/images/{image_id}/thumbnail",
        image_item,
        {
            "GET": Operation(
                Access.READ, "a redirect to a presigned URL of the image's thumbnail", Reply(307), errors=(404,)
            )
        },
        suffix="thumbnail",
    ),
    Route(
        "/v1/images/{image_id}/content",
        image_item,
        {
            "GET": Operation(
                Access.READ,
                "a redirect to the presigned URL; with `upright=true`, a picture stored turned (EXIF orientation other "
                "than 1) is answered upright (the orientation applied, its tag removed), in the frame of its width, "
                "height and boxes",
                (Reply(307), Reply(200, media_type="image/*")),
                errors=(400, 404, 503),
                parameters=(parameter("upright", schemas.UPRIGHT, "`true`: the picture upright (default `false`)"),),
            )
        },
        suffix="content",
    ),
]
