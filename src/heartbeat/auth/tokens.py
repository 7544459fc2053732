"""API tokens and the roles they carry.

A token is shown once, when it is made; the database keeps only the sha256 of it. The first
16 hex digits of that hash are the token's public ID (what ``token list`` and ``token revoke``
use), so a presented token is found by one primary-key read and then compared, whole, in
constant time. Every request reads the row again: a revoked token stops working at once, in
every API process.

A revoked token's row is kept for good: it is the database's record that tokens have existed, so
that a server never becomes open again when its last token is revoked (``tokens_ever_made``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
from collections.abc import Callable

from heartbeat.auth.roles import Role
from heartbeat.catalog.registry import NAME_PATTERN
from heartbeat.db.database import Database
from heartbeat.db.models import ApiToken
from heartbeat.errors import InvalidInput, NotFound
from heartbeat.privacy import actions, audit

TOKEN_PREFIX = "hb_"
MIN_SECRET_LENGTH = 32


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who a request acts for: a role, and for a worker token the one software it may work on."""

    role: Role
    software: str | None = None
    token_id: str | None = None


OPEN_ACCESS = Principal(Role.ADMIN)


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token_id(secret: str) -> str:
    return _sha256(secret)[:16]


def create_token(
    role: str,
    *,
    clock: Callable[[], float],
    software: str | None = None,
    name: str | None = None,
    secret: str | None = None,
) -> tuple[ApiToken, str]:
    """Store a new token and return it with its secret (the only time the secret is seen).

    ``secret`` imports a token made elsewhere (a deployment's ``.env``); creating the same one
    again changes nothing. Imported under a ``name`` that live tokens already have, it replaces
    them: they are revoked in the same transaction (a rotated secret in ``.env`` ends the old one).
    Raises InvalidInput for a bad role, software or a secret shorter than MIN_SECRET_LENGTH.
    """
    if role not in set(Role):
        raise InvalidInput(f"role must be one of {', '.join(Role)}")
    if software is not None and role != Role.WORKER:
        raise InvalidInput("only a worker token is scoped to a software")
    if software is not None and not NAME_PATTERN.fullmatch(software):
        raise InvalidInput(f"software name must match {NAME_PATTERN.pattern}")
    if secret is not None and len(secret) < MIN_SECRET_LENGTH:
        raise InvalidInput(f"a token must be at least {MIN_SECRET_LENGTH} characters long")
    imported = secret is not None
    secret = secret or TOKEN_PREFIX + secrets.token_urlsafe(32)
    digest = _sha256(secret)
    existing = ApiToken.get_or_none(ApiToken.id == digest[:16])
    if existing is not None and hmac.compare_digest(existing.secret_sha256, digest):
        if (existing.role, existing.software) != (role, software):
            raise InvalidInput(f"that token exists already as {existing.id} with another role")
        return existing, secret
    with ApiToken._meta.database.atomic():
        now = clock()
        if name is not None and imported:
            live_namesakes = (ApiToken.name == name) & ApiToken.revoked_at.is_null()
            ApiToken.update(revoked_at=now).where(live_namesakes).execute()
        row = ApiToken.create(
            id=digest[:16], secret_sha256=digest, role=role, software=software, name=name, created_at=now
        )
        audit.write_entry(actions.TOKEN_CREATED, now, token_id=None, token=row.id, role=role, software=software)
    return row, secret


def list_tokens() -> list[ApiToken]:
    return list(ApiToken.select().order_by(ApiToken.created_at, ApiToken.id))


def revoke_token(token: str, *, clock: Callable[[], float]) -> ApiToken:
    """Revoke by public ID; revoking twice keeps the first time."""
    row = ApiToken.get_or_none(ApiToken.id == token)
    if row is None:
        raise NotFound(f"no token with ID {token}")
    with ApiToken._meta.database.atomic():
        now = clock()
        live = (ApiToken.id == token) & ApiToken.revoked_at.is_null()
        if ApiToken.update(revoked_at=now).where(live).execute():
            audit.write_entry(actions.TOKEN_REVOKED, now, token_id=None, token=token)
    return ApiToken.get_by_id(token)


# Every request runs one of these two: short statements, not model queries.
def authenticate(database: Database, secret: str) -> Principal | None:
    """The principal of a live token, or None for an unknown or revoked one."""
    digest = _sha256(secret)
    sql = (
        f"SELECT secret_sha256, role, software FROM {database.quote(ApiToken._meta.table_name)}"
        f" WHERE id = {database.param} AND revoked_at IS NULL"
    )
    row = database.execute(sql, (digest[:16],)).fetchone()
    if row is None or not hmac.compare_digest(row[0], digest):
        return None
    return Principal(Role(row[1]), row[2], digest[:16])


def tokens_exist(database: Database) -> bool:
    """Whether any live token exists (a server beyond loopback needs one to start)."""
    sql = f"SELECT 1 FROM {database.quote(ApiToken._meta.table_name)} WHERE revoked_at IS NULL LIMIT 1"
    return database.execute(sql).fetchone() is not None


def tokens_ever_made(database: Database) -> bool:
    """Whether any token was ever made, live or revoked: from then on every request needs a live one."""
    sql = f"SELECT 1 FROM {database.quote(ApiToken._meta.table_name)} LIMIT 1"
    return database.execute(sql).fetchone() is not None
