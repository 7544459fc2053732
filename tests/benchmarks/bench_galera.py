"""Claims on a three-node MariaDB Galera cluster (issue 30; ``docs/galera.md``): what spreading the workers
over the nodes gives, and how often their transactions meet at certification.

The cluster is the one ``.ci/galera-up`` starts on this machine (nodes on 127.0.0.1:4306, 4307, 4308; started
if it is not up, and left up at the end). One database, :data:`GALERA_DB`, made anew through node 1 and dropped
at the end; one ``heartbeat serve`` per node, each with ``--db-auth`` naming its own node, all with the same
local store folder and the same ``--secret-key`` (any server's signed URLs work on the others), as
``tests/e2e/test_galera.py`` lays them out. :data:`IMAGES` images are inserted with SQL (``bulk.insert_images``)
and two software are registered through server 1 (each backfilled with a pending job per image, its counters
right), one for each side, so that the two sides claim from tables of their own and no turn drains either.

- ``galera_claim_rate_3_nodes_vs_1``: claim+submit cycles per second (:data:`CLIENTS` client threads of this
  process, each with one keep-alive connection, claiming one job at a time and submitting its result, as
  ``bench_claims.http_cycles``) with the threads spread over the three servers (side A: thread ``i`` on server
  ``i % 3``), over the same threads all on the server of node 1 (side B). Each thread submits to the server it claimed
  from: a worker has one API URL (a load balancer's address in front of the servers, or one server's), and
  that is what it does. The two sides run in turns (three nodes, one node, three nodes, ...; :data:`TURNS`
  turns of :data:`TURN_SECONDS` s each, after :data:`WARMUP_SECONDS` s not counted); the ratio is of the two
  medians. A claim answered ``{"jobs": []}`` (every retry of it lost at certification) or 503 waits 1 s
  (the server's ``Retry-After``) as the SDK's worker does; a submit answered 503 is sent again after 1 s.
- ``galera_cert_conflicts_per_1000_claims_3_nodes`` and ``..._1_node`` (for information): the certification
  conflicts of each side, ``wsrep_local_cert_failures`` plus ``wsrep_local_bf_aborts`` summed over the three
  nodes (each read just before and just after each of the side's turns, warm-up included), per 1,000 claims
  that got a job in those same calls. Every transaction counts (a submit's, a counter's), not only the claims';
  printed beside it, ``wsrep_local_replays`` (the BF aborts a node ran again itself, the transaction having
  passed certification: no client sees them), the transactions the servers ran again after a deadlock or a
  lost certification (their log's "running it again" lines) by function, the share of claim transactions
  lost, and the claims turned away or answered 503.
- Beside them, the CPU per cycle of each side (over every turn, warm-up and the end of the last cycles
  included): the three API processes', this client's and the three ``mariadbd`` nodes'. At the end the counts
  each server shows for each software must equal a recount on its own node, and the done jobs the submits
  this run saw answered 200.

Everything shares this machine's 2 cores: the three ``mariadbd`` nodes (each applying the others' write sets
as well as running its own), the three API processes and the client threads. Spreading the workers gives
the cluster no more CPU here, only more processes to share it (side A also has three API processes where
side B has one, each with its own GIL) and write sets to certify and apply on every node. The ratio is what
it is on this stack; on three machines each node and its server would have cores of their own.

Other sessions on the cluster (a test run on it meanwhile) change its counters and take its CPU: the
databases they use are printed when a turn sees any.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import re
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests
from bench_claims import RESULT_INFO
from bulk import insert_images
from harness import (
    MARIADB,
    Api,
    Figure,
    LoadResult,
    Server,
    cpu_seconds,
    drop_database,
    fresh_database,
    mysql,
    register,
    run_load,
    say,
)

from heartbeat.db.models import JobStatus, job_table_name

sys.path.append(str(Path(__file__).resolve().parents[1]))  # the tests folder: galera_cluster
import galera_cluster

GALERA_DB = dataclasses.replace(
    MARIADB, host=galera_cluster.NODES[0][0], port=galera_cluster.NODES[0][1], database="heartbeat_bench_galera"
)
NODE_DBS = [dataclasses.replace(GALERA_DB, host=host, port=port) for host, port in galera_cluster.NODES]
IMAGES = 60_000  # each software's pending jobs: more than either side claims in all its turns
CLIENTS = 16
TURNS, TURN_SECONDS, WARMUP_SECONDS = 6, 5.0, 1.0
THREE_NODES, ONE_NODE = "three_nodes", "one_node"  # the two sides' software (a job table each)
RETRY_AFTER_SECONDS = 1.0  # what the server's Retry-After says on a lost claim or a 503
SUBMIT_ATTEMPTS = 5
CONFLICT_STATUS = ("wsrep_local_cert_failures", "wsrep_local_bf_aborts")
# Of the BF aborts, those a node ran again itself (the transaction had passed certification): no client sees them.
WSREP_COUNTERS = (*CONFLICT_STATUS, "wsrep_local_replays")
RETRY_LINE = re.compile(r"(\w[\w ]*?) in (\S+) \(attempt \d+\): running it again")


def galera_figures(workdir: Path, free_port: Callable[[], int]) -> list[Figure]:
    """The claim rate on three nodes over one, and each side's certification conflicts per 1,000 claims."""
    galera_cluster.ensure_up()
    fresh_database(GALERA_DB)
    try:
        return claim_rates(workdir, free_port)
    finally:
        drop_database(GALERA_DB)


# --- what one side measured --------------------------------------------------------------------


@dataclasses.dataclass
class Worker:
    """One client thread's connection to its server, and what its cycles met."""

    api: Api
    claims: int = 0  # answered with a job
    turned_away: int = 0  # answered {"jobs": []}: every run of the claim lost (or no work left)
    unavailable: int = 0  # 503 answers, claims and submits
    submits: int = 0  # answered 200

    def close(self) -> None:
        self.api.close()


@dataclasses.dataclass
class Side:
    """One side's software and servers (thread ``i`` on ``servers[i % len(servers)]``) and its turns' sums."""

    name: str
    software: str
    servers: list[Server]
    rates: list[float] = dataclasses.field(default_factory=list)
    workers: list[Worker] = dataclasses.field(default_factory=list)
    conflicts: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(WSREP_COUNTERS, 0))
    retried: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    api_cpu: float = 0.0
    client_cpu: float = 0.0
    nodes_cpu: float | None = 0.0  # None: a node's process was not found

    @property
    def claims(self) -> int:
        return sum(worker.claims for worker in self.workers)

    @property
    def cycles(self) -> int:
        return sum(worker.submits for worker in self.workers)

    @property
    def turned_away(self) -> int:
        return sum(worker.turned_away for worker in self.workers)

    @property
    def unavailable(self) -> int:
        return sum(worker.unavailable for worker in self.workers)

    def per_1000_claims(self) -> float:
        return 1000 * sum(self.conflicts[name] for name in CONFLICT_STATUS) / max(1, self.claims)


def conflict_status() -> dict[str, int]:
    """The conflict counters (and the replays) summed over the three nodes."""
    total = dict.fromkeys(WSREP_COUNTERS, 0)
    for _host, port in galera_cluster.NODES:
        status = galera_cluster.status(port)
        for name in WSREP_COUNTERS:
            total[name] += int(status[name])
    return total


def node_pids() -> list[int] | None:
    """The three nodes' ``mariadbd`` processes (matched on ``--defaults-file=<...>/nodeN/my.cnf``), or None."""
    found: dict[int, int] = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:  # the process ended meanwhile
            continue
        if len(args) < 2 or not args[0].endswith(b"mariadbd") or not args[1].startswith(b"--defaults-file="):
            continue
        for number in range(1, len(galera_cluster.NODES) + 1):
            if args[1].endswith(f"/node{number}/my.cnf".encode()):
                found[number] = int(cmdline.parent.name)
    return [found[number] for number in sorted(found)] if len(found) == len(galera_cluster.NODES) else None


def log_retries(server: Server) -> collections.Counter[str]:
    """The transactions the server ran again so far (every attempt), by function and reason."""
    retried: collections.Counter[str] = collections.Counter()
    for line in server.log_path.read_text(errors="replace").splitlines():
        if match := RETRY_LINE.search(line):
            retried[f"{match.group(2)} ({match.group(1)})"] += 1
    return retried


def other_databases() -> set[str]:
    """The databases other client sessions on any node are in now (this benchmark's and none excluded)."""
    found: set[str] = set()
    for auth in NODE_DBS:
        with mysql(auth, database=False) as connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT DISTINCT DB FROM information_schema.PROCESSLIST"
                " WHERE DB IS NOT NULL AND DB NOT IN (%s, 'information_schema') AND USER <> 'system user'",
                (GALERA_DB.database,),
            )
            found.update(str(row[0]) for row in cursor.fetchall())
    return found


# --- the cycles ---------------------------------------------------------------------------------


def cycle_of(software: str) -> Callable[[Worker], int]:
    """One claim of one job and the submit of its result, both to the worker's own server."""
    claim_path = f"/v1/software/{software}/claim"
    claim_body = json.dumps({"max": 1}).encode()

    def cycle(worker: Worker) -> int:
        status, answer = worker.api.request("POST", claim_path, claim_body, "application/json")
        if status == 503:
            worker.unavailable += 1
            time.sleep(RETRY_AFTER_SECONDS)
            return 0
        if status != 200:
            raise RuntimeError(f"POST {claim_path} answered {status}: {answer}")
        if not answer["jobs"]:
            worker.turned_away += 1
            time.sleep(RETRY_AFTER_SECONDS)
            return 0
        worker.claims += 1
        [job] = answer["jobs"]
        path = f"/v1/software/{software}/jobs/{job['image_id']}/result"
        body = json.dumps({"token": job["token"], "info": RESULT_INFO}).encode()
        for _attempt in range(SUBMIT_ATTEMPTS):
            status, answer = worker.api.request("PUT", path, body, "application/json")
            if status != 503:
                break
            worker.unavailable += 1
            time.sleep(RETRY_AFTER_SECONDS)
        if status != 200:
            raise RuntimeError(f"PUT {path} answered {status}: {answer}")
        worker.submits += 1
        return 1

    return cycle


def turn(side: Side, every_server: list[Server], nodes: list[int] | None) -> LoadResult:
    """One turn of ``side``: its threads' cycles for ``TURN_SECONDS`` after ``WARMUP_SECONDS``, with the
    cluster's conflicts, the servers' retries and everyone's CPU read around the whole of it."""
    numbers = itertools.count()

    def make_worker() -> Worker:
        worker = Worker(Api(side.servers[next(numbers) % len(side.servers)]))
        side.workers.append(worker)
        return worker

    conflicts = conflict_status()
    retried = [log_retries(server) for server in every_server]
    api_cpu = sum(cpu_seconds(server.pid) for server in every_server)
    nodes_cpu = sum(cpu_seconds(pid) for pid in nodes) if nodes else 0.0
    client_cpu = time.process_time()
    load = run_load(CLIENTS, make_worker, cycle_of(side.software), seconds=TURN_SECONDS, warmup_seconds=WARMUP_SECONDS)
    side.client_cpu += time.process_time() - client_cpu
    side.api_cpu += sum(cpu_seconds(server.pid) for server in every_server) - api_cpu
    if nodes and side.nodes_cpu is not None:
        side.nodes_cpu += sum(cpu_seconds(pid) for pid in nodes) - nodes_cpu
    else:
        side.nodes_cpu = None
    for server, before in zip(every_server, retried, strict=True):
        side.retried.update(log_retries(server) - before)
    for name, value in conflict_status().items():
        side.conflicts[name] += value - conflicts[name]
    side.rates.append(load.per_second)
    return load


# --- the figures ---------------------------------------------------------------------------------


def claim_rates(workdir: Path, free_port: Callable[[], int]) -> list[Figure]:
    started = time.monotonic()
    shared = ("--storage", f"local:{workdir / 'store'}", "--secret-key", secrets.token_urlsafe(32))
    servers: list[Server] = []
    try:
        for number, auth in enumerate(NODE_DBS, start=1):  # server 1 first: it makes the tables
            servers.append(Server(auth, workdir / f"server{number}", free_port(), *shared))
            if number == 1:
                with mysql(GALERA_DB) as connection:
                    insert_images(connection, "g", 1, IMAGES)
        register(servers[0], THREE_NODES)
        register(servers[0], ONE_NODE)
        say(
            "galera_setup",
            f"{IMAGES} images, a software for each side (its table backfilled through server 1), "
            f"3 servers on 3 nodes in {time.monotonic() - started:.0f} s",
        )
        sides = (Side("3_nodes", THREE_NODES, servers), Side("1_node", ONE_NODE, servers[:1]))
        nodes = node_pids()
        others: set[str] = set()
        for _turn in range(TURNS):
            for side in sides:
                turn(side, servers, nodes)
                others |= other_databases()
        check_counts(servers, sides)
    except BaseException:
        for server in servers:  # the logs go with the temporary folder: show why first
            tail = server.log_path.read_text(errors="replace").splitlines()[-20:]
            print("\n".join([f"{server.url}'s last log lines:", *tail]), file=sys.stderr)
        raise
    finally:
        for server in servers:
            server.stop()
    three, one = sides
    medians = [statistics.median(side.rates) for side in sides]
    say(
        "galera_claim_http",
        f"{medians[0]:.0f} cycles/s with the threads on 3 nodes (turns: {_rates(three.rates)}), {medians[1]:.0f} "
        f"on node 1 alone (turns: {_rates(one.rates)}); medians of {TURNS} turns of {TURN_SECONDS:g} s, "
        f"{CLIENTS} client threads",
    )
    for side in sides:
        say(f"galera_claims_{side.name}", _describe(side))
    if others:
        say("galera_other_sessions", f"databases of other sessions on the cluster meanwhile: {sorted(others)}")
    return [
        Figure("galera_claim_rate_3_nodes_vs_1", medians[0] / medians[1], ">= 0.8"),
        Figure("galera_cert_conflicts_per_1000_claims_3_nodes", three.per_1000_claims(), ""),
        Figure("galera_cert_conflicts_per_1000_claims_1_node", one.per_1000_claims(), ""),
    ]


def _rates(values: list[float]) -> str:
    return ", ".join(f"{value:.0f}" for value in values)


def _describe(side: Side) -> str:
    cycles = max(1, side.cycles)
    conflicts = ", ".join(f"{name} {value}" for name, value in side.conflicts.items())
    retried = ", ".join(f"{name} {count}" for name, count in side.retried.most_common()) or "none"
    # A claim answered empty lost its last run too (the server logs the runs it retries, not the last).
    claim_losses = side.turned_away + sum(
        count for name, count in side.retried.items() if name.startswith("Claims._claim_round ")
    )
    lost = claim_losses / max(1, side.claims + claim_losses)
    text = (
        f"{side.claims} claims with a job ({conflicts}), {side.turned_away} turned away empty, "
        f"{lost:.0%} of claim transactions lost and run again, "
        f"{side.unavailable} answered 503; the servers ran again: {retried}; "
        f"CPU per cycle: APIs {side.api_cpu * 1e3 / cycles:.2f} ms, client {side.client_cpu * 1e3 / cycles:.2f} ms"
    )
    if side.nodes_cpu is not None:
        text += f", the 3 mariadbd {side.nodes_cpu * 1e3 / cycles:.2f} ms"
    return text


def check_counts(servers: list[Server], sides: tuple[Side, ...]) -> None:
    """The counts each server shows for each software equal a recount on its node, and the submits seen."""
    wrong: list[str] = []
    for side in sides:
        expected = {JobStatus.DONE.value: side.cycles, JobStatus.CLAIMED.value: side.claims - side.cycles}
        expected[JobStatus.PENDING.value] = IMAGES - side.claims
        if expected[JobStatus.PENDING.value] <= 0:
            raise RuntimeError(f"{side.software} ran out of jobs: raise IMAGES")
        for server, auth in zip(servers, NODE_DBS, strict=True):
            shown = requests.get(f"{server.url}/v1/software/{side.software}", timeout=30).json()["counts"]
            with mysql(auth) as connection, connection.cursor() as cursor:
                cursor.execute("SET SESSION wsrep_sync_wait = 1")
                cursor.execute(f"SELECT status, COUNT(*) FROM `{job_table_name(side.software)}` GROUP BY status")
                counted = {str(status): int(count) for status, count in cursor.fetchall()}
            for status in JobStatus:
                want = (shown.get(status.value), counted.get(status.value, 0), expected.get(status.value, 0))
                if len(set(want)) != 1:
                    wrong.append(f"{side.software} {status.value} on {auth.port}: shown, recount, submits seen {want}")
    say("galera_counts", "; ".join(wrong) if wrong else "every server's counts equal its node's recount and the run")


def _main() -> None:
    import socket
    import tempfile

    def free_port() -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])

    with tempfile.TemporaryDirectory(prefix="bench_galera_") as folder:
        for figure in galera_figures(Path(folder), free_port):
            print(figure.line(), flush=True)


if __name__ == "__main__":
    _main()
