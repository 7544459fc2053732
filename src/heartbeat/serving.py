"""``heartbeat serve``: the app under waitress, in one process or in N that share one listening socket.

Each process builds its own app after the fork, with its own threads and database connections; only
the first runs the lease reaper, so N processes do its work once. The processes' Prometheus counters
are kept in files of a shared folder (prometheus-client's multiprocess mode), so that ``/metrics``
answers for the whole server whichever process serves it.

Stopping: SIGTERM or SIGINT make a process stop accepting connections, answer its waiting claims at
once, let the requests in flight finish (up to ``GRACE_SECONDS``), close its connections and exit 0.
With N processes the parent passes the signal on to each and waits for them; a process that dies
unasked is started again (unless it fails during its start, which stops the server).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import waitress
from waitress import wasyncore
from waitress.channel import HTTPChannel

from heartbeat.config import SettingError, Settings

log = logging.getLogger(__name__)

GRACE_SECONDS = 20.0  # for the requests in flight when a stop is asked
REAP_LEASES_EVERY_SECONDS = 2.0
LOOP_SECONDS = 0.2  # how soon the serving loop notices a stop
STARTUP_SECONDS = 10.0  # a process that fails sooner than this after its start is not started again
LISTEN_BACKLOG = 1024
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
KILL_AFTER_SECONDS = GRACE_SECONDS + 10  # a child still running this long after SIGTERM is killed
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


def waitress_options(settings: Settings) -> dict[str, Any]:
    """Waitress's adjustments for ``settings``."""
    return {
        "threads": settings.threads,
        "ident": "heartbeat",
        # Bodies past the upload limit (plus room for the form around the file) are cut off by waitress.
        "max_request_body_size": settings.max_upload_bytes + 1024 * 1024,
        # A fleet of workers each keeps a connection open: waitress's default stops accepting at 100,
        # and its select() fails past 1024 descriptors (poll() does not).
        "connection_limit": 1000,
        "asyncore_use_poll": True,
    }


def serve(settings: Settings) -> int:
    """Serve until SIGTERM or SIGINT: in this process, or in ``settings.processes`` children of it.

    Raises :class:`SettingError` when the address cannot be listened on (a port in use).
    """
    if settings.processes == 1:
        return serve_process(settings, None, first=True)
    sock = listening_socket(settings.host, settings.port)
    _announce(settings)
    return _Supervisor(settings, sock).run()


def _announce(settings: Settings) -> None:
    processes = f", {settings.processes} processes" if settings.processes > 1 else ""
    where = f"http://{settings.host}:{settings.port}"
    print(f"Heartbeat serving on {where} (data in {settings.data_dir}{processes})", flush=True)


def serve_process(settings: Settings, sock: socket.socket | None, *, first: bool) -> int:
    """One server process: the app, its waitress loop, and a graceful stop; returns the exit status.

    ``sock``: the listening socket shared with the other processes; None to listen once the app is
    ready (a single process: connections are refused, not kept waiting, while it starts).
    """
    from heartbeat.app import build_service
    from heartbeat.db.database import close_all, connect
    from heartbeat.storage import open_storage

    stop = threading.Event()
    metrics_dir = os.environ.get(METRICS_DIR_VARIABLE)
    if metrics_dir:  # several processes: counters go to prometheus-client's files, summed at each scrape
        from prometheus_client import values

        values.ValueClass = values.MultiProcessValue()
    with _on_stop_signals(stop.set):
        database = connect(data_dir=settings.data_dir, db_auth=settings.db_auth, threads=settings.threads)
        service = build_service(
            settings, database=database, storage=open_storage(settings), metrics_dir=metrics_dir or None
        )
        if sock is None:
            sock = listening_socket(settings.host, settings.port)
            _announce(settings)
        reaper = service.lease_reaper(REAP_LEASES_EVERY_SECONDS) if first else None
        if reaper is not None:
            reaper.start()
        server = waitress.create_server(service.app, sockets=[sock], **waitress_options(settings))
        try:
            _loop(server, until=stop.is_set)
            service.close()
            _drain(server, GRACE_SECONDS)
        finally:
            if reaper is not None:
                reaper.stop()
            close_all(database)
    return 0


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
def _on_stop_signals(handler: Callable[[], None]) -> Iterator[None]:
    """Call ``handler`` (which must only set a flag) on SIGTERM and SIGINT, instead of dying.

    A new server process starts with these signals blocked (see :meth:`_Supervisor._spawn`): one
    sent while it started is delivered here, to its own handler, not lost to its parent's.
    """
    previous = {sig: signal.signal(sig, lambda _sig, _frame: handler()) for sig in STOP_SIGNALS}
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _ending(exit_code: int) -> str:
    return f"killed by {signal.Signals(-exit_code).name}" if exit_code < 0 else f"exit status {exit_code}"


class _Supervisor:
    """The parent of N server processes on one socket (see the module's docstring)."""

    def __init__(self, settings: Settings, sock: socket.socket):
        self._settings = settings
        self._sock = sock
        self._children: dict[int, tuple[int, float]] = {}  # pid -> (index, started at)
        self._stop = threading.Event()

    def run(self) -> int:
        metrics_dir = tempfile.mkdtemp(prefix="heartbeat-metrics-")
        os.environ[METRICS_DIR_VARIABLE] = metrics_dir
        status = 0
        try:
            with _on_stop_signals(self._stop.set):
                for index in range(self._settings.processes):
                    self._spawn(index)
                status = self._watch()
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        return status

    def _spawn(self, index: int) -> None:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        pid = os.fork()
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        else:  # the child: serve, and never return into the parent's code
            code = 1
            try:
                code = serve_process(self._settings, self._sock, first=index == 0)
            except BaseException:
                log.exception("server process %d failed", index)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self._children[pid] = (index, time.monotonic())

    def _watch(self) -> int:
        """Wait for the children; pass a stop on, restart one that died unasked. The exit status."""
        status = 0
        stopping = False
        kill_at = float("inf")
        while self._children:
            if self._stop.is_set() and not stopping:
                stopping = True
                kill_at = time.monotonic() + KILL_AFTER_SECONDS
                self._signal_children(signal.SIGTERM)
            if time.monotonic() > kill_at:
                log.error("%d server process(es) did not stop: killing them", len(self._children))
                self._signal_children(signal.SIGKILL)
                kill_at = float("inf")
                status = 1
            pid, code = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                self._stop.wait(LOOP_SECONDS)
                continue
            index, started_at = self._children.pop(pid)
            self._forget_metrics(pid)
            if stopping:
                continue
            exit_code = os.waitstatus_to_exitcode(code)
            log.warning("server process %d ended (%s)", index, _ending(exit_code))
            if exit_code > 0 and time.monotonic() - started_at < STARTUP_SECONDS:
                log.error("server process %d could not start: stopping the server", index)
                self._stop.set()
                status = 1
            else:
                self._spawn(index)
        return status

    def _signal_children(self, sig: int) -> None:
        for pid in self._children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    @staticmethod
    def _forget_metrics(pid: int) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
