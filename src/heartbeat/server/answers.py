"""waitress's own answers carry the headers every answer of Heartbeat carries.

waitress answers some requests itself, before or instead of the app: one it cannot parse (400), with
headers too large (431), a body over the limit (413), a transfer coding it does not know (501), or an
app that failed before it answered (500). Its error task is the one place all of them are written.
"""

from __future__ import annotations

from waitress.channel import HTTPChannel
from waitress.task import ErrorTask

from heartbeat.api.middleware import SECURITY_HEADERS


class HeadedErrorTask(ErrorTask):  # type: ignore[misc]  # waitress has no type hints
    """waitress's error answer, with :data:`SECURITY_HEADERS`."""

    def execute(self) -> None:
        self.response_headers.extend(SECURITY_HEADERS)
        super().execute()


class HeadedChannel(HTTPChannel):  # type: ignore[misc]
    """waitress's connection, answering its errors with :class:`HeadedErrorTask`."""

    error_task_class = HeadedErrorTask
