"""The parent of N server processes sharing one listening socket.

It forks them (each builds its own app: threads, database connections), passes SIGTERM and SIGINT on
to each and waits for them, killing any still running ``KILL_AFTER_SECONDS`` later. A process that
dies unasked is started again, unless it failed during its start, which stops the server. The
processes' Prometheus counters live in files of a shared folder (prometheus-client's multiprocess
mode), so that ``/metrics`` answers for the whole server whichever process serves it.

A supervisor killed outright (SIGKILL, the OOM killer) cannot pass a stop on: its children stop by
themselves. On Linux the kernel sends each SIGTERM when the supervisor dies (``PR_SET_PDEATHSIG``);
everywhere, each watches a pipe whose writing end only the supervisor holds, and stops when it closes.
The metrics folder it leaves (its lock no longer held) is removed by the next supervisor that starts.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import shutil
import signal
import socket
import stat
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


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
METRICS_DIR_PREFIX = "heartbeat-metrics-"
METRICS_DIR_LOCK = ".supervisor.lock"  # held (flock) by the supervisor for as long as it runs
UNLOCKED_GRACE_SECONDS = 600  # a folder without a lock file may be a supervisor's still starting


def lock_metrics_dir(folder: str) -> int:
    """Hold ``folder``'s lock for as long as this process lives; the descriptor. The kernel releases a
    ``flock`` when its holder dies, however it dies."""
    fd = os.open(os.path.join(folder, METRICS_DIR_LOCK), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def remove_stale_metrics_dirs(folder: str, now: float) -> list[str]:
    """Remove the metrics folders in ``folder`` that supervisors killed outright left behind: this
    user's, whose lock no process holds (a lock, not a PID: a supervisor in another PID namespace
    sharing the folder has PIDs this one cannot see), or without a lock file and older than
    ``UNLOCKED_GRACE_SECONDS`` (an older release's). The names of those removed."""
    removed = []
    for entry in os.scandir(folder):
        if not entry.name.startswith(METRICS_DIR_PREFIX):
            continue
        with contextlib.suppress(OSError):
            status = entry.stat(follow_symlinks=False)
            if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.getuid():
                continue
            try:
                fd = os.open(os.path.join(entry.path, METRICS_DIR_LOCK), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                if now - status.st_mtime > UNLOCKED_GRACE_SECONDS:
                    shutil.rmtree(entry.path)
                    removed.append(entry.name)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: its supervisor runs
                shutil.rmtree(entry.path)
                removed.append(entry.name)
            finally:
                os.close(fd)
    return removed


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel send this process SIGTERM when its parent dies (Linux), and exit at once if the
    parent ``parent_pid`` is gone already (it died before the request was made)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(0)


def _ending(exit_code: int) -> str:
    return f"killed by {signal.Signals(-exit_code).name}" if exit_code < 0 else f"exit status {exit_code}"


class Supervisor:
    """The parent of N server processes on one socket (see the module's docstring)."""

    def __init__(self, settings: Settings, sock: socket.socket):
        self._settings = settings
        self._sock = sock
        self._children: dict[int, tuple[int, float]] = {}  # pid -> (index, started at)
        self._stop = threading.Event()
        self._lifeline_read, self._lifeline_write = -1, -1  # the pipe the children watch

    def run(self) -> int:
        metrics_dir = tempfile.mkdtemp(prefix=METRICS_DIR_PREFIX)
        lock = lock_metrics_dir(metrics_dir)
        with contextlib.suppress(OSError):
            remove_stale_metrics_dirs(os.path.dirname(metrics_dir), time.time())
        os.environ[METRICS_DIR_VARIABLE] = metrics_dir
        status = 0
        self._lifeline_read, self._lifeline_write = os.pipe()
        try:
            with on_stop_signals(self._stop.set):
                for index in range(self._settings.processes):
                    if self._stop.is_set():  # a stop while they start: none more
                        break
                    self.spawn(index)
                status = self._watch()
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
            os.close(lock)
            os.close(self._lifeline_read)
            os.close(self._lifeline_write)
        return status

    def spawn(self, index: int) -> None:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        parent_pid = os.getpid()
        pid = os.fork()
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        else:  # the child: serve, and never return into the parent's code
            code = 1
            try:
                os.close(self._lifeline_write)  # only the supervisor holds it: it closes when the supervisor dies
                die_with_parent(parent_pid)
                code = serve_process(self._settings, self._sock, first=index == 0, lifeline=self._lifeline_read)
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
