"""The parent of N server processes sharing one listening socket.

It forks them (each builds its own app: threads, database connections), passes SIGTERM and SIGINT on
to each and waits for them, killing any still running ``KILL_AFTER_SECONDS`` later. A process that
dies unasked is started again, unless it failed during its start, which stops the server. The
processes' Prometheus counters live in files of a shared folder (prometheus-client's multiprocess
mode), so that ``/metrics`` answers for the whole server whichever process serves it.
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

from heartbeat.config import Settings
from heartbeat.server.process import (
    GRACE_SECONDS,
    LOOP_SECONDS,
    METRICS_DIR_VARIABLE,
    STOP_SIGNALS,
    on_stop_signals,
    serve_process,
)

log = logging.getLogger(__name__)

KILL_AFTER_SECONDS = GRACE_SECONDS + 10  # a child still running this long after SIGTERM is killed
STARTUP_SECONDS = 10.0  # a process that fails sooner than this after its start is not started again


def _ending(exit_code: int) -> str:
    return f"killed by {signal.Signals(-exit_code).name}" if exit_code < 0 else f"exit status {exit_code}"


class Supervisor:
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
            with on_stop_signals(self._stop.set):
                for index in range(self._settings.processes):
                    self.spawn(index)
                status = self._watch()
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        return status

    def spawn(self, index: int) -> None:
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
                self.spawn(index)
        return status

    def _signal_children(self, sig: int) -> None:
        for pid in self._children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    @staticmethod
    def _forget_metrics(pid: int) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
