"""The rules of an open server: one that serves on a loopback address and has never had a token.

Anyone on the machine may use it, and so may any web page its user opens, unless the server checks
what a browser cannot fake:

- ``Host``: a page that rebinds its own DNS name to 127.0.0.1 reaches this server as a same-origin
  page of that name, and could read every image. An open server answers only requests naming a
  loopback ``Host``: ``localhost`` and the names under ``.localhost`` (RFC 6761 6.3: browsers
  resolve them to loopback themselves, so no DNS answer can rebind them), a 127.0.0.0/8 or ``[::1]``
  address, with or without a port; and the host of ``--public-url`` when one is set (the operator
  named it). Every route is covered, the signed URLs of local storage too: a local client reaches
  them by the same loopback name as the API that handed them out.
- ``Sec-Fetch-Site`` and ``Origin``: a page can send a simple ``POST`` (a form) anywhere without
  reading the answer. An open server refuses a write (any method but GET, HEAD and OPTIONS) that a
  browser says it sends from another origin: ``Sec-Fetch-Site`` other than ``same-origin`` or ``none``
  (``same-site`` too: every port of ``localhost`` is the same site, a dev server's page included), or
  an ``Origin`` other than the request's own (``null`` included: a file or sandboxed page).

A server stays open only until the first token is made; from then on tokens protect it, and these
rules no longer apply (a reverse proxy may then name this server by any host). Neither rule asks the
database anything for a request it lets through.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from urllib.parse import urlsplit

import falcon

from heartbeat.auth import tokens
from heartbeat.db.database import Database
from heartbeat.errors import Forbidden

HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.{0,2}")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SAME_ORIGIN_FETCHES = frozenset({"same-origin", "none"})  # "none": the user's own navigation
DEFAULT_PORTS = {"http": 80, "https": 443}


@functools.lru_cache(maxsize=256)  # a server is named by a few hosts; each request parsed one again
def split_host(text: str) -> tuple[str, int | None] | None:
    """``Host`` (or an origin's authority) as a lower-case name or address, brackets removed, and its
    port; None for text that is no host (a user part, a path, a bad port)."""
    try:
        parts = urlsplit(f"//{text.strip()}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None or parts.path or parts.query or parts.fragment:
        return None
    name = parts.hostname
    # A DNS name (RFC 1123 labels) or an [IPv6] literal: not two Host headers joined with ", ", nor
    # any other text that merely ends in ".localhost".
    if not (HOST_NAME.fullmatch(name) or (":" in name and text.strip().startswith("["))):
        return None
    return name.rstrip("."), port


@functools.lru_cache(maxsize=256)
def is_loopback_name(name: str) -> bool:
    """``localhost``, a name under ``.localhost``, or a loopback address (127.0.0.0/8, ::1, ::ffff:127.x)."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def own_origin(req: falcon.Request) -> tuple[str, str, int] | None:
    """The request's own origin (scheme, host, port), from its ``Host``; None without a usable one."""
    split = split_host(req.get_header("Host") or "")
    if split is None:
        return None
    host, port = split
    return req.scheme, host, port or DEFAULT_PORTS.get(req.scheme, 0)


def parse_origin(text: str) -> tuple[str, str, int] | None:
    """An ``Origin`` header as (scheme, host, port); None for ``null`` or anything else that is no origin."""
    try:
        parts = urlsplit(text.strip())
    except ValueError:
        return None
    split = split_host(parts.netloc) if parts.scheme and parts.path in ("", "/") else None
    if split is None:
        return None
    host, port = split
    return parts.scheme.lower(), host, port or DEFAULT_PORTS.get(parts.scheme.lower(), 0)


def sent_from_another_origin(req: falcon.Request) -> bool:
    """Whether a browser says it sends this request from a page of another origin."""
    site = req.get_header("Sec-Fetch-Site")
    if site is not None and site.strip().lower() not in SAME_ORIGIN_FETCHES:
        return True
    origin = req.get_header("Origin")
    if origin is None:
        return False
    theirs = parse_origin(origin)
    return theirs is None or theirs != own_origin(req)


class OpenServer:
    """Whether this server is open, and the rules above while it is.

    ``serving_on_loopback``: whether it listens on a loopback address (else it is never open).
    ``public_url``: ``--public-url``, whose host an open server answers to as well.
    Open means no token was ever made (``tokens.tokens_ever_made``); once one was, this server is
    closed for good, and remembers it without asking the database again.
    """

    def __init__(self, database: Database, *, serving_on_loopback: bool, public_url: str | None = None):
        self._database = database
        self._closed = not serving_on_loopback
        public = split_host(urlsplit(public_url).netloc) if public_url else None
        self._public_host = public[0] if public else None

    def is_open(self) -> bool:
        if not self._closed and tokens.tokens_ever_made(self._database):
            self._closed = True
        return not self._closed

    def check(self, req: falcon.Request) -> None:
        """Raise :class:`Forbidden` for a request an open server refuses (see the module's docstring)."""
        if self._closed:
            return
        split = split_host(req.get_header("Host") or "")
        foreign_host = split is None or not (is_loopback_name(split[0]) or split[0] == self._public_host)
        cross_origin_write = req.method not in SAFE_METHODS and sent_from_another_origin(req)
        if not (foreign_host or cross_origin_write) or not self.is_open():
            return
        if foreign_host:
            raise Forbidden(
                f"this server has no API token, so it answers only requests to a loopback name (localhost, "
                f"127.0.0.1, [::1]), not to Host {req.get_header('Host')!r}: create a token "
                "(`heartbeat token create`) to serve other names"
            )
        raise Forbidden(
            f"this server has no API token, so it refuses a {req.method} a browser sends from a page of "
            "another origin (Sec-Fetch-Site or Origin)"
        )
