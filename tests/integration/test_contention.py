"""Contention is not an outage (the contract's *Engines*): a transaction that other transactions beat
every time it ran (a deadlock, a lock wait timeout, or on a Galera cluster a certification conflict
between nodes, all error 1213 or 1205) changed nothing. A claim then answers ``{"jobs": []}`` with
``Retry-After``, never 503; another route answers 503 saying the database is busy, never that it is
unreachable. Each run of the transaction really happens (``Database.transaction`` runs it again
after each loss, on MariaDB), the stand-in being its body losing every time."""

from __future__ import annotations

import dataclasses
from typing import Any

import peewee
import pytest

from heartbeat.db.database import Database, transactional
from heartbeat.queue.claims import Claims
from heartbeat.queue.results import Results
from heartbeat.queue.statements import CLUSTER_SPREAD
from helpers import claim, distinct_images, register, upload

DEADLOCK = (1213, "Deadlock found when trying to get lock; try restarting transaction")


def losing(runs: list[int]) -> Any:
    """A transaction body that loses to another transaction each time it runs (counted in ``runs``)."""

    def body(self: Any, *args: Any, **kwargs: Any) -> None:
        runs.append(1)
        raise peewee.OperationalError(*DEADLOCK)

    return transactional(body)


@pytest.mark.parametrize(
    "code,fault",
    [(1213, "contention"), (1205, "contention"), (1467, "contention"), (1047, "unavailable"), (2013, "unavailable")],
)
def test_a_lost_transaction_is_contention_and_a_node_out_of_the_cluster_is_unavailable(code, fault):
    assert Database.fault(peewee.OperationalError(code, "...")) == fault


def test_a_claim_that_loses_every_run_answers_no_jobs_with_retry_after(client, database, monkeypatch):
    register(client, "ocr")
    image_id = upload(client).json["id"]
    runs: list[int] = []
    with monkeypatch.context() as patched:
        patched.setattr(Claims, "_claim_round", losing(runs))
        answer = client.simulate_post("/v1/software/ocr/claim", json={"max": 5})
    assert answer.status_code == 200, answer.text
    assert answer.json == {"jobs": []}
    assert answer.headers["Retry-After"] == "1"
    assert len(runs) == (5 if database.features.mysql else 1)  # run again after each loss on MariaDB
    [job] = claim(client, "ocr")  # nothing was taken
    assert job["image_id"] == image_id


def test_a_submit_that_loses_every_run_is_busy_not_unreachable_and_changes_nothing(client, monkeypatch):
    register(client, "ocr")
    image_id = upload(client).json["id"]
    [job] = claim(client, "ocr")
    runs: list[int] = []
    with monkeypatch.context() as patched:
        patched.setattr(Results, "_store", losing(runs))
        answer = client.simulate_put(
            f"/v1/software/ocr/jobs/{image_id}/result", json={"token": job["token"], "info": {"n": 1}}
        )
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "1"
    assert "conflicting writes" in answer.json["description"]
    assert "unreachable" not in answer.json["description"]
    assert client.simulate_get(f"/v1/software/ocr/jobs/{image_id}").json["status"] == "claimed"
    again = client.simulate_put(f"/v1/software/ocr/jobs/{image_id}/result", json={"token": job["token"], "info": {}})
    assert again.status_code == 200, again.text


def test_on_a_multi_writer_cluster_a_claim_takes_one_of_the_first_ready_jobs_at_random(client, database, monkeypatch):
    """Claims on two Galera nodes do not see each other's row locks: each takes one of the first
    ``1 + CLUSTER_SPREAD`` ready jobs at random rather than the very first, so that they rarely meet."""
    monkeypatch.setattr(database, "features", dataclasses.replace(database.features, multi_writer=True))
    register(client, "ocr")
    for data in distinct_images(80):
        upload(client, data)
    pending = [image["id"] for image in client.simulate_get("/v1/images").json["images"]]  # claim order
    taken, positions = [], []
    for _ in range(30):
        [job] = claim(client, "ocr")
        positions.append(pending.index(job["image_id"]))
        pending.remove(job["image_id"])
        taken.append(job["image_id"])
    assert max(positions) <= CLUSTER_SPREAD, "always one of the first ready jobs"
    assert any(positions), "not always the very first (a chance of 32 ** -30)"
    assert len(set(taken)) == 30


def test_on_a_galera_node_the_counters_change_only_that_nodes_rows(client, database, monkeypatch):
    """Two nodes' commits that changed one counter row would conflict at certification: node 1 of 3
    changes only rows 1, 4, 7, 10 and 13 of each count, and the counts stay exact."""
    monkeypatch.setattr(database, "features", dataclasses.replace(database.features, node_share=(1, 3)))
    register(client, "ocr")
    for data in distinct_images(12):
        upload(client, data)
    for job in claim(client, "ocr", max=8):
        body = {"token": job["token"], "info": {}}
        assert client.simulate_put(f"/v1/software/ocr/jobs/{job['image_id']}/result", json=body).status_code == 200
    counts = client.simulate_get("/v1/software/ocr").json["counts"]
    assert (counts["pending"], counts["done"]) == (4, 8)
    with database.connection():
        used = {slot for (slot,) in database.execute("SELECT slot FROM job_counts WHERE count <> 0").fetchall()}
    assert used and used <= {1, 4, 7, 10, 13}
