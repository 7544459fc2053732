"""Domain errors. None of them knows HTTP; ``api/errors.py`` maps them.

HeartbeatError
 ├── InvalidInput         a field or body is wrong                  (400)
 ├── Unauthorized         no token, or an unknown or revoked one    (401)
 ├── Forbidden            a credential or signature does not allow it (403)
 ├── NotFound             no such image, software, job or table     (404)
 │    └── MissingObject   the row is there, its bytes are not
 ├── Conflict             the state does not allow it               (409)
 │    └── StaleToken      the token no longer holds the lease
 ├── Gone                 no longer kept (an event cursor past retention) (410)
 ├── TooLarge             over a byte or pixel limit                (413)
 ├── UnsupportedImage     the bytes are not a supported image       (415)
 ├── NotJson              a body that should be JSON is not         (415)
 ├── Refused              well-formed, but refused                  (422)
 │    └── UrlRefused      the URL may not or cannot be fetched
 └── BackendUnavailable   the database or object store is down      (503)
      ├── Busy            this server is doing as much of it as it may
      └── StatementTimeout  a query ran past HEARTBEAT_QUERY_SECONDS
"""

from __future__ import annotations


class HeartbeatError(Exception):
    """Something went wrong."""

    def __init__(self, description: str | None = None) -> None:
        self.description = description or (self.__doc__ or "").strip()
        super().__init__(self.description)


class InvalidInput(HeartbeatError):
    """The request is not valid."""


class Unauthorized(HeartbeatError):
    """This server needs a valid token: send `Authorization: Bearer <token>`."""


class Forbidden(HeartbeatError):
    """Not allowed."""


class NotFound(HeartbeatError):
    """Not found."""


class MissingObject(NotFound):
    """The image's bytes are missing from storage (`heartbeat check` lists such rows)."""


class Conflict(HeartbeatError):
    """The current state does not allow this."""


class StaleToken(Conflict):
    """The token no longer holds the lease on this job."""


class Gone(HeartbeatError):
    """What this names is no longer kept."""


class TooLarge(HeartbeatError):
    """The upload is too large."""


class UnsupportedImage(HeartbeatError):
    """The bytes are not a supported image (JPEG, PNG, GIF, WebP, BMP, TIFF)."""


class NotJson(HeartbeatError):
    """Send the body as JSON (Content-Type: application/json)."""


class Refused(HeartbeatError):
    """The request is well-formed but refused."""


class UrlRefused(Refused):
    """The URL may not or cannot be fetched."""


class BackendUnavailable(HeartbeatError):
    """A backend (database or object storage) is unreachable."""

    retry_after_seconds = 5


class Busy(BackendUnavailable):
    """This server is busy: try again in a moment."""

    retry_after_seconds = 1


class StatementTimeout(BackendUnavailable):
    """A query ran longer than one statement may (HEARTBEAT_QUERY_SECONDS)."""
