"""Flow control (issue 28): what it costs a software without limits, and how much of a limit is used.

- ``claim_rate_unlimited_vs_before``: claim+submit cycles per second (16 client threads, one job per
  claim, as ``claim_http``) of a software without limits through this tree's server, over the same
  through the tree of the commit before flow control (:data:`BEFORE_FLOW`, unpacked with ``git archive``
  by :func:`harness.tree_of`; its server runs with its ``PYTHONPATH`` at the unpacked ``src``). Both
  servers run at once on one database, each claiming from its own software's table of the same images,
  in turns (this tree, before, this tree, before, ...); the ratio is of the two medians.
- ``limited_throughput_vs_limit``: jobs per second done by :data:`LIMITED_WORKERS` workers on a software
  registered with ``max_in_flight`` :data:`MAX_IN_FLIGHT`, over the ideal ``MAX_IN_FLIGHT /
  HANDLER_SECONDS`` (every slot always busy with a handler). Each worker is a thread of this process with
  the SDK's client (its own keep-alive session), doing what the SDK's worker does with one handler:
  claim one job with ``wait_seconds``, and when the claim comes back empty with a ``Retry-After`` (no room
  to wait on the server), sleep that times 1 to 1.5; else run a handler of :data:`HANDLER_SECONDS`
  (a sleep) and submit. Meanwhile a sampler reads the live leases (``claimed`` and not run out) straight
  from MariaDB every few milliseconds: the most it saw must not pass the limit. Printed beside it, to say
  where a shortfall goes: the share of the measured time spent at each count of live leases, how long
  the claims that got a job and the submits took, and MariaDB's deadlocks and row lock waits with the
  server's own retries after a deadlock (from its log).
- ``limited_vs_as_many_free_workers``: the same jobs per second over those of :data:`MAX_IN_FLIGHT`
  workers on a software without limits, run in the same server in turns with the limited load (the
  limited load, then this one, twice): the most a limit of that many can give on this stack, where
  every job's lease also holds the claim's answer and the submit's request. Below 1, the part the limit
  itself loses; the rest of the shortfall from the ideal is the cost of those requests
  (``flow_limited_lease_ms`` prints the lease's length beside the handler's).
"""

from __future__ import annotations

import dataclasses
import random
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench_claims import RESULT_INFO, http_cycles
from bulk import insert_images
from harness import (
    MARIADB,
    Api,
    Figure,
    LoadResult,
    Server,
    drop_database,
    fresh_database,
    mysql,
    percentile,
    register,
    run_load,
    say,
    tree_of,
)

from heartbeat.db.models import JobStatus, job_table_name
from heartbeat.worker.client import Client

FLOW_DB = dataclasses.replace(MARIADB, database="heartbeat_bench_flow")
BEFORE_FLOW = "5a36cd1"  # the parent of 2e44d8a, the commit that brought flow control
CLAIM_IMAGES = 40_000  # each software's pending jobs: more than either side claims in all its turns
CLAIM_CLIENTS = 16
CLAIM_TURNS, TURN_SECONDS = 6, 5.0
LIMITED = "limited"
FREE = "free"  # the reference: no limit, MAX_IN_FLIGHT workers
LIMITED_TURNS = 2
MAX_IN_FLIGHT = 4
HANDLER_SECONDS = 0.05
LIMITED_WORKERS = 16
CLAIM_WAIT_SECONDS = 5.0
RETRY_AFTER_SPREAD = 1.5  # as the SDK's worker: a turned-away claim comes back after Retry-After times 1 to this
LIMITED_WARMUP_SECONDS, LIMITED_SECONDS = 3.0, 15.0
SAMPLE_SECONDS = 0.002
LOCK_STATUS = ("Innodb_deadlocks", "Innodb_row_lock_waits", "Innodb_row_lock_time")  # MariaDB's, all sessions


def flow_figures(workdir: Path, free_port: Callable[[], int]) -> list[Figure]:
    """Both flow-control figures, on one database (the claim part's images serve the limited part)."""
    fresh_database(FLOW_DB)
    try:
        found = [claim_rate(workdir / "claims", (free_port(), free_port()))]
        found.extend(limited_throughput(workdir / "limited", free_port()))
    finally:
        drop_database(FLOW_DB)
    return found


# --- a software without limits, this tree and the one before -----------------------------------


def knows_flow_control(server: Server, software: str) -> bool:
    """Whether the server shows ``max_in_flight`` on a software (the tree before flow control does not)."""
    api = Api(server)
    try:
        return "max_in_flight" in api.call("GET", f"/v1/software/{software}")
    finally:
        api.close()


def claim_rate(workdir: Path, ports: tuple[int, int]) -> Figure:
    before = tree_of(BEFORE_FLOW, workdir / "before")
    started = time.monotonic()
    with Server(FLOW_DB, workdir / "now", ports[0]) as now:  # it makes the tables, flow control's too
        with mysql(FLOW_DB) as connection:
            insert_images(connection, "f", 1, CLAIM_IMAGES)
        env = {"PYTHONPATH": str(before)}  # ahead of the editable install's path to this tree's src
        with Server(FLOW_DB, workdir / "before", ports[1], env=env) as then:
            register(now, "unlimited_now")
            register(then, "unlimited_before")
            if not knows_flow_control(now, "unlimited_now") or knows_flow_control(then, "unlimited_before"):
                raise RuntimeError(f"the server run from {before} is not the tree before flow control")
            say(
                "flow_claim_setup",
                f"{CLAIM_IMAGES} images, a software without limits on each tree (this one, {BEFORE_FLOW}) "
                f"in {time.monotonic() - started:.0f} s",
            )
            rates: tuple[list[float], list[float]] = ([], [])
            loads: tuple[list[LoadResult], list[LoadResult]] = ([], [])
            sides = ((now, "unlimited_now"), (then, "unlimited_before"))
            for _turn in range(CLAIM_TURNS):
                for (server, software), rate, side_loads in zip(sides, rates, loads, strict=True):
                    load = http_cycles(server, software, threads=CLAIM_CLIENTS, seconds=TURN_SECONDS)
                    if load.drained:
                        raise RuntimeError(f"{software} ran out of jobs: raise CLAIM_IMAGES")
                    rate.append(load.per_second)
                    side_loads.append(load)
    now_median, before_median = (statistics.median(rate) for rate in rates)
    say(
        "claim_http_unlimited",
        f"{now_median:.0f} cycles/s on this tree (turns: {_rates(rates[0])}), {before_median:.0f} before flow "
        f"control ({BEFORE_FLOW}; turns: {_rates(rates[1])}); medians of {CLAIM_TURNS} turns of {TURN_SECONDS:g} s",
    )
    for name, side_loads in zip(("now", "before"), loads, strict=True):
        say(f"claim_http_unlimited_cpu_{name}", _cpu_per_cycle(side_loads))
    return Figure("claim_rate_unlimited_vs_before", now_median / before_median, ">= 0.95")


def _rates(values: list[float]) -> str:
    return ", ".join(f"{value:.0f}" for value in values)


def _cpu_per_cycle(loads: list[LoadResult]) -> str:
    """CPU per cycle over every turn: the API's, this client's, MariaDB's (its whole server's)."""
    cycles = sum(load.items for load in loads)
    api = sum(load.server_cpu_seconds for load in loads)
    client = sum(load.client_cpu_seconds for load in loads)
    text = f"API {api * 1e3 / cycles:.2f} ms/cycle, client {client * 1e3 / cycles:.2f} ms/cycle"
    if all(load.database_cpu_seconds is not None for load in loads):
        database = sum(load.database_cpu_seconds or 0.0 for load in loads)
        text += f", MariaDB {database * 1e3 / cycles:.2f} ms/cycle"
    return text


# --- a software with max_in_flight: how much of the limit is used -------------------------------


class LeaseSampler(threading.Thread):
    """Reads the live leases of ``software`` (``claimed``, lease not run out) in MariaDB every
    :data:`SAMPLE_SECONDS` on a connection of its own, until :meth:`stop`: each count with when it was read."""

    def __init__(self, software: str):
        super().__init__(daemon=True, name="lease-sampler")
        self._statement = f"SELECT COUNT(*) FROM `{job_table_name(software)}` WHERE status = %s AND available_at > %s"
        self._stopping = threading.Event()
        self.samples: list[tuple[float, int]] = []  # (monotonic seconds, live leases)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with mysql(FLOW_DB) as connection, connection.cursor() as cursor:
                while not self._stopping.is_set():
                    cursor.execute(self._statement, (JobStatus.CLAIMED.value, time.time()))
                    self.samples.append((time.monotonic(), int(cursor.fetchone()[0])))
                    self._stopping.wait(SAMPLE_SECONDS)
        except BaseException as error:
            self.error = error

    def stop(self) -> None:
        self._stopping.set()
        self.join(30)
        if self.error is not None:
            raise RuntimeError(f"the lease sampler failed: {self.error!r}") from self.error

    @property
    def most(self) -> int:
        """The most live leases any sample saw, the warm-up and the end included."""
        return max((live for _at, live in self.samples), default=0)

    def time_shares(self, start: float, end: float) -> dict[int, float]:
        """The share of the time from ``start`` to ``end`` (monotonic) spent at each count, each sample's
        count holding until the next sample."""
        shares: dict[int, float] = {}
        for (at, live), (following, _next) in zip(self.samples, self.samples[1:], strict=False):
            held = min(following, end) - max(at, start)
            if held > 0:
                shares[live] = shares.get(live, 0.0) + held / (end - start)
        return shares


def lock_status() -> dict[str, int]:
    with mysql(FLOW_DB) as connection, connection.cursor() as cursor:
        cursor.execute("SHOW GLOBAL STATUS WHERE Variable_name IN %s", (LOCK_STATUS,))
        found = {name: int(value) for name, value in cursor.fetchall()}
    return {name: found.get(name, 0) for name in LOCK_STATUS}


def server_log_counts(server: Server) -> tuple[dict[str, int], int]:
    """From the server's log: the transactions it ran again after a deadlock, by function (every attempt),
    and how many requests it answered 503 because the database failed (retries used up)."""
    retried: dict[str, int] = {}
    unavailable = 0
    for line in server.log_path.read_text(errors="replace").splitlines():
        if "deadlock in " in line:
            name = line.split("deadlock in ", 1)[1].split()[0]
            retried[name] = retried.get(name, 0) + 1
        elif "database unavailable" in line:
            unavailable += 1
    return retried, unavailable


@dataclasses.dataclass
class WorkerState:
    """One worker's client and what its claims met."""

    client: Client
    empty_claims: int = 0  # came back with no job after waiting
    turned_away: int = 0  # no job and a Retry-After: no room to wait on the server
    slept_seconds: float = 0.0  # asleep on those Retry-Afters
    claim_seconds: list[float] = dataclasses.field(default_factory=list)  # of the claims that got a job
    submit_seconds: list[float] = dataclasses.field(default_factory=list)

    def close(self) -> None:
        self.client.close()


def limited_throughput(workdir: Path, port: int) -> list[Figure]:
    with Server(FLOW_DB, workdir, port) as server:
        api = Api(server, timeout_seconds=600)
        media = {"name": LIMITED, "lease_seconds": 600, "max_in_flight": MAX_IN_FLIGHT}
        shown = api.call("POST", "/v1/software", media, expect=201)
        api.call("POST", "/v1/software", {"name": FREE, "lease_seconds": 600}, expect=201)
        api.close()
        if shown.get("max_in_flight") != MAX_IN_FLIGHT:
            raise RuntimeError(f"registered without its limit: {shown}")
        states: list[WorkerState] = []

        def make_state() -> WorkerState:
            state = WorkerState(Client(server.url))
            states.append(state)
            return state

        def cycle_of(software: str, record: bool) -> Callable[[WorkerState], int | None]:
            def cycle(state: WorkerState) -> int | None:
                started = time.monotonic()
                claim = state.client.claim_jobs(software, 1, wait_seconds=CLAIM_WAIT_SECONDS)
                if not claim.jobs:
                    if claim.retry_after_seconds is None:
                        state.empty_claims += 1
                    else:
                        state.turned_away += 1
                        pause = claim.retry_after_seconds * random.uniform(1.0, RETRY_AFTER_SPREAD)
                        state.slept_seconds += pause
                        time.sleep(pause)
                    return 0
                [job] = claim.jobs
                if record:
                    state.claim_seconds.append(time.monotonic() - started)
                time.sleep(HANDLER_SECONDS)  # the handler
                started = time.monotonic()
                state.client.submit(software, job.image_id, job.token, RESULT_INFO)
                if record:
                    state.submit_seconds.append(time.monotonic() - started)
                return 1

            return cycle

        locks_before = lock_status()
        sampler = LeaseSampler(LIMITED)
        sampler.start()
        loads: list[LoadResult] = []
        free_loads: list[LoadResult] = []
        measured: list[tuple[float, float]] = []  # (monotonic start, seconds) of each limited load
        try:
            for _turn in range(LIMITED_TURNS):
                called = time.monotonic()
                loads.append(
                    run_load(
                        LIMITED_WORKERS,
                        make_state,
                        cycle_of(LIMITED, True),
                        seconds=LIMITED_SECONDS,
                        warmup_seconds=LIMITED_WARMUP_SECONDS,
                        server=server,
                    )
                )
                # as run_load times it (its clients are made in milliseconds)
                measured.append((called + LIMITED_WARMUP_SECONDS, loads[-1].seconds))
                free_loads.append(
                    run_load(
                        MAX_IN_FLIGHT,
                        lambda: WorkerState(Client(server.url)),
                        cycle_of(FREE, False),
                        seconds=LIMITED_SECONDS,
                        warmup_seconds=LIMITED_WARMUP_SECONDS,
                        server=server,
                    )
                )
        finally:
            sampler.stop()
        locks = {name: value - locks_before[name] for name, value in lock_status().items()}
        retried, unavailable = server_log_counts(server)
    if any(item.drained for item in loads + free_loads):
        raise RuntimeError(f"{LIMITED} or {FREE} ran out of jobs: raise CLAIM_IMAGES")
    ideal = MAX_IN_FLIGHT / HANDLER_SECONDS
    rate = statistics.median(item.per_second for item in loads)
    free_rate = statistics.median(item.per_second for item in free_loads)
    items = sum(item.items for item in loads)
    api_cpu = sum(item.server_cpu_seconds for item in loads)
    say(
        "flow_limited_load",
        f"{rate:.1f} jobs/s (ideal {ideal:.0f}; turns: {_rates([item.per_second for item in loads])}) over "
        f"{LIMITED_TURNS} turns of {LIMITED_SECONDS:g} s, {LIMITED_WORKERS} workers (claim wait_seconds "
        f"{CLAIM_WAIT_SECONDS:g}, handler {HANDLER_SECONDS * 1e3:.0f} ms), max_in_flight {MAX_IN_FLIGHT}; "
        f"API CPU {api_cpu * 1e3 / max(1, items):.2f} ms/job",
    )
    say(
        "flow_free_load",
        f"{free_rate:.1f} jobs/s by {MAX_IN_FLIGHT} workers on a software without limits, in turns with it "
        f"(turns: {_rates([item.per_second for item in free_loads])}): each job's lease "
        f"{MAX_IN_FLIGHT / free_rate * 1e3:.1f} ms for a handler of {HANDLER_SECONDS * 1e3:.0f} ms",
    )
    say(
        "flow_limited_claims",
        f"over the whole run: {sum(state.turned_away for state in states)} claims turned away with a Retry-After "
        f"({sum(state.slept_seconds for state in states):.0f} s asleep on them in all), "
        f"{sum(state.empty_claims for state in states)} came back empty after waiting",
    )
    for name in ("submit", "claim"):
        took = [seconds * 1e3 for state in states for seconds in getattr(state, f"{name}_seconds")]
        say(
            f"flow_limited_{name}_ms",
            f"p50 {percentile(took, 0.5):.0f}, p90 {percentile(took, 0.9):.0f}, p99 {percentile(took, 0.99):.0f}, "
            f"max {max(took):.0f} over {len(took)}"
            + (" (claims that got a job, waiting included)" if name == "claim" else ""),
        )
    say(
        "flow_limited_locks",
        f"over the whole run: MariaDB {locks['Innodb_deadlocks']} deadlocks, {locks['Innodb_row_lock_waits']} row "
        f"lock waits ({locks['Innodb_row_lock_time']} ms waited); the API ran again after a deadlock: "
        + (", ".join(f"{name} {count}" for name, count in sorted(retried.items())) or "nothing")
        + f"; answered 503 (database unavailable) {unavailable} times",
    )
    shares: dict[int, float] = {}
    for start, seconds in measured:
        for count, share in sampler.time_shares(start, start + seconds).items():
            shares[count] = shares.get(count, 0.0) + share / len(measured)
    by_count = ", ".join(f"{count}: {share:.0%}" for count, share in sorted(shares.items()))
    say(
        "flow_limited_live_leases",
        f"max {sampler.most} (limit {MAX_IN_FLIGHT}) over {len(sampler.samples)} reads of the database; share of "
        f"the measured time at each count: {by_count}",
    )
    return [
        Figure("limited_throughput_vs_limit", rate / ideal, ">= 0.9"),
        Figure("limited_vs_as_many_free_workers", rate / free_rate, ">= 0.95"),
        Figure("limited_max_live_leases", sampler.most, f"<= {MAX_IN_FLIGHT}"),
    ]
