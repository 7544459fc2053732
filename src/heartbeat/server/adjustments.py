"""How waitress serves Heartbeat: the adjustments that keep one peer from holding what others need.

waitress reads requests and writes answers in one I/O thread and runs the app in a pool of
threads. What a slow or idle peer can hold, and what bounds it:

- a request body sent slowly: nothing but memory and a file. waitress reads a body whole (in
  memory, past ``inbuf_overflow`` in a temporary file, never past ``max_request_body_size``)
  before a thread sees the request.
- an answer read slowly, or not at all: nothing. A body the app hands over whole (every JSON
  answer) or as a file (the blob route, through ``wsgi.file_wrapper``) is queued at once and
  written by the I/O thread. Only a body iterated in pieces (an export) waits for its reader, once
  ``outbuf_high_watermark`` (:data:`STREAM_BUFFER_BYTES`) of it is unsent.
- an idle keep-alive connection: a connection slot, no thread, until ``channel_timeout``.
- connections: ``connection_limit`` of them; past it waitress stops accepting, and every new
  request waits in the listen backlog however idle the server is.
- an origin an upload by URL fetches from: the URL deadline (``urlfetch``).
"""

from __future__ import annotations

import logging
import resource
from typing import Any

from heartbeat.config import Settings

log = logging.getLogger(__name__)

# Longer than the 60 s idle timeout of common load balancers, so that they close an idle
# connection first and never send a request on one this server is closing.
CHANNEL_TIMEOUT_SECONDS = 120
# What the I/O thread reads from a connection at a time (below the allocator's 128 KiB threshold for
# memory of its own from the system, which every read would otherwise map and unmap).
RECEIVE_BYTES = 64 * 1024
# Room for the form around an uploaded file, beyond the upload limit itself.
FORM_OVERHEAD_BYTES = 1024 * 1024
# Descriptors besides the connections: per thread a database connection, the store's, spooled
# uploads and a URL fetch's sockets; and the listening socket, logs, the SQLite file.
SPARE_FILES = 64
# How far a streamed answer (an export) may run ahead of its reader before its thread waits for it.
STREAM_BUFFER_BYTES = 2 * 1024 * 1024
SPARE_FILES_PER_THREAD = 8


def waitress_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of ``waitress.serve`` other than where to listen.

    - ``threads``: the setting (``--threads``).
    - ``connection_limit``: the setting (``--connection-limit``, default 1000). waitress's own
      default, 100, is fewer connections than a fleet of keep-alive workers holds.
    - ``asyncore_use_poll``: ``select()``, waitress's default, fails on descriptors numbered past
      1023, which a server with more than a thousand connections has.
    - ``channel_timeout``: :data:`CHANNEL_TIMEOUT_SECONDS`, said explicitly (it is waitress's default).
    - ``max_request_body_size``: the upload limit plus :data:`FORM_OVERHEAD_BYTES`; a larger body
      is refused by waitress before it is read.
    - ``outbuf_high_watermark``: :data:`STREAM_BUFFER_BYTES` (waitress's 16 MiB would let each
      export hold that much in memory).
    - ``recv_bytes``: :data:`RECEIVE_BYTES`. waitress's default, 8 KiB, took a 100 KB upload through
      its I/O thread's Python loop thirteen times; that thread is every connection's.

    It also raises this process's soft limit on open files, up to the hard limit, so that the
    connection limit can be reached; where the hard limit is lower, the connection limit is lowered
    to fit, with a warning: a server out of descriptors cannot even accept a health check.
    """
    spare = SPARE_FILES + SPARE_FILES_PER_THREAD * settings.threads
    return {
        "threads": settings.threads,
        "connection_limit": _connections_that_fit(settings.connection_limit, spare),
        "asyncore_use_poll": True,
        "channel_timeout": CHANNEL_TIMEOUT_SECONDS,
        "max_request_body_size": settings.max_upload_bytes + FORM_OVERHEAD_BYTES,
        "outbuf_high_watermark": STREAM_BUFFER_BYTES,
        "ident": "heartbeat",
        "recv_bytes": RECEIVE_BYTES,
    }


def _connections_that_fit(connections: int, spare: int) -> int:
    """Raise the soft limit on open files to hold ``connections`` and ``spare``; the connections it holds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = connections + spare
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if raised > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return connections
    fitting = max(soft - spare, 1)
    log.warning(
        "this process may open %d files (its hard limit): the connection limit is lowered from %d to %d",
        soft,
        connections,
        fitting,
    )
    return fitting
