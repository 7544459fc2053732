"""What the worker SDK raises. Every error carries the answer's ``status`` (``None`` when no answer
came), its ``title`` and its ``description``, as the API sent them, and its ``Retry-After`` in
seconds (``retry_after``, ``None`` when it had none).

HeartbeatError                 the root: catch this to catch them all
 ├── ServerUnavailable         503, or no answer at all, after the retries
 ├── ServerError               any other 5xx: a bug in the server
 ├── InvalidRequest            400, 413, 415, 422: refused as it was sent; retrying will not help
 ├── Unauthorized              401: no token, or an unknown or revoked one
 ├── Forbidden                 403: the token lacks the right
 ├── NotFound                  404: no such image, software, job or table
 ├── Conflict                  409
 │    └── LeaseLost            409 on a job route: the token no longer holds the job's lease
 ├── CursorExpired             410: an event cursor older than the events the server keeps
 └── ContentMismatch           downloaded bytes whose size or sha256 is not the image record's
"""

from __future__ import annotations

from typing import Any


class HeartbeatError(Exception):
    """The Heartbeat API refused the request."""

    def __init__(
        self,
        description: str | None = None,
        *,
        status: int | None = None,
        title: str | None = None,
        retry_after: float | None = None,
    ):
        self.description = description or (self.__doc__ or "").strip()
        self.status = status
        self.title = title or type(self).__name__
        self.retry_after = retry_after
        # Falcon's titles start with the status already ("415 Unsupported Media Type"): said once
        heading = self.title if self.title.startswith(str(status)) else f"{status} {self.title}"
        super().__init__(f"{heading}: {self.description}" if status else self.description)


class ServerUnavailable(HeartbeatError):
    """The API, its database or its object storage did not answer."""


class ServerError(HeartbeatError):
    """The API failed on the request (a bug in the server)."""


class InvalidRequest(HeartbeatError):
    """The API refused the request as it was sent."""


class Unauthorized(HeartbeatError):
    """The API needs a valid token: pass ``token=`` (or --token, HEARTBEAT_TOKEN)."""


class Forbidden(HeartbeatError):
    """The token does not allow this."""


class NotFound(HeartbeatError):
    """No such image, software, job or table."""


class Conflict(HeartbeatError):
    """The current state does not allow this."""


class LeaseLost(Conflict):
    """The token no longer holds the lease on this job: another worker may have it now."""


class CursorExpired(HeartbeatError):
    """The events after this cursor are no longer kept (HEARTBEAT_EVENTS_RETAIN_SECONDS): start again
    without a cursor (the oldest event kept) or from ``"now"``."""


class ContentMismatch(HeartbeatError):
    """The downloaded bytes are not the ones the image record describes."""


ERROR_BY_STATUS: dict[int, type[HeartbeatError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: CursorExpired,
    413: InvalidRequest,
    415: InvalidRequest,
    422: InvalidRequest,
    503: ServerUnavailable,
}


def error_from_answer(
    status: int, body: Any, *, job_route: bool = False, retry_after: float | None = None
) -> HeartbeatError:
    """The exception for an error answer whose JSON body is ``body`` (``{"title", "description"}``)
    and whose ``Retry-After`` asked for ``retry_after`` seconds."""
    kind = ERROR_BY_STATUS.get(status) or (ServerError if status >= 500 else HeartbeatError)
    if kind is Conflict and job_route:
        kind = LeaseLost
    title = description = None
    if isinstance(body, dict):
        title, description = body.get("title"), body.get("description")
    elif isinstance(body, str) and body.strip():
        description = body.strip()[:500]
    return kind(description, status=status, title=title, retry_after=retry_after)
