"""Who may call what, checked once per request before the resource runs: the access the route table
gives the request's method and route, against what the caller's role allows (``heartbeat.auth.roles``).

Health, the dashboard page and the signed URLs the server hands out need no token. A server on a
loopback address that has never had a token is open: it serves loopback clients without one, under
the rules of ``api/open_server.py`` (a loopback ``Host``, no cross-site writes). Any other request,
and every request once a token was ever made (even if all are revoked since), needs
``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from typing import Any

import falcon

from heartbeat.api.open_server import OpenServer
from heartbeat.api.routes import ROUTES
from heartbeat.api.routing import Route
from heartbeat.auth import tokens
from heartbeat.auth.roles import ALLOWED, Access
from heartbeat.db.database import Database
from heartbeat.errors import Forbidden, Unauthorized


def allows(principal: tokens.Principal, access: Access, software: str | None) -> bool:
    if access not in ALLOWED[principal.role]:
        return False
    return access is not Access.WORK or principal.software in (None, software)


@functools.lru_cache(maxsize=256)  # a request's peer address, parsed once per address
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
    """Falcon middleware: find the request's principal and refuse what its role does not allow.

    ``table``: the routes the app serves (a route missing from it needs admin). ``serving_on_loopback``
    and ``public_url``: as :class:`OpenServer` takes them. Before routing, it refuses what an open
    server refuses (any path, unknown ones too).
    """

    def __init__(
        self,
        database: Database,
        table: Sequence[Route] = ROUTES,
        *,
        serving_on_loopback: bool,
        public_url: str | None = None,
    ):
        self._database = database
        self._routes = {route.path: route for route in table}
        self._open_server = OpenServer(database, serving_on_loopback=serving_on_loopback, public_url=public_url)

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._open_server.check(req)

    def required_access(self, method: str, uri_template: str) -> Access:
        """What a ``method`` request needs on the route ``uri_template`` (Falcon's template, as the table spells it)."""
        route = self._routes.get(uri_template)
        return Access.ADMIN if route is None else route.access(method)

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict[str, Any]
    ) -> None:
        if resource is None:
            return
        access = self.required_access(req.method, req.uri_template or "")
        if access is Access.PUBLIC:
            return
        principal = self._principal(req)
        if not allows(principal, access, params.get("name")):
            scope = f" for {principal.software}" if principal.software else ""
            method = "GET" if req.method == "HEAD" else req.method  # HEAD is refused as GET is (RFC 9110)
            raise Forbidden(f"a {principal.role} token{scope} may not {method} {req.uri_template}")
        req.context.principal = principal

    def _principal(self, req: falcon.Request) -> tokens.Principal:
        header = req.get_header("Authorization")
        if header is None:
            if is_loopback(req.remote_addr) and self._open_server.is_open():
                return tokens.OPEN_ACCESS
            raise Unauthorized()
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthorized("send the token as `Authorization: Bearer <token>`")
        principal = tokens.authenticate(self._database, secret.strip())
        if principal is None:
            raise Unauthorized("unknown or revoked token")
        return principal
