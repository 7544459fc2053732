"""The route table is the one declaration of a route: Falcon's routes, who may call them and the
OpenAPI document are all read off it, so a route added to it is served, guarded and documented."""

from __future__ import annotations

import dataclasses
import re
from typing import Any
from urllib.parse import urlsplit

import falcon
import falcon.inspect
import falcon.testing
import pytest

from heartbeat.api import openapi, schemas
from heartbeat.api.auth import Authorization
from heartbeat.api.errors import add_error_handlers
from heartbeat.api.middleware import DatabaseConnection
from heartbeat.api.openapi import openapi_document
from heartbeat.api.routes import ROUTES
from heartbeat.api.routing import Operation, Parts, Reply, Route, add_routes
from heartbeat.auth import tokens
from heartbeat.auth.roles import Access, Role
from heartbeat.cli import main
from heartbeat.errors import InvalidInput
from helpers import unreachable_database, upload


class Echo:
    """A resource no real route uses."""

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = {"name": name}


def echo(parts: Parts) -> Echo:
    return Echo()


SCRATCH = Route(
    "/v1/software/{name}/echo",
    echo,
    {"POST": Operation(Access.WORK, "echo the software's name", Reply(200, {"type": "object"}), errors=(404,))},
)
DOCUMENT = next(route for route in ROUTES if route.resource is openapi.openapi)


def scratch_app(table: list[Route], database: Any) -> falcon.testing.TestClient:
    """An app built on ``table`` alone, as ``create_app`` builds one on the real table."""
    app = falcon.App(
        middleware=[DatabaseConnection(database), Authorization(database, table, serving_on_loopback=False)]
    )
    add_error_handlers(app, database)
    # The resources of these tables need no more of the app's parts than its table.
    parts = Parts(**dict.fromkeys(field.name for field in dataclasses.fields(Parts)) | {"table": table})
    add_routes(app, parts, table)
    return falcon.testing.TestClient(app)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_a_route_added_to_the_table_is_served_guarded_and_documented(database, clock):
    table = [DOCUMENT, SCRATCH]
    client = scratch_app(table, database)
    worker = bearer(tokens.create_token("worker", software="face_detection", clock=clock)[1])
    reader = bearer(tokens.create_token("reader", clock=clock)[1])

    served = {
        (m.method, r.path) for r in falcon.inspect.inspect_routes(client.app) for m in r.methods if not m.internal
    }
    assert ("POST", "/v1/software/{name}/echo") in served
    assert client.simulate_post("/v1/software/face_detection/echo", headers=worker).json == {"name": "face_detection"}

    assert (
        Authorization(database, table, serving_on_loopback=False).required_access("POST", SCRATCH.path) is Access.WORK
    )
    assert client.simulate_post("/v1/software/face_detection/echo").status_code == 401
    assert client.simulate_post("/v1/software/face_detection/echo", headers=reader).status_code == 403
    assert client.simulate_post("/v1/software/ocr/echo", headers=worker).status_code == 403  # scoped to another

    document = client.simulate_get("/openapi.json", headers=reader).json
    operation = document["paths"]["/v1/software/{name}/echo"]["post"]
    assert operation["summary"] == "echo the software's name"
    assert set(operation["responses"]) == {"200", "401", "403", "404"}
    assert document["paths"]["/v1/software/{name}/echo"]["parameters"][0]["schema"] == schemas.NAME


def test_adding_a_route_to_the_real_table_changes_nothing_of_the_others():
    real = openapi_document(ROUTES)
    grown = openapi_document([*ROUTES, SCRATCH])
    assert set(grown["paths"]) == set(real["paths"]) | {SCRATCH.path}
    assert {path: grown["paths"][path] for path in real["paths"]} == real["paths"]
    before = Authorization(unreachable_database(), ROUTES, serving_on_loopback=False)
    after = Authorization(unreachable_database(), [*ROUTES, SCRATCH], serving_on_loopback=False)
    for route in ROUTES:
        for method in (*route.operations, "HEAD", "OPTIONS", "DELETE"):
            assert after.required_access(method, route.path) is before.required_access(method, route.path)


class Resource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {}

    def on_delete(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.status = falcon.HTTP_204


def resource(parts: Parts | None) -> Resource:
    return Resource()


def only(method: str) -> dict[str, Operation]:
    return {method: Operation(Access.READ, "a test", Reply(200))}


@pytest.mark.parametrize(
    "table",
    [
        [Route("/v1/undocumented", resource, only("GET"))],  # on_delete is served but not declared
        [Route("/v1/unserved", resource, only("GET") | only("DELETE") | only("PUT"))],  # PUT declared, not served
        [Route("/v1/twice", resource, only("GET") | only("DELETE"))] * 2,
    ],
    ids=["served-not-declared", "declared-not-served", "path-twice"],
)
def test_an_app_whose_resources_differ_from_the_table_is_refused_at_once(table):
    with pytest.raises(ValueError):
        add_routes(falcon.App(), None, table)


def test_routes_that_name_one_resource_function_share_one_resource():
    made: list[Resource] = []

    def counted(parts: Parts | None) -> Resource:
        made.append(Resource())
        return made[-1]

    table = [Route(f"/v1/shared/{n}", counted, only("GET") | only("DELETE")) for n in range(3)]
    app = falcon.App()
    add_routes(app, None, table)
    assert len(made) == 1
    client = falcon.testing.TestClient(app)
    assert [client.simulate_get(route.path).status_code for route in table] == [200] * 3


@pytest.mark.parametrize(
    ("method", "path", "access"),
    [
        ("OPTIONS", "/v1/software/{name}/claim", Access.READ),  # a read method: read access
        ("DELETE", "/v1/software/{name}/claim", Access.WORK),  # what the route's writes need
        ("DELETE", "/v1/images", Access.UPLOAD),
        ("POST", "/v1/images/{image_id}", Access.ADMIN),
        ("DELETE", "/v1/software/{name}/jobs", Access.ADMIN),  # no writes: admin
        ("POST", "/v1/health", Access.PUBLIC),  # a public route stays public
        ("DELETE", "/v1/no/such/route", Access.ADMIN),  # a route missing from the table
    ],
)
def test_a_method_the_table_does_not_declare_needs_what_the_routes_methods_of_its_kind_need(method, path, access):
    # The role a route needs is read off the table alone: no database is asked.
    assert Authorization(unreachable_database(), serving_on_loopback=False).required_access(method, path) is access


def test_a_method_a_route_does_not_serve_answers_405_only_to_whom_its_writes_are_allowed(client, clock):
    worker = bearer(tokens.create_token("worker", clock=clock)[1])
    reader = bearer(tokens.create_token("reader", clock=clock)[1])
    assert client.simulate_delete("/v1/software/face_detection/claim", headers=worker).status_code == 405
    assert client.simulate_delete("/v1/software/face_detection/claim", headers=reader).status_code == 403


def test_a_new_image_and_a_new_software_are_at_their_location(client):
    created = client.simulate_post("/v1/software", json={"name": "face_detection"})
    assert created.status_code == 201
    assert client.simulate_get(urlsplit(created.headers["location"]).path).json["name"] == "face_detection"
    image = upload(client)
    assert image.status_code == 201
    assert client.simulate_get(urlsplit(image.headers["location"]).path).json["id"] == image.json["id"]


def test_the_cli_offers_exactly_the_roles_a_token_may_carry_and_no_other_is_accepted(database, clock, capsys):
    with pytest.raises(SystemExit):
        main(["token", "create", "--role", "superuser"])
    offered = re.search(r"choose from (.*)\)", capsys.readouterr().err)
    assert offered is not None
    assert set(re.findall(r"'(\w+)'", offered.group(1))) == {str(role) for role in Role}
    for role in Role:
        assert tokens.create_token(str(role), clock=clock)[0].role == role
    with pytest.raises(InvalidInput, match="role must be one of admin, uploader, worker, reader"):
        tokens.create_token("superuser", clock=clock)
