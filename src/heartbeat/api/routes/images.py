"""The image routes: upload (by form, by URL, or direct to the store), list, read, hand out URLs, delete."""

from __future__ import annotations

from heartbeat.api import schemas
from heartbeat.api.blobs import SIGNED_ROUTE
from heartbeat.api.components import IMAGE_WITH_JOBS, UPLOADED, page, paging, query, ref
from heartbeat.api.routes.table import Body, Operation, Reply, Route, json_body
from heartbeat.api.schemas import Schema
from heartbeat.auth.roles import Access
from heartbeat.catalog.export import FORMATS
from heartbeat.db.paging import UPLOAD_ORDER

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
SIGNED = (
    query("expires", {"type": "string"}, "from the signed URL"),
    query("signature", {"type": "string"}, "from the signed URL"),
)

EXPORT_FORMATS: Schema = {"enum": list(FORMATS)}
EXPORT_PARAMETERS = (
    query("format", EXPORT_FORMATS, "`jsonl` (default), `csv` or `coco`"),
    query("where", schemas.WHERE, schemas.WHERE["description"]),
    query("software", schemas.TEXT, "software to include, comma separated (default: every one)"),
    query("table", schemas.TEXT, "coco: `SOFTWARE.TABLE`, an extra table with x, y, w, h columns: the boxes"),
    query("category", schemas.TEXT, "coco: the column of that table naming each box's category"),
)

ROUTES = [
    Route(
        "/v1/export",
        "export",
        {
            "GET": Operation(
                Access.READ,
                "every image a query selects, with what each software found, streamed (no image bytes)",
                tuple(Reply(200, media_type=media_type) for media_type in dict.fromkeys(FORMATS.values())),
                errors=(400, 404),
                parameters=EXPORT_PARAMETERS,
            )
        },
    ),
    Route(
        "/v1/images",
        "image_collection",
        {
            "GET": Operation(
                Access.READ,
                "images, oldest first",
                Reply(200, page("images", ref("Image"), UPLOAD_ORDER)),
                errors=(400, 404),
                parameters=(
                    *paging(UPLOAD_ORDER),
                    query("origin", schemas.TEXT, "only images of this origin"),
                    query("status", schemas.IMAGE_STATUS, schemas.IMAGE_STATUS["description"]),
                    query("where", schemas.WHERE, schemas.WHERE["description"]),
                    query("order", schemas.ORDER, "oldest first (default) or newest first"),
                    query(
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
        "image_item",
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
        "image_item",
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
        "image_item",
        {
            "GET": Operation(
                Access.READ, "a redirect to a presigned URL of the image's thumbnail", Reply(307), errors=(404,)
            )
        },
        suffix="thumbnail",
    ),
    Route(
        "/v1/images/{image_id}/content",
        "image_item",
        {
            "GET": Operation(
                Access.READ,
                "a redirect to the presigned URL; with `upright=true`, a picture stored turned (EXIF orientation other "
                "than 1) is answered upright (the orientation applied, its tag removed), in the frame of its width, "
                "height and boxes",
                (Reply(307), Reply(200, media_type="image/*")),
                errors=(400, 404, 503),
                parameters=(query("upright", schemas.UPRIGHT, "`true`: the picture upright (default `false`)"),),
            )
        },
        suffix="content",
    ),
    Route(
        SIGNED_ROUTE + "{key:path}",
        "signed_blob",
        {
            "GET": Operation(
                Access.PUBLIC,
                "the bytes behind a URL this server signed (local storage)",
                Reply(200),
                errors=(403, 404),
                parameters=SIGNED,
            ),
            "PUT": Operation(
                Access.PUBLIC,
                "the bytes of a direct upload, to a PUT URL this server signed (local storage)",
                Reply(204),
                errors=(403, 404, 413),
                body=Body({"application/octet-stream": {}}),
                parameters=SIGNED,
            ),
        },
    ),
    Route(
        "/v1/uploads",
        "upload_collection",
        {
            "POST": Operation(
                Access.UPLOAD,
                "start a direct upload: a presigned URL to PUT the bytes to, straight into the store",
                Reply(201, ref("Upload")),
                errors=(400, 503),
                body=json_body(schemas.UPLOAD, required=False),
            )
        },
    ),
    Route(
        "/v1/uploads/{upload_id}/complete",
        "upload_item",
        {
            "POST": Operation(
                Access.UPLOAD,
                "check the uploaded bytes as an upload and register the image (refused bytes are deleted)",
                (Reply(201, UPLOADED), Reply(200, UPLOADED)),
                errors=(400, 404, 409, 413, 415, 503),
                body=json_body(schemas.UPLOAD_COMPLETE, required=False),
            )
        },
        suffix="complete",
    ),
]
