"""waitress's own answers carry the headers every answer of Heartbeat carries.

waitress answers some requests itself, before or instead of the app: one it cannot parse (400), with
headers too large (431), a body over the limit (413), a transfer coding it does not know (501), or an
app that failed before it answered (500). Its error task is the one place all of them are written.
"""

from __future__ import annotations

from waitress.channel import HTTPChannel
from waitress.task import ErrorTask, WSGITask

from heartbeat.api.middleware import SECURITY_HEADERS


class HeadedErrorTask(ErrorTask):  # type: ignore[misc]  # waitress has no type hints
    """waitress's error answer, with :data:`SECURITY_HEADERS`."""

    def execute(self) -> None:
        self.response_headers.extend(SECURITY_HEADERS)
        super().execute()


class BodilessHeadTask(WSGITask):  # type: ignore[misc]
    """waitress's task of an app answer: an answer to HEAD of unknown length (a streamed export)
    ends with no chunked terminator, which would be a body (RFC 9110 9.3.2) and spoil the connection."""

    def finish(self) -> None:
        if self.request.command == "HEAD":
            if not self.wrote_header:
                self.write(b"")  # the headers (as GET's: chunked), which decide chunked_response
            self.chunked_response = False
        super().finish()


class HeadedChannel(HTTPChannel):  # type: ignore[misc]
    """waitress's connection, answering its errors with :class:`HeadedErrorTask`."""

    error_task_class = HeadedErrorTask
    task_class = BodilessHeadTask
