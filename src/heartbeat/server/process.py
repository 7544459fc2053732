"""One server process: the app under waitress, and its graceful stop.

SIGTERM or SIGINT make the process stop accepting connections, answer its waiting claims at once,
let the requests in flight finish (up to ``GRACE_SECONDS``), close its connections and exit 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import waitress
from waitress import wasyncore
from waitress.channel import HTTPChannel

from heartbeat.config import SettingError, Settings
from heartbeat.server.adjustments import waitress_options
from heartbeat.server.answers import HeadedChannel

log = logging.getLogger(__name__)

GRACE_SECONDS = 20.0  # for the requests in flight when a stop is asked
REAP_LEASES_EVERY_SECONDS = 2.0
LOOP_SECONDS = 0.2  # how soon the serving loop notices a stop
LISTEN_BACKLOG = 1024
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own name for it


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening; :class:`SettingError` when that cannot be."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, OverflowError) as error:
        raise SettingError(f"cannot listen on {host}:{port}: {error}") from None
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except OSError as error:
        sock.close()
        raise SettingError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def announce(settings: Settings) -> None:
    processes = f", {settings.processes} processes" if settings.processes > 1 else ""
    where = f"http://{settings.host}:{settings.port}"
    print(f"Heartbeat serving on {where} (data in {settings.data_dir}{processes})", flush=True)


def serve_process(settings: Settings, sock: socket.socket | None, *, first: bool, lifeline: int | None = None) -> int:
    """One server process: the app, its waitress loop, and a graceful stop; returns the exit status.

    ``sock``: the listening socket shared with the other processes; None to listen once the app is
    ready (a single process: connections are refused, not kept waiting, while it starts).
    ``lifeline``: the reading end of a pipe the supervisor holds open; the process stops when it closes.
    """
    from heartbeat.app import build_app
    from heartbeat.db.connect import connect
    from heartbeat.service import Service
    from heartbeat.storage import open_storage

    stop = threading.Event()
    metrics_dir = os.environ.get(METRICS_DIR_VARIABLE)
    if metrics_dir:  # several processes: counters go to prometheus-client's files, summed at each scrape
        from prometheus_client import values

        values.ValueClass = values.MultiProcessValue()
    with on_stop_signals(stop.set):
        if lifeline is not None:
            watch_lifeline(lifeline, stop)
        database = connect(
            data_dir=settings.data_dir,
            db_auth=settings.db_auth,
            threads=settings.threads,
            query_seconds=settings.query_seconds,
        )
        # Upgraded once by `heartbeat serve` before any process started.
        served = build_app(Service(settings, database, storage=open_storage(settings)), metrics_dir=metrics_dir or None)
        if sock is None:
            sock = listening_socket(settings.host, settings.port)
            announce(settings)
        reaper = served.lease_reaper(REAP_LEASES_EVERY_SECONDS) if first else None
        if reaper is not None:
            reaper.start()
        sequencer = served.event_sequencer()  # every process: its own commits wake it
        sequencer.start()
        webhook_sender = served.webhook_sender()  # every process: a few threads, one webhook each at a time
        webhook_sender.start()
        chores = served.service.privacy_chores  # every process: one of them holds the lease and works
        chores.start()
        server = waitress.create_server(served.app, sockets=[sock], **waitress_options(settings))
        server.channel_class = HeadedChannel
        try:
            _loop(server, until=stop.is_set)
            served.close()
            _drain(server, GRACE_SECONDS)
        finally:
            if reaper is not None:
                reaper.stop()
            chores.stop()
            webhook_sender.stop()
            sequencer.stop()
            database.close_all()
    return 0


def watch_lifeline(lifeline: int, stop: threading.Event) -> None:
    """Set ``stop`` once the pipe ``lifeline`` reads its end (every writer of it is gone), in a thread."""

    def watch() -> None:
        while os.read(lifeline, 1):
            pass  # nobody writes to it: only its end matters
        log.warning("the supervising process is gone: stopping")
        stop.set()

    threading.Thread(target=watch, name="heartbeat-lifeline", daemon=True).start()


def _loop(server: Any, *, until: Callable[[], bool], timeout_seconds: float = LOOP_SECONDS) -> None:
    while not until():
        wasyncore.loop(timeout=timeout_seconds, map=server._map, use_poll=server.adj.asyncore_use_poll, count=1)


def _busy(channel: Any) -> bool:
    """A connection with a request being received, run, or its answer still being sent."""
    return isinstance(channel, HTTPChannel) and bool(
        channel.requests or channel.request is not None or channel.total_outbufs_len
    )


def _drain(server: Any, grace_seconds: float) -> None:
    """Stop accepting, serve what is in flight for up to ``grace_seconds``, then close every connection."""
    wasyncore.dispatcher.close(server)  # the listening socket only: the trigger stays for the tasks
    deadline = time.monotonic() + grace_seconds
    _loop(
        server,
        until=lambda: time.monotonic() >= deadline or not any(_busy(c) for c in list(server._map.values())),
        timeout_seconds=0.05,
    )
    busy = sum(_busy(channel) for channel in list(server._map.values()))
    if busy:
        log.warning("stopping with %d request(s) still in flight after %.0f s", busy, grace_seconds)
    wasyncore.close_all(server._map)
    server.task_dispatcher.shutdown(cancel_pending=True, timeout=1)


@contextlib.contextmanager
def on_stop_signals(handler: Callable[[], None]) -> Iterator[None]:
    """Call ``handler`` (which must only set a flag) on SIGTERM and SIGINT, instead of dying.

    A new server process starts with these signals blocked (see :meth:`Supervisor.spawn`): one
    sent while it started is delivered here, to its own handler, not lost to its parent's.
    """
    previous = {sig: signal.signal(sig, lambda _sig, _frame: handler()) for sig in STOP_SIGNALS}
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
