"""The job routes of a software: claim jobs, renew and give back their leases, submit results, list jobs."""

from __future__ import annotations

from heartbeat.api import schemas
from heartbeat.api.components import RETRY_AFTER, STRING_OR_NULL, obj, page, paging, query, ref
from heartbeat.api.routes.table import Operation, Reply, Route, json_body
from heartbeat.auth.roles import Access
from heartbeat.db.paging import UPLOAD_ORDER
from heartbeat.queue import Verdict

CLAIMED = Reply(
    200,
    obj({"jobs": {"type": "array", "items": ref("ClaimedJob")}}),
    headers={
        "Retry-After": RETRY_AFTER | {"description": "with no jobs: no room to wait; claim again after this long"}
    },
)
JUDGED = obj(
    {
        "results": {
            "type": "array",
            "items": obj(
                {
                    "image_id": STRING_OR_NULL,
                    "status": {"enum": [str(verdict) for verdict in Verdict]},
                    "description": {"type": "string"},
                },
                ("image_id", "status"),
            ),
        }
    }
)

ROUTES = [
    Route(
        "/v1/software/{name}/claim",
        "claim",
        {
            "POST": Operation(
                Access.WORK,
                "lease the earliest-uploaded claimable jobs, waiting up to `wait_seconds` for one. A process lets at "
                "most --max-waiting-claims claims wait at once: a claim beyond that which finds no job is answered at "
                "once with no jobs and `Retry-After`",
                CLAIMED,
                errors=(400, 404),
                body=json_body(schemas.CLAIM, required=False),
            )
        },
    ),
    Route(
        "/v1/software/{name}/results",
        "batch_results",
        {
            "POST": Operation(
                Access.WORK,
                "submit many results; each judged on its own",
                Reply(200, JUDGED),
                errors=(400, 404),
                body=json_body(schemas.BATCH_RESULTS),
            )
        },
    ),
    Route(
        "/v1/software/{name}/jobs",
        "job_collection",
        {
            "GET": Operation(
                Access.READ,
                "the software's jobs, in upload order",
                Reply(200, page("jobs", ref("Job"), UPLOAD_ORDER)),
                errors=(400, 404),
                parameters=(
                    *paging(UPLOAD_ORDER),
                    query("status", schemas.JOB_STATUS, "only jobs with this status"),
                    query("version", schemas.VERSION, "only jobs whose result came from this version"),
                ),
            )
        },
    ),
    Route(
        "/v1/software/{name}/jobs/{image_id}",
        "job_item",
        {"GET": Operation(Access.READ, "one job", Reply(200, ref("Job")), errors=(404,))},
    ),
    Route(
        "/v1/software/{name}/jobs/{image_id}/extend",
        "job_item",
        {
            "POST": Operation(
                Access.WORK,
                "extend the lease",
                Reply(200, obj({"lease_expires_at": {"type": "number"}})),
                errors=(400, 404, 409),
                body=json_body(schemas.EXTEND),
            )
        },
        suffix="extend",
    ),
    Route(
        "/v1/software/{name}/jobs/{image_id}/result",
        "job_item",
        {
            "PUT": Operation(
                Access.WORK,
                "submit the result and extra-table rows",
                Reply(200, ref("Job")),
                errors=(400, 404, 409, 422),
                body=json_body(schemas.RESULT),
            )
        },
        suffix="result",
    ),
    Route(
        "/v1/software/{name}/jobs/{image_id}/fail",
        "job_item",
        {
            "POST": Operation(
                Access.WORK,
                "report a failure: retry after a backoff, or failed",
                Reply(200, ref("Job")),
                errors=(400, 404, 409),
                body=json_body(schemas.FAIL),
            )
        },
        suffix="fail",
    ),
    Route(
        "/v1/software/{name}/jobs/{image_id}/release",
        "job_item",
        {
            "POST": Operation(
                Access.WORK,
                "give the job back at once",
                Reply(200, ref("Job")),
                errors=(400, 404, 409),
                body=json_body(schemas.RELEASE),
            )
        },
        suffix="release",
    ),
]
