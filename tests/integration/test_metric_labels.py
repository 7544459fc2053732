"""Every label of ``/metrics`` takes values from a bounded set, whatever clients send: a made-up
HTTP method counts as ``other``, a path no route has as ``unmatched``, a software nobody registered
adds nothing. Otherwise each such request would add a label set for good (3,000 of them once grew
``/metrics`` from 168 KB to 5.3 MB), without a token."""

from __future__ import annotations

from collections import defaultdict

import falcon.testing
import pytest
from prometheus_client.parser import text_string_to_metric_families

from heartbeat.api.routes import ROUTES
from heartbeat.auth import tokens
from helpers import register

METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
ROUTE_LABELS = {route.path for route in ROUTES} | {"unmatched"}


def label_values(client: falcon.testing.TestClient, headers: dict[str, str]) -> dict[tuple[str, str], set[str]]:
    """``{(metric, label): {values}}`` of every sample of ``GET /metrics``."""
    scraped = client.simulate_get("/metrics", headers=headers)
    assert scraped.status_code == 200
    values: dict[tuple[str, str], set[str]] = defaultdict(set)
    for family in text_string_to_metric_families(scraped.text):
        for sample in family.samples:
            for label, value in sample.labels.items():
                if label != "le":  # the histogram's buckets: fixed
                    values[(family.name, label)].add(value)
    return values


def made_up_requests(client: falcon.testing.TestClient, count: int, headers: dict[str, str]) -> None:
    for number in range(count):
        client.simulate_request(f"BREW{number}", "/v1/images", headers=headers)
        client.simulate_request(f"BREW{number}", f"/made/up/{number}", headers=headers)
        client.simulate_get(f"/no/such/route/{number}", headers=headers)
        client.simulate_post(f"/v1/software/nobody{number}/claim", json={}, headers=headers)
        client.simulate_put(
            f"/v1/software/nobody{number}/jobs/x/result", json={"token": "t", "info": {}}, headers=headers
        )


def assert_bounded(values: dict[tuple[str, str], set[str]]) -> None:
    assert values[("heartbeat_request_duration_seconds", "method")] <= METHODS
    assert values[("heartbeat_request_duration_seconds", "route")] <= ROUTE_LABELS
    assert all(
        status.isdigit() and len(status) == 3 for status in values[("heartbeat_request_duration_seconds", "status")]
    )
    for (metric, label), found in values.items():
        if label == "software":
            assert found <= {"face_detection"}, metric


# Made-up methods are the point: the test client's WSGI validator warns of each one.
@pytest.mark.filterwarnings("ignore::wsgiref.validate.WSGIWarning")
def test_made_up_methods_paths_and_software_add_no_label_values_with_or_without_a_token(client, clock):
    register(client, "face_detection")
    made_up_requests(client, 150, {})
    open_values = label_values(client, {})
    assert_bounded(open_values)
    assert "other" in open_values[("heartbeat_request_duration_seconds", "method")]

    _, secret = tokens.create_token("reader", clock=clock)
    reader = {"Authorization": f"Bearer {secret}"}
    for headers in ({}, reader, {"Authorization": "Bearer hb_made-up-token-aaaaaaaaaaaaaaaaaaaaaa"}):
        made_up_requests(client, 150, headers)
    values = label_values(client, reader)
    assert_bounded(values)
    # A thousand more made-up requests add no value to any label.
    made_up_requests(client, 250, reader)
    assert label_values(client, reader) == values
