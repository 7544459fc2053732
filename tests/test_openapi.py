"""``GET /openapi.json`` stays true to the routes, and schemathesis fuzzes the running server against it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import falcon.inspect
import jsonschema
import pytest
import requests

from heartbeat.api.openapi import COMPONENTS
from helpers import distinct_images

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}
FUZZ_EXAMPLES = int(os.environ.get("HEARTBEAT_FUZZ_EXAMPLES", "25"))


def served(app: falcon.App) -> set[tuple[str, str]]:
    """(method, path) of every route, with Falcon's field converters (``{key:path}``) dropped."""
    return {
        (method.method.lower(), re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path))
        for route in falcon.inspect.inspect_routes(app)
        for method in route.methods
        if not method.internal
    }


def documented(document: dict) -> set[tuple[str, str]]:
    return {(method, path) for path, item in document["paths"].items() for method in item if method in HTTP_METHODS}


def test_every_served_route_is_documented_and_every_documented_route_is_served(client, app):
    document = client.simulate_get("/openapi.json").json
    assert document["openapi"].startswith("3.")
    assert documented(document) == served(app)


def test_every_documented_operation_names_its_errors_and_its_path_parameters(client):
    document = client.simulate_get("/openapi.json").json
    for path, item in document["paths"].items():
        names = set(re.findall(r"\{(\w+)\}", path))
        for method, operation in ((m, o) for m, o in item.items() if m in HTTP_METHODS):
            declared = {p["name"] for p in item.get("parameters", []) + operation.get("parameters", [])}
            assert names <= declared, f"{method} {path}: path parameters {names - declared} undeclared"
            statuses = set(operation["responses"])
            assert any(status.startswith("2") or status.startswith("3") for status in statuses), (method, path)
            if operation.get("security") != []:
                assert {"401", "403"} <= statuses, f"{method} {path} does not document 401/403"


def test_the_component_schemas_are_valid_json_schemas():
    for name, schema in COMPONENTS.items():
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as error:
            pytest.fail(f"{name}: {error.message}")


@pytest.mark.fuzz
@pytest.mark.timeout(600)
def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_document(start_server, db_auth_file, tmp_path):
    """Every route, fuzzed: no 5xx, answers match their documented schemas, auth is never ignored.

    The server is seeded with a software (1-second leases, so claims rarely wait) and images, so the
    generated requests reach past the 404s. ``positive_data_acceptance`` is left out: a request that
    matches the schema may still be refused by design (a URL that is not allowed, an unknown table).
    """
    data_dir = tmp_path / "fuzz"
    server = start_server(data_dir=data_dir)
    db_flags = ["--db-auth", str(db_auth_file)] if db_auth_file else ["--data-dir", str(data_dir)]
    made = subprocess.run(
        [sys.executable, "-m", "heartbeat", "token", "create", "--role", "admin", *db_flags],
        capture_output=True,
        text=True,
        check=True,
    )
    headers = {"Authorization": f"Bearer {made.stdout.strip()}"}
    requests.post(
        f"{server.url}/v1/software",
        json={"name": "face_detection", "lease_seconds": 1, "tables": {"faces": {"x": "int", "label": "text"}}},
        headers=headers,
        timeout=10,
    ).raise_for_status()
    for data in distinct_images(30):
        files = {"file": ("seed.png", data, "image/png")}
        requests.post(f"{server.url}/v1/images", files=files, headers=headers, timeout=10).raise_for_status()

    report = tmp_path / "schemathesis.txt"
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{server.url}/openapi.json",
        "--header",
        f"Authorization: {headers['Authorization']}",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        str(FUZZ_EXAMPLES),
        "--request-timeout",
        "30",
        "--max-response-time",
        "25",  # a claim may wait up to 20 s for work: that is the long poll, not slowness
        "--workers",
        "1",  # several workers trip a thread-safety bug inside hypothesis ("AST constructor recursion")
        "--suppress-health-check",
        "all",
    ]
    hooks = {"SCHEMATHESIS_HOOKS": "schemathesis_hooks", "PYTHONPATH": str(Path(__file__).parent)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=os.environ | hooks)
    report.write_text(done.stdout + done.stderr)
    assert done.returncode == 0, f"schemathesis found problems (full report in {report}):\n{done.stdout[-6000:]}"
