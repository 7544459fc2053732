"""Fetching an image by URL without letting the URL reach inside the network.

The guard sits where the socket is made: the host name is resolved once, every address it
resolves to is checked, and the connection goes to an address that was checked. Redirects
open new connections and pass the same guard; DNS answers cannot change in between.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import IO
from urllib.parse import unquote, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.connection import create_connection

from heartbeat.config import UrlAllowList
from heartbeat.errors import TooLarge, UrlRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
CHUNK_BYTES = 64 * 1024


class AddressForbidden(OSError):
    """The URL's host resolves to an address that uploads may not reach."""


def is_forbidden(address: IPAddress, allow: UrlAllowList) -> bool:
    """Loopback, private, link-local, multicast, reserved and other non-global addresses."""
    if allow.allows_address(address):
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_forbidden(address.ipv4_mapped, allow)
    return not address.is_global or address.is_multicast or address.is_reserved


def resolve_checked(host: str, port: int, allow: UrlAllowList) -> list[str]:
    """The addresses ``host`` resolves to, refused if any of them is forbidden."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise UrlRefused(f"cannot resolve host {host!r}") from error
    addresses = []
    for *_, sockaddr in infos:
        text = str(sockaddr[0]).split("%")[0]
        if not allow.allows_host(host) and is_forbidden(ipaddress.ip_address(text), allow):
            raise AddressForbidden(f"{host!r} resolves to {text}, which uploads by URL may not reach")
        addresses.append(text)
    return addresses


def _guarded_new_conn(self: HTTPConnection) -> socket.socket:
    addresses = resolve_checked(self._dns_host, self.port, self.allow)  # type: ignore[attr-defined]
    error: OSError | None = None
    for address in addresses:
        try:
            return create_connection((address, self.port), self.timeout, self.source_address, self.socket_options)
        except OSError as caught:
            error = caught
    raise urllib3.exceptions.NewConnectionError(self, f"cannot connect to {self.host}: {error}")


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose connections pass through :func:`resolve_checked`."""

    def __init__(self, allow: UrlAllowList):
        guard = {"allow": allow, "_new_conn": _guarded_new_conn}
        http = type("GuardedHTTPConnection", (HTTPConnection,), guard)
        https = type("GuardedHTTPSConnection", (HTTPSConnection,), guard)
        self._pool_classes = {
            "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
        }
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pool_classes


def _cause(error: BaseException) -> BaseException | None:
    """The AddressForbidden or UrlRefused somewhere inside requests' wrapped errors."""
    seen: list[BaseException] = [error]
    while seen:
        current = seen.pop()
        if isinstance(current, (AddressForbidden, UrlRefused)):
            return current
        seen.extend(arg for arg in current.args if isinstance(arg, BaseException))
        for attr in ("reason", "__cause__", "__context__"):
            inner = getattr(current, attr, None)
            if isinstance(inner, BaseException):
                seen.append(inner)
    return None


def fetch(
    url: str, out: IO[bytes], *, allow: UrlAllowList, timeout_seconds: float, max_bytes: int, max_redirects: int
) -> str:
    """Stream ``url`` into ``out``; return a file name taken from the final URL.

    Raises :class:`UrlRefused` (not allowed, unreachable, not a 2xx answer) or
    :class:`TooLarge` (over ``max_bytes``, counted while streaming).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlRefused("the URL must be http:// or https:// with a host")
    with requests.Session() as session:
        session.trust_env = False  # no proxies from the environment: the guard must see the target
        session.max_redirects = max_redirects
        adapter = GuardedAdapter(allow)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        try:
            with session.get(url, stream=True, timeout=timeout_seconds) as response:
                if not response.ok:
                    raise UrlRefused(f"the URL answered {response.status_code}")
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise TooLarge(f"the image is larger than {max_bytes} bytes")
                _copy_capped(response.iter_content(CHUNK_BYTES), out, max_bytes)
                return _filename(response.url)
        except requests.TooManyRedirects:
            raise UrlRefused(f"more than {max_redirects} redirects") from None
        except requests.RequestException as error:
            cause = _cause(error)
            if isinstance(cause, UrlRefused):
                raise cause from None
            if isinstance(cause, AddressForbidden):
                raise UrlRefused(str(cause)) from None
            raise UrlRefused(f"could not fetch the URL: {type(error).__name__}") from None


def _copy_capped(chunks: Iterator[bytes], out: IO[bytes], max_bytes: int) -> None:
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > max_bytes:
            raise TooLarge(f"the image is larger than {max_bytes} bytes")
        out.write(chunk)


def _filename(url: str) -> str:
    name = os.path.basename(PurePosixPath(unquote(urlsplit(url).path)).name)
    return name[:255] or "download"
