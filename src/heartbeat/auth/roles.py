"""Who may do what: the contract's roles, the kinds of access an operation needs, and which role has which.

- ``admin``: everything.
- ``uploader``: upload, and read.
- ``worker``: read, and the job routes of the software it is scoped to (or of all).
- ``reader``: GET only.

Each route's operations say which access they need (the ``ROUTES`` of each ``api/`` module); a token carries one role
(``tokens.py``); ``api/auth.py`` checks one against the other. This module imports nothing of the
server, so that the command line can offer the roles without loading it.
"""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    """The role a token carries."""

    ADMIN = "admin"
    UPLOADER = "uploader"
    WORKER = "worker"
    READER = "reader"


class Access(enum.Enum):
    """What an operation needs: nothing (``PUBLIC``), or one of the kinds of access a role may have."""

    PUBLIC = "public"
    READ = "read"
    UPLOAD = "upload"
    WORK = "work"
    ADMIN = "admin"


ALLOWED: dict[Role, frozenset[Access]] = {
    Role.ADMIN: frozenset(Access),
    Role.UPLOADER: frozenset({Access.READ, Access.UPLOAD}),
    Role.WORKER: frozenset({Access.READ, Access.WORK}),
    Role.READER: frozenset({Access.READ}),
}
