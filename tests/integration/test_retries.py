"""Transactions on MySQL/MariaDB run again after a deadlock or a lost connection (``db.database.transaction``).

MySQL/MariaDB only: SQLite waits for its write lock instead of deadlocking, and has no connection to lose.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections import Counter

import peewee
import pymysql
import pytest

from conftest import BACKEND
from heartbeat.catalog.registry import Registry
from heartbeat.db.models import database_proxy
from heartbeat.queue import JobQueue
from helpers import register, upload

pytestmark = pytest.mark.skipif(
    BACKEND != "mysql",
    reason="MySQL/MariaDB only: SQLite waits for its write lock instead of deadlocking, and has no connection to lose",
)


class Pair(peewee.Model):
    """Two rows that two transactions lock in opposite orders."""

    id = peewee.IntegerField(primary_key=True)
    hits = peewee.IntegerField(default=0)

    class Meta:
        database = database_proxy
        table_name = "retry_pair"


def test_two_transactions_that_deadlock_both_commit_the_loser_running_again(database):
    database.create_tables([Pair])
    Pair.insert_many([{"id": 1}, {"id": 2}]).execute()
    both_hold_their_first_row = threading.Barrier(2)
    attempts: Counter[str] = Counter()

    def bump(name: str, first: int, second: int) -> None:
        attempts[name] += 1
        Pair.update(hits=Pair.hits + 1).where(Pair.id == first).execute()
        if attempts[name] == 1:
            both_hold_their_first_row.wait(timeout=30)
        Pair.update(hits=Pair.hits + 1).where(Pair.id == second).execute()

    def run(name: str, first: int, second: int) -> None:
        database.connect()
        try:
            database.transaction(bump, name, first, second)
        finally:
            database.close()

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(run, "a", 1, 2), pool.submit(run, "b", 2, 1)]:
            future.result(timeout=60)

    assert {row.id: row.hits for row in Pair.select()} == {1: 2, 2: 2}, "both committed, each once"
    assert sorted(attempts.values()) == [1, 2], "InnoDB chose one victim, and it ran again"


def test_a_claim_whose_connection_was_killed_runs_again_on_a_new_connection(client, database, db_auth):
    register(client, "survivor")
    image = upload(client).json
    database.connect()
    queue = JobQueue(database, time.time)
    software = Registry(database, queue, time.time, default_lease_seconds=60, default_max_attempts=3).get("survivor")
    (victim,) = database.execute("SELECT CONNECTION_ID()").fetchone()
    with pymysql.connect(host=db_auth.host, port=db_auth.port, user=db_auth.user, password=db_auth.password) as admin:
        with admin.cursor() as cursor:
            cursor.execute(f"KILL {int(victim)}")
        deadline = time.monotonic() + 30
        while True:  # wait until the server has let go of it: then the next statement surely fails
            with admin.cursor() as cursor:
                cursor.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", (victim,))
                if cursor.fetchone()[0] == 0:
                    break
            assert time.monotonic() < deadline, "the killed connection did not go away"
            time.sleep(0.05)

    [job] = queue.claims.claim(software, max_jobs=1).jobs
    assert job.image_id == image["id"]
    (now_using,) = database.execute("SELECT CONNECTION_ID()").fetchone()
    assert now_using != victim
    database.close()
    assert client.simulate_get(f"/v1/software/survivor/jobs/{image['id']}").json["status"] == "claimed"
