"""Every route that answers GET answers HEAD the same way, without the body (RFC 9110 9.3.2): the
same status and headers (Content-Type, Content-Length, Location, ...), for every GET of the route
table, for a refusal (401, 404) as for a success, and Falcon's 404 for a path no route has."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from heartbeat.api.routes import ROUTES
from heartbeat.auth import tokens
from heartbeat.auth.roles import Access
from helpers import claim, register, upload

VARYING = {"date", "x-request-id"}  # differ between any two answers
# An S3 presigned URL is signed at the second it is made (the store's clock, not the test's): two
# answers a second apart redirect to URLs that differ in these alone.
SIGNING_TIME = {"X-Amz-Date", "X-Amz-Signature"}


def unsigned(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` with a redirect's S3 signing time and signature left out."""
    if "location" not in headers:
        return headers
    url = urlsplit(headers["location"])
    query = "&".join(part for part in url.query.split("&") if part.partition("=")[0] not in SIGNING_TIME)
    return headers | {"location": url._replace(query=query).geturl()}


FILES = {"/dashboard/{name}": "app.js", "/docs/assets/{name}": "swagger-ui.css"}
GET_ROUTES = [route for route in ROUTES if "GET" in route.operations]


@pytest.fixture
def paths(client) -> dict[str, str]:
    """Each GET route's template -> a path (and query) that it answers with its content."""
    register(client, "face_detection", tables={"faces": {"x": "int"}})
    image_id = upload(client).json["id"]
    [job] = claim(client, "face_detection")
    done = client.simulate_put(
        f"/v1/software/face_detection/jobs/{image_id}/result",
        json={"token": job["token"], "info": {"faces": 1}, "rows": {"faces": [{"x": 3}]}},
    )
    assert done.status_code == 200
    signed = client.simulate_get(f"/v1/images/{image_id}/url").json["url"]
    made = {}
    for route in GET_ROUTES:
        name = FILES.get(route.path, "face_detection")
        made[route.path] = (
            route.path.replace("{image_id}", image_id).replace("{name}", name).replace("{table}", "faces")
        )
    url = urlsplit(signed)
    made["/v1/blobs/{key:path}"] = f"{url.path}?{url.query}"
    made["/v1/export"] = "/v1/export?format=jsonl"
    made["/v1/events/stream"] = "/v1/events/stream?max_seconds=0.05"
    hook = client.simulate_post("/v1/webhooks", json={"url": "http://93.184.216.34/hook"})
    assert hook.status_code == 201, hook.text
    for template in [path for path in made if "{webhook_id}" in path]:
        made[template] = template.replace("{webhook_id}", hook.json["id"])
    policy = {"name": "month", "where": "origin = 'x'", "max_age_seconds": 2592000}
    assert client.simulate_post("/v1/retention", json=policy).status_code == 201
    made["/v1/retention/{policy}"] = "/v1/retention/month"
    erasure = client.simulate_post("/v1/erasures", json={"image_ids": ["no-such-image"]})
    assert erasure.status_code == 202, erasure.text
    made["/v1/erasures/{erasure_id}"] = f"/v1/erasures/{erasure.json['id']}"
    return made


def compare(client, path: str, headers: dict[str, str] | None = None) -> int:
    """GET and HEAD ``path``; assert HEAD answered as GET did without the body. The status."""
    target, _, query = path.partition("?")
    got = client.simulate_get(target, query_string=query, headers=headers)
    head = client.simulate_head(target, query_string=query, headers=headers)
    where = f"HEAD {path}: {head.status_code}, GET {got.status_code}"
    assert head.status_code == got.status_code, where
    assert head.content == b"", where
    same = {name: value for name, value in got.headers.items() if name.lower() not in VARYING}
    if target == "/metrics":  # the GET itself was counted in between
        same.pop("content-length", None)
    assert unsigned({name: head.headers.get(name) for name in same}) == unsigned(same), where
    assert ("content-length" in head.headers) is ("content-length" in got.headers), where  # a stream: unknown
    if got.content and "content-length" in same:
        assert int(head.headers["content-length"]) == len(got.content), where
    return int(got.status_code)


def test_every_get_route_answers_head_as_get_without_the_body(client, paths):
    statuses = {route.path: compare(client, paths[route.path]) for route in GET_ROUTES}
    assert len(statuses) == len(GET_ROUTES) >= 18
    # Each answered with its content (the blob route on S3 is the store's, not ours: 404 here).
    assert {path for path, status in statuses.items() if status not in (200, 307)} <= {"/v1/blobs/{key:path}"}
    assert compare(client, "/no/such/route") == 404
    assert compare(client, "/v1/images/no-such-image") == 404


def test_head_is_refused_as_get_is(client, clock, paths):
    _, secret = tokens.create_token("reader", clock=clock)
    for route in GET_ROUTES:
        status = compare(client, paths[route.path])  # no token: 401 where the route needs one
        assert (status == 401) is (route.operations["GET"].access is not Access.PUBLIC), route.path
        compare(client, paths[route.path], {"Authorization": f"Bearer {secret}"})
