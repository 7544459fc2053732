"""Who may call what: the contract's roles (``heartbeat.roles``), checked once per request before the resource runs.

Health, the dashboard page and the signed URLs the server hands out need no token. With no
token in the database, a server on a loopback address serves loopback clients openly; any other
request, and every request once a token exists, needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import falcon

from heartbeat import tokens
from heartbeat.errors import Forbidden, Unauthorized
from heartbeat.roles import ALLOWED, Access

PUBLIC_ROUTES = frozenset({"/", "/v1/health", "/v1/blobs/{key:path}"})
UPLOAD_ROUTES = frozenset({"/v1/images", "/v1/uploads", "/v1/uploads/{upload_id}/complete"})
WORK_ROUTES = frozenset(
    {
        "/v1/software/{name}/claim",
        "/v1/software/{name}/results",
        "/v1/software/{name}/jobs/{image_id}/extend",
        "/v1/software/{name}/jobs/{image_id}/result",
        "/v1/software/{name}/jobs/{image_id}/fail",
        "/v1/software/{name}/jobs/{image_id}/release",
    }
)
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def required_access(method: str, uri_template: str) -> Access:
    if uri_template in PUBLIC_ROUTES:
        return Access.PUBLIC
    if method in READ_METHODS:
        return Access.READ
    if uri_template in UPLOAD_ROUTES:
        return Access.UPLOAD
    if uri_template in WORK_ROUTES:
        return Access.WORK
    return Access.ADMIN


def allows(principal: tokens.Principal, access: Access, software: str | None) -> bool:
    if access not in ALLOWED[principal.role]:
        return False
    return access is not Access.WORK or principal.software in (None, software)


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


class Authorization:
    """Falcon middleware: find the request's principal and refuse what its role does not allow."""

    def __init__(self, *, serving_on_loopback: bool):
        self._serving_on_loopback = serving_on_loopback

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict[str, Any]
    ) -> None:
        if resource is None:
            return
        access = required_access(req.method, req.uri_template or "")
        if access is Access.PUBLIC:
            return
        principal = self._principal(req)
        if not allows(principal, access, params.get("name")):
            scope = f" for {principal.software}" if principal.software else ""
            raise Forbidden(f"a {principal.role} token{scope} may not {req.method} {req.uri_template}")
        req.context.principal = principal

    def _principal(self, req: falcon.Request) -> tokens.Principal:
        header = req.get_header("Authorization")
        if header is None:
            if self._serving_on_loopback and is_loopback(req.remote_addr) and not tokens.tokens_exist():
                return tokens.OPEN_ACCESS
            raise Unauthorized()
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthorized("send the token as `Authorization: Bearer <token>`")
        principal = tokens.authenticate(secret.strip())
        if principal is None:
            raise Unauthorized("unknown or revoked token")
        return principal
