"""Events: what the outbox costs a claim, how late a consumer hears of a result, and a consumer's memory.

- ``claim_rate_with_vs_without_events``: claim+submit cycles per second (16 client threads, one job per
  claim, as ``claim_http``) through this tree's server over the same through the tree of the commit
  before the events (:data:`BEFORE_EVENTS`, unpacked with ``git archive``: the working tree is not
  touched), its server run from there (its ``PYTHONPATH`` names the unpacked ``src``). Both servers run at
  once on one database, each claiming from its own software's table of the same images, in turns
  (with, without, with, without, ...); the ratio is of the two medians.
- ``event_lag_p99_ms_pull`` and ``_stream``: with about :data:`LAG_RATE` results a second submitted
  (paced worker threads, one job a claim) to ``heartbeat serve --processes 2``, one consumer long-polls
  ``GET /v1/events?wait_seconds=20`` and one reads ``GET /v1/events/stream``; an event's lag is the time
  the consumer read its ``job.done`` minus the time the worker had the submit's answer (one clock:
  workers and consumers are threads of this process, and the events cross the server's processes).
- ``events_rss_1m_vs_10k``: the API's peak RSS (``VmHWM``) while a consumer reads 1,000,000 events over
  the same for 10,000, each read by a fresh ``--processes 1`` server, following ``next_cursor`` with
  ``limit=1000``; ``events_consumer_rss_1m_vs_10k`` the same of the consumer (a process of its own, the
  standard library only). The events are inserted straight into MariaDB with their positions given, as
  the sequencer would give them.
- ``webhook_lag_p99_ms`` and ``webhook_deliveries_per_second`` (see :func:`webhooks`), when the tree has
  ``POST /v1/webhooks``; else "not measured".
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import http.server
import inspect
import json
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    memory_kib,
    mysql,
    percentile,
    register,
    run_load,
    say,
    tree_of,
)

import heartbeat
from heartbeat.db.models import Event

EVENTS_DB = dataclasses.replace(MARIADB, database="heartbeat_bench_events")
FEED_DB = dataclasses.replace(MARIADB, database="heartbeat_bench_events_feed")
BEFORE_EVENTS = "6dc25fc"  # the commit before the events outbox (102ce13)
CLAIM_IMAGES = 40_000  # each software's pending jobs: more than either side claims in all its turns
CLAIM_CLIENTS = 16
CLAIM_TURNS, TURN_SECONDS = 4, 5.0
LAG_RATE = 200  # results a second
LAG_WORKERS = 24  # paced: room to keep the rate when cycles take longer under the load
LAG_WARMUP_SECONDS, LAG_SECONDS = 2.0, 15.0
CATCH_UP_SECONDS = 10.0  # after the load: how long the consumers may take to read its last events
FEED_SMALL, FEED_LARGE = 10_000, 1_000_000
FEED_PAGE = 1000
FEED_CHUNK = 100_000
WARMUP_PAGES = 48  # three for each of the server's 16 threads
DONE_DATA = {"status": "done", "version": "1", "attempt": 1, "info": RESULT_INFO}  # as queue.results writes it


def event_figures(workdir: Path, free_port: Callable[[], int]) -> list[Figure]:
    """Every events figure, each part on servers of its own (``free_port`` gives their ports)."""
    found = [claim_rate(workdir / "claims", (free_port(), free_port()))]
    found.extend(event_lag(workdir / "lag", free_port()))  # on the claim part's database and images
    drop_database(EVENTS_DB)
    found.extend(feed_memory(workdir / "feed", (free_port(), free_port(), free_port())))
    return found


# --- the claim rate with and without the events ------------------------------------------------


def has_events(server: Server) -> bool:
    """Whether the server answers ``GET /v1/events`` (the tree before the events answers 404)."""
    api = Api(server)
    try:
        status, _ = api.request("GET", "/v1/events")
    finally:
        api.close()
    return status == 200


def claim_rate(workdir: Path, ports: tuple[int, int]) -> Figure:
    fresh_database(EVENTS_DB)
    before = tree_of(BEFORE_EVENTS, workdir / "before")
    started = time.monotonic()
    with Server(EVENTS_DB, workdir / "with", ports[0]) as with_events:  # it makes the tables, events' too
        with mysql(EVENTS_DB) as connection:
            insert_images(connection, "e", 1, CLAIM_IMAGES)
        env = {"PYTHONPATH": str(before)}  # ahead of the editable install's path to this tree's src
        with Server(EVENTS_DB, workdir / "without", ports[1], env=env) as without_events:
            if not has_events(with_events) or has_events(without_events):
                raise RuntimeError(f"the server run from {before} is not the tree without events")
            register(with_events, "with_events")
            register(without_events, "without_events")
            say(
                "events_claim_setup",
                f"{CLAIM_IMAGES} images, a software on each tree (this one, {BEFORE_EVENTS}) "
                f"in {time.monotonic() - started:.0f} s",
            )
            rates: tuple[list[float], list[float]] = ([], [])
            loads: tuple[list[LoadResult], list[LoadResult]] = ([], [])
            sides = ((with_events, "with_events"), (without_events, "without_events"))
            for _turn in range(CLAIM_TURNS):
                for (server, software), rate, side_loads in zip(sides, rates, loads, strict=True):
                    load = http_cycles(server, software, threads=CLAIM_CLIENTS, seconds=TURN_SECONDS)
                    if load.drained:
                        raise RuntimeError(f"{software} ran out of jobs: raise CLAIM_IMAGES")
                    rate.append(load.per_second)
                    side_loads.append(load)
    with_median, without_median = (statistics.median(rate) for rate in rates)
    say(
        "claim_http_events",
        f"{with_median:.0f} cycles/s with the events (turns: {_rates(rates[0])}), {without_median:.0f} without "
        f"({BEFORE_EVENTS}; turns: {_rates(rates[1])}); medians of {CLAIM_TURNS} turns of {TURN_SECONDS:g} s",
    )
    for name, side_loads in zip(("with", "without"), loads, strict=True):
        say(f"claim_http_events_cpu_{name}", _cpu_per_cycle(side_loads))
    return Figure("claim_rate_with_vs_without_events", with_median / without_median, ">= 0.9")


def _rates(values: list[float]) -> str:
    return ", ".join(f"{value:.0f}" for value in values)


def _cpu_per_cycle(loads: list[LoadResult]) -> str:
    """CPU per cycle over every turn: the API's (its sequencer thread's too), this client's, MariaDB's."""
    cycles = sum(load.items for load in loads)
    api = sum(load.server_cpu_seconds for load in loads)
    client = sum(load.client_cpu_seconds for load in loads)
    text = f"API {api * 1e3 / cycles:.2f} ms/cycle, client {client * 1e3 / cycles:.2f} ms/cycle"
    if all(load.database_cpu_seconds is not None for load in loads):
        database = sum(load.database_cpu_seconds or 0.0 for load in loads)
        text += f", MariaDB {database * 1e3 / cycles:.2f} ms/cycle"
    return text


# --- the lag of a consumer ---------------------------------------------------------------------


class Consumer(threading.Thread):
    """A consumer of the events on a connection of its own: the time it read each ``job.done`` of
    ``software``, by image. :meth:`stop` ends it by shutting its socket."""

    def __init__(self, server: Server, software: str):
        super().__init__(daemon=True, name=type(self).__name__)
        self.software = software
        self.received: dict[str, float] = {}
        self.ready = threading.Event()  # its cursor is ``now``: it gets every event after this
        self.error: BaseException | None = None
        self._stopping = threading.Event()
        self._connection = http.client.HTTPConnection(server.host, server.port, timeout=60)
        self._connection.connect()
        self._socket = self._connection.sock

    def note(self, event: dict[str, Any], at: float) -> None:
        if event["type"] == "job.done" and event.get("software") == self.software:
            self.received.setdefault(event["image_id"], at)

    def run(self) -> None:
        try:
            self.consume(self._connection)
        except BaseException as error:
            if not self._stopping.is_set():  # else its socket was shut: the end asked for
                self.error = error
        finally:
            self.ready.set()

    def consume(self, connection: http.client.HTTPConnection) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):  # already closed
            self._socket.shutdown(socket.SHUT_RDWR)
        self.join(30)
        self._connection.close()
        if self.error is not None:
            raise RuntimeError(f"{self.name} failed: {self.error!r}") from self.error


class PullConsumer(Consumer):
    """``GET /v1/events?after=CURSOR&limit=1000&wait_seconds=20`` again and again, from ``now``."""

    def consume(self, connection: http.client.HTTPConnection) -> None:
        cursor = "now"
        while not self._stopping.is_set():
            connection.request("GET", f"/v1/events?after={cursor}&limit=1000&wait_seconds=20")
            self.ready.set()  # the server takes ``now`` as it reads the request, before it waits
            response = connection.getresponse()
            body = response.read()
            at = time.monotonic()
            if response.status != 200:
                raise RuntimeError(f"GET /v1/events answered {response.status}: {body[:200]!r}")
            page = json.loads(body)
            for event in page["events"]:
                self.note(event, at)
            cursor = page["next_cursor"]
            retry_after = response.getheader("Retry-After")
            if retry_after is not None and not page["events"]:  # no room to wait: as a client must
                self._stopping.wait(float(retry_after))


class StreamConsumer(Consumer):
    """``GET /v1/events/stream?after=now``, line by line."""

    def consume(self, connection: http.client.HTTPConnection) -> None:
        connection.request("GET", "/v1/events/stream?after=now&max_seconds=300")
        response = connection.getresponse()
        if response.status != 200 or response.getheader("Retry-After") is not None:
            raise RuntimeError(f"GET /v1/events/stream answered {response.status}: {response.read(200)!r}")
        while not self._stopping.is_set():
            line = response.readline()
            if not line:
                raise RuntimeError("the event stream ended")
            if line.startswith(b"retry:"):
                self.ready.set()  # the first line: the server has taken ``now``
            elif line.startswith(b"data:"):
                self.note(json.loads(line[5:]), time.monotonic())


def paced_cycles(
    server: Server, software: str, *, rate: float, submitted: dict[str, float], measured_from: list[float]
) -> LoadResult:
    """Claim+submit cycles (one job a claim) at about ``rate`` a second, ``LAG_WORKERS`` threads taking
    turns on one schedule; ``submitted[image_id]`` is when the submit's answer came."""
    claim_path = f"/v1/software/{software}/claim"
    lock = threading.Lock()
    next_slot = [time.monotonic()]

    def cycle(api: Api) -> int | None:
        with lock:
            # Behind the schedule (a slow cycle): catch up by a tenth of a second at most, no burst.
            slot = max(next_slot[0], time.monotonic() - 0.1)
            next_slot[0] = slot + 1 / rate
        pause = slot - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        jobs = api.call("POST", claim_path, {"max": 1})["jobs"]
        if not jobs:
            return None
        job = jobs[0]
        result = {"token": job["token"], "info": RESULT_INFO}
        api.call("PUT", f"/v1/software/{software}/jobs/{job['image_id']}/result", result)
        submitted[job["image_id"]] = time.monotonic()
        return 1

    measured_from.append(time.monotonic() + LAG_WARMUP_SECONDS)
    return run_load(
        LAG_WORKERS, lambda: Api(server), cycle, seconds=LAG_SECONDS, warmup_seconds=LAG_WARMUP_SECONDS, server=server
    )


def event_lag(workdir: Path, port: int) -> list[Figure]:
    """The pull and the stream consumers' lag under the paced load; then the webhooks' (:func:`webhooks`)."""
    env = {"HEARTBEAT_URL_ALLOW": "127.0.0.1"}  # the webhooks' receiver is local
    with Server(EVENTS_DB, workdir, port, "--processes", "2", env=env) as server:
        register(server, "lagged")
        found = lag_figures(
            server,
            [
                ("pull", "event_lag_p99_ms_pull", PullConsumer(server, "lagged")),
                ("stream", "event_lag_p99_ms_stream", StreamConsumer(server, "lagged")),
            ],
        )
        found.extend(webhooks(server))
    return found


def lag_figures(server: Server, listeners: list[tuple[str, str, Any]]) -> list[Figure]:
    """``listeners`` (name, figure, listener: ``start()``, ``ready``, ``received``, ``stop()``) started,
    the paced load run on ``lagged``, and each one's lag: when it had a ``job.done`` minus when the
    worker had the submit's answer, over the load's measured part."""
    for _name, _figure, listener in listeners:
        listener.start()
    for _name, _figure, listener in listeners:
        listener.ready.wait(30)
    time.sleep(0.5)  # a long poll's request has reached the server
    submitted: dict[str, float] = {}
    measured_from: list[float] = []
    try:
        load = paced_cycles(server, "lagged", rate=LAG_RATE, submitted=submitted, measured_from=measured_from)
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while time.monotonic() < deadline and any(len(each.received) < len(submitted) for *_, each in listeners):
            time.sleep(0.1)
    finally:
        errors = []
        for _name, _figure, listener in listeners:
            try:
                listener.stop()
            except RuntimeError as error:
                errors.append(error)
        if errors:
            raise errors[0]
    names = ", ".join(name for name, *_ in listeners)
    say(
        f"event_lag_load ({names})",
        f"{load.per_second:.0f} results/s for {load.seconds:.0f} s (goal {LAG_RATE}), {LAG_WORKERS} paced workers, "
        "heartbeat serve --processes 2",
    )
    found = []
    timed = [image for image, at in submitted.items() if at >= measured_from[0]]
    for name, figure, listener in listeners:
        lags = [(listener.received[image] - submitted[image]) * 1000 for image in timed if image in listener.received]
        missed = len(timed) - len(lags)
        if not lags:
            raise RuntimeError(f"the {name} consumer had none of the {len(timed)} job.done events")
        say(
            f"event_lag_{name}",
            f"p50 {percentile(lags, 0.5):.0f} ms, p99 {percentile(lags, 0.99):.0f} ms, max {max(lags):.0f} ms "
            f"over {len(lags)} job.done events"
            + (f"; {missed} NOT RECEIVED within {CATCH_UP_SECONDS:g} s of the load's end" if missed else ""),
        )
        found.append(Figure(figure, percentile(lags, 0.99), "<= 1000"))
    return found


# --- a consumer's memory -----------------------------------------------------------------------


def insert_events(auth: Any, count: int) -> float:
    """``count`` ``job.done`` events straight into the events table, positions 1..count given, and the
    sequencer's ``position`` row moved to the last: as if its passes had sequenced them. Their times are
    of the last hour (retention keeps them). Returns the seconds it took."""
    now = time.time()
    data = json.dumps(DONE_DATA, separators=(",", ":"))
    with mysql(auth) as connection:
        columns = {
            "id": "seq",
            "position": "seq",
            "type": "'job.done'",
            "time": f"{now - 3600} + seq / {count / 1800}",
            "software": "'fed'",
            "image_id": "CONCAT('f', LPAD(seq, 12, '0'))",
            "data": connection.escape(data),
        }
        model_columns = set(Event._meta.columns)  # type: ignore[attr-defined]
        if set(columns) != model_columns:
            raise RuntimeError(f"bulk event rows no longer match the model: {sorted(set(columns) ^ model_columns)}")
        names, expressions = ", ".join(f"`{name}`" for name in columns), ", ".join(columns.values())
        started = time.monotonic()
        with connection.cursor() as cursor:
            for first in range(1, count + 1, FEED_CHUNK):
                last = min(count, first + FEED_CHUNK - 1)
                cursor.execute(f"INSERT INTO events ({names}) SELECT {expressions} FROM seq_{first}_to_{last}")
            cursor.execute("UPDATE event_state SET value = %s WHERE name = 'position'", (count,))
            cursor.execute("ANALYZE TABLE events")
        return time.monotonic() - started


def consume(host: str, port: int, count: int, limit: int) -> None:
    """A consumer (run in a process of its own, from its source: it imports the standard library only):
    ``count`` events read from the oldest, page by page along ``next_cursor``, each checked to be the
    next position; prints a JSON line with how many, the seconds, and its peak RSS in KiB."""
    import http.client
    import json
    import time

    connection = http.client.HTTPConnection(host, port, timeout=300)
    cursor, read = "", 0
    started = time.monotonic()
    while read < count:
        path = f"/v1/events?limit={limit}" + (f"&after={cursor}" if cursor else "")
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise SystemExit(f"GET {path} answered {response.status}: {body[:200]!r}")
        page = json.loads(body)
        events = page["events"]
        if not events:
            break
        if int(events[0]["id"]) != read + 1 or int(events[-1]["id"]) != read + len(events):
            raise SystemExit(f"after {read} events, a page from {events[0]['id']} to {events[-1]['id']}")
        read += len(events)
        cursor = page["next_cursor"]
        del page, events, body
    seconds = time.monotonic() - started
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(json.dumps({"events": read, "seconds": seconds, "peak_kib": peak}))


def read_in_a_process(server: Server, count: int) -> dict[str, Any]:
    source = textwrap.dedent(inspect.getsource(consume))
    call = f"\nconsume({server.host!r}, {server.port}, {count}, {FEED_PAGE})\n"
    done = subprocess.run([sys.executable, "-I", "-c", source + call], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the consumer of {count} events failed: {done.stderr.strip()}")
    outcome: dict[str, Any] = json.loads(done.stdout)
    if outcome["events"] != count:
        raise RuntimeError(f"the consumer read {outcome['events']} events of {count}")
    return outcome


def warm_up(server: Server) -> None:
    """``WARMUP_PAGES`` reads of the first page before the measured ones, on both servers alike: each of
    the server's threads (waitress hands requests to them in turn) opens its MariaDB connection and
    grows its buffers on its first requests, a cost of its start, not of how many events are read."""
    api = Api(server)
    for _ in range(WARMUP_PAGES):
        api.call("GET", f"/v1/events?limit={FEED_PAGE}")
    api.close()


def feed_memory(workdir: Path, ports: tuple[int, int, int]) -> list[Figure]:
    fresh_database(FEED_DB)
    try:
        Server(FEED_DB, workdir / "tables", ports[0]).stop()  # it made the tables
        seconds = insert_events(FEED_DB, FEED_LARGE)
        say("events_feed_setup", f"{FEED_LARGE} events inserted with their positions in {seconds:.0f} s")
        consumers, servers = [], []
        for count, port in ((FEED_SMALL, ports[1]), (FEED_LARGE, ports[2])):
            with Server(FEED_DB, workdir / f"read_{count}", port) as server:
                warm_up(server)
                warm = memory_kib(server.pid)["VmHWM"] / 1024
                outcome = read_in_a_process(server, count)
                servers.append(memory_kib(server.pid)["VmHWM"] / 1024)
            consumers.append(outcome["peak_kib"] / 1024)
            say(
                f"events_read_{count}",
                f"{count / outcome['seconds']:.0f} events/s over {outcome['seconds']:.1f} s, pages of {FEED_PAGE}; "
                f"peak RSS: consumer {consumers[-1]:.1f} MiB, API {servers[-1]:.1f} MiB ({warm:.1f} after its warm-up)",
            )
    finally:
        drop_database(FEED_DB)
    return [
        Figure("events_rss_1m_vs_10k", servers[1] / servers[0], "<= 1.1"),
        Figure("events_consumer_rss_1m_vs_10k", consumers[1] / consumers[0], "<= 1.1"),
    ]


# --- webhooks ----------------------------------------------------------------------------------

WEBHOOKS_SOURCE = Path(heartbeat.__file__).parent / "api" / "webhooks.py"
BURST_EVENTS = 5000
BURST_BATCH = 50
DELIVERY_DEADLINE_SECONDS = 120.0


class Receiver:
    """A webhook receiver on a free local port (``http.server``, a thread per connection, keep-alive):
    it answers 204 at once and notes when each delivery came, by event ID, and of the ``job.done``
    events of ``software``, by image."""

    def __init__(self, software: str):
        self.software = software
        self.received: dict[str, float] = {}
        self.arrivals: dict[str, float] = {}  # by event ID
        self.ready = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                at = time.monotonic()
                receiver.note(json.loads(body), at)
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass  # a line per delivery on stderr: not wanted

        # A web server's listen backlog (the default 5 overflows under the sender's 8 concurrent sends).
        server_class = type("Server", (http.server.ThreadingHTTPServer,), {"request_queue_size": 128})
        self._http = server_class(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._http.serve_forever, name="receiver", daemon=True)

    def note(self, event: dict[str, Any], at: float) -> None:
        with self.lock:
            self.arrivals.setdefault(event["id"], at)
            if event["type"] == "job.done" and event.get("software") == self.software:
                self.received.setdefault(event["image_id"], at)

    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()
        self.ready.set()

    def stop(self) -> None:
        """A lag run ended: it serves on (the next part sends to it too); :meth:`close` ends it."""

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()


def webhooks(server: Server) -> list[Figure]:
    """``webhook_lag_p99_ms``: a local receiver subscribed to ``lagged``'s ``job.done`` under the paced
    load, as the consumers were. ``webhook_deliveries_per_second``: 5,000 ``job.done`` events made
    (batch submits), then a second webhook to the same receiver subscribed and the events replayed to it
    (``POST /v1/webhooks/{id}/replay``: 5,000 deliveries due at once); the rate from its first delivery
    to its last, and the time from the replay's answer to the last."""
    api = Api(server)
    status, _ = api.request("GET", "/v1/webhooks")
    if not WEBHOOKS_SOURCE.exists() or status == 404:
        reason = "not measured: no webhooks in this tree"
        say("webhook_deliveries_per_second", reason)
        say("webhook_lag_p99_ms", reason)
        return []
    # One receiver for both parts, serving until the end: what a real receiver does.
    receiver = Receiver("lagged")
    try:
        return webhook_figures(api, server, receiver)
    finally:
        receiver.close()
        api.close()


def webhook_figures(api: Api, server: Server, receiver: Receiver) -> list[Figure]:
    subscription = {"url": receiver.url, "types": ["job.done"], "software": "lagged"}
    webhook = api.call("POST", "/v1/webhooks", subscription, expect=201)
    found = lag_figures(server, [("webhook", "webhook_lag_p99_ms", receiver)])
    api.call("DELETE", f"/v1/webhooks/{webhook['id']}", expect=204)

    after = api.call("GET", "/v1/events?after=now&limit=1")["next_cursor"]
    made = 0
    while made < BURST_EVENTS:
        jobs = api.call("POST", "/v1/software/lagged/claim", {"max": min(BURST_BATCH, BURST_EVENTS - made)})["jobs"]
        if not jobs:
            raise RuntimeError(f"lagged ran out of jobs after {made}: raise CLAIM_IMAGES")
        results = [{"image_id": job["image_id"], "token": job["token"], "info": RESULT_INFO} for job in jobs]
        api.call("POST", "/v1/software/lagged/results", {"results": results})
        made += len(jobs)
    webhook = api.call("POST", "/v1/webhooks", subscription, expect=201)
    replayed = api.call("POST", f"/v1/webhooks/{webhook['id']}/replay", {"after": after})["replayed"]
    replayed_at = time.monotonic()
    if replayed != BURST_EVENTS:
        raise RuntimeError(f"the replay made {replayed} deliveries, not {BURST_EVENTS}")

    def burst_arrivals() -> list[float]:
        with receiver.lock:
            return sorted(at for event, at in receiver.arrivals.items() if int(event) > int(after))

    deadline = replayed_at + DELIVERY_DEADLINE_SECONDS
    while len(burst_arrivals()) < replayed and time.monotonic() < deadline:
        time.sleep(0.05)
    arrivals = burst_arrivals()
    if len(arrivals) < 2:
        first = api.call("GET", f"/v1/webhooks/{webhook['id']}/deliveries?limit=1")["deliveries"]
        say(
            "webhook_deliveries",
            f"FAILED: the receiver had {len(arrivals)} of {replayed} deliveries in "
            f"{DELIVERY_DEADLINE_SECONDS:g} s; the first: {first}",
        )
        return [*found, Figure("webhook_deliveries_per_second", 0.0, ">= 1")]
    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    say(
        "webhook_deliveries",
        f"{rate:.0f} deliveries/s from the first to the last of {len(arrivals)} (of {replayed} replayed); "
        f"the first {(arrivals[0] - replayed_at) * 1000:+.0f} ms, the last {arrivals[-1] - replayed_at:+.1f} s "
        "from the replay's answer"
        + ("" if len(arrivals) == replayed else f"; {replayed - len(arrivals)} NOT DELIVERED"),
    )
    found.append(Figure("webhook_deliveries_per_second", rate, ""))
    return found
