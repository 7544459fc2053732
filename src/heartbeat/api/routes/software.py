"""The software routes: register, read, pause and resume a software, requeue its jobs, read its extra tables."""

from __future__ import annotations

from heartbeat.api import schemas
from heartbeat.api.components import obj, page, paging, query, ref
from heartbeat.api.routes.table import Operation, Reply, Route, json_body
from heartbeat.auth.roles import Access
from heartbeat.db.paging import NAME_ORDER, ROW_ORDER

SOFTWARE = "/v1/software/{name}"  # also where a registration's Location points

ROUTES = [
    Route(
        "/v1/software",
        "software_collection",
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
        "software_item",
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
        "software_item",
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
        "software_item",
        {
            "POST": Operation(
                Access.ADMIN, "pause: claims find no jobs until resumed", Reply(200, ref("Software")), errors=(404,)
            )
        },
        suffix="pause",
    ),
    Route(
        "/v1/software/{name}/resume",
        "software_item",
        {"POST": Operation(Access.ADMIN, "resume a paused software", Reply(200, ref("Software")), errors=(404,))},
        suffix="resume",
    ),
    Route(
        "/v1/software/{name}/tables/{table}",
        "extra_table",
        {
            "GET": Operation(
                Access.READ,
                "rows of one of the software's extra tables",
                Reply(200, page("rows", obj({"id": {"type": "integer"}, "image_id": {"type": "string"}}), ROW_ORDER)),
                errors=(400, 404),
                parameters=(*paging(ROW_ORDER), query("image_id", schemas.TEXT, "only this image's rows")),
            )
        },
    ),
]
