"""``heartbeat serve``: the app under waitress, in one process or in N sharing one listening socket.

- ``adjustments.py``: how waitress is tuned, so that no peer holds what others need.
- ``process.py``: one server process, its serving loop and its graceful stop.
- ``supervisor.py``: the parent of N processes (``--processes``).

Only the first process runs the lease reaper, so N processes do its work once.
"""

from __future__ import annotations

from heartbeat.config import Settings
from heartbeat.server.process import REAP_LEASES_EVERY_SECONDS, announce, listening_socket, serve_process
from heartbeat.server.supervisor import Supervisor

__all__ = ["REAP_LEASES_EVERY_SECONDS", "serve"]


def serve(settings: Settings) -> int:
    """Serve until SIGTERM or SIGINT: in this process, or in ``settings.processes`` children of it.

    Raises :class:`SettingError` when the address cannot be listened on (a port in use).
    """
    if settings.processes == 1:
        return serve_process(settings, None, first=True)
    sock = listening_socket(settings.host, settings.port)
    announce(settings)
    return Supervisor(settings, sock).run()
