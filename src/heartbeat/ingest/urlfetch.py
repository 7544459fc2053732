"""Fetching an image by URL without letting the URL reach inside the network, nor hold a thread.

The guard sits where the socket is made: the host name is resolved once, every address it
resolves to is checked, and the connection goes to an address that was checked. Redirects
open new connections and pass the same guard; DNS answers cannot change in between.

The whole fetch (DNS, connects, redirects, body) runs under one :class:`Deadline`: every socket
timeout is cut to the time left, and when the deadline passes the sockets still open are shut
down, so that neither an origin that sends nothing nor one that trickles a byte at a time keeps
the server's thread beyond it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import IO
from urllib.parse import unquote, urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.utils import requote_uri
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.connection import create_connection

from heartbeat.config import UrlAllowList
from heartbeat.errors import TooLarge, UrlRefused
from heartbeat.ingest.urlsyntax import check_url

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
CHUNK_BYTES = 64 * 1024

# Lookups run here so that a resolver that does not answer costs the request no more than its
# deadline (getaddrinfo itself cannot be given a timeout); a lookup left behind ends by itself.
_resolver = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="heartbeat-dns")


class AddressForbidden(OSError):
    """The URL's host resolves to an address that uploads may not reach."""


class Deadline:
    """The moment by which a fetch must be over; the sockets it watches are shut down then.

    Use as a context manager: the watchdog runs from ``__enter__`` to ``__exit__``.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._ends_at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._watched: list[socket.socket] = []
        self._passed = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        with self._lock:
            for watched in self._watched:
                watched.close()
            self._watched.clear()

    @property
    def passed(self) -> bool:
        return self._passed or time.monotonic() >= self._ends_at

    def remaining(self) -> float:
        """Seconds left; raises :class:`UrlRefused` when none are."""
        left = self._ends_at - time.monotonic()
        if left <= 0:
            raise self.exceeded()
        return left

    def check(self) -> None:
        if self.passed:
            raise self.exceeded()

    def exceeded(self) -> UrlRefused:
        return UrlRefused(f"fetching the URL took longer than its deadline of {self.seconds:g} s")

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down when the deadline passes (at once if it has).

        A duplicate of the descriptor is kept: shutting it down ends the connection however
        the original was wrapped (TLS) or closed meanwhile, and no other socket can take its number.
        """
        with self._lock:
            watched = sock.dup()
            self._watched.append(watched)
            if self._passed:
                _shut(watched)

    def _expire(self) -> None:
        with self._lock:
            self._passed = True
            for watched in self._watched:
                _shut(watched)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the peer
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked reading it


def is_forbidden(address: IPAddress, allow: UrlAllowList) -> bool:
    """Loopback, private, link-local, multicast, reserved and other non-global addresses."""
    if allow.allows_address(address):
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_forbidden(address.ipv4_mapped, allow)
    return not address.is_global or address.is_multicast or address.is_reserved


def resolve_checked(host: str, port: int, allow: UrlAllowList, deadline: Deadline) -> list[str]:
    """The addresses ``host`` resolves to, refused if any of them is forbidden or the deadline passes first."""
    lookup = _resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = lookup.result(timeout=deadline.remaining())
    except concurrent.futures.TimeoutError:
        lookup.cancel()
        raise deadline.exceeded() from None
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
    deadline: Deadline = self.deadline  # type: ignore[attr-defined]
    addresses = resolve_checked(self._dns_host, self.port, self.allow, deadline)  # type: ignore[attr-defined]
    error: OSError | None = None
    for address in addresses:
        timeout = deadline.remaining()
        if isinstance(self.timeout, (int, float)):
            timeout = min(timeout, self.timeout)
        try:
            sock = create_connection((address, self.port), timeout, self.source_address, self.socket_options)
        except OSError as caught:
            error = caught
            continue
        deadline.watch(sock)
        return sock
    raise urllib3.exceptions.NewConnectionError(self, f"cannot connect to {self.host}: {error}")


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose connections pass through :func:`resolve_checked` under ``deadline``."""

    def __init__(self, allow: UrlAllowList, deadline: Deadline):
        guard = {"allow": allow, "deadline": deadline, "_new_conn": _guarded_new_conn}
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
    url: str,
    out: IO[bytes],
    *,
    allow: UrlAllowList,
    timeout_seconds: float,
    deadline_seconds: float,
    max_bytes: int,
    max_redirects: int,
) -> str:
    """Stream ``url`` into ``out``; return a file name taken from the final URL.

    ``timeout_seconds`` bounds each wait for the origin, ``deadline_seconds`` the whole fetch.
    Raises :class:`UrlRefused` (malformed, not allowed, unreachable, not a 2xx answer, past the
    deadline) or :class:`TooLarge` (over ``max_bytes``, counted while streaming).
    """
    check_url(url)
    with Deadline(deadline_seconds) as deadline, _HandFollowedSession() as session:
        session.trust_env = False  # no proxies from the environment: the guard must see the target
        adapter = GuardedAdapter(allow, deadline)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        try:
            return _follow(session, url, out, deadline, timeout_seconds, max_bytes, max_redirects)
        except OSError as error:  # requests' errors are OSErrors, as are those of a socket cut at the deadline
            if deadline.passed:
                raise deadline.exceeded() from None
            cause = _cause(error)
            if isinstance(cause, UrlRefused):
                raise cause from None
            if isinstance(cause, AddressForbidden):
                raise UrlRefused(str(cause)) from None
            raise UrlRefused(f"could not fetch the URL: {type(error).__name__}") from None


def _follow(
    session: requests.Session,
    url: str,
    out: IO[bytes],
    deadline: Deadline,
    timeout_seconds: float,
    max_bytes: int,
    max_redirects: int,
) -> str:
    """GET ``url``, following redirects by hand so that every hop's URL is checked as the first was."""
    for _ in range(max_redirects + 1):
        timeout = min(timeout_seconds, deadline.remaining())
        with session.get(url, stream=True, timeout=timeout, allow_redirects=False) as response:
            if response.is_redirect:
                url = _redirect_target(response)
                continue
            if not response.ok:
                raise UrlRefused(f"the URL answered {response.status_code}")
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise TooLarge(f"the image is larger than {max_bytes} bytes")
            _copy_capped(response.iter_content(CHUNK_BYTES), out, max_bytes, deadline)
            deadline.check()  # the body may have ended only because its socket was shut down
            return _filename(response.url)
    raise UrlRefused(f"more than {max_redirects} redirects")


class _HandFollowedSession(requests.Session):
    """A session that sees no redirect: requests would parse the target (and raise on a malformed
    one) even when told not to follow it. :func:`_follow` follows them, checking each."""

    def get_redirect_target(self, resp: requests.Response) -> None:
        return None


def _redirect_target(response: requests.Response) -> str:
    try:
        # http.client reads headers as Latin-1; origins send UTF-8 (as requests assumes too).
        location = response.headers["location"].encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise UrlRefused("the URL redirected to a location that is not UTF-8") from None
    try:
        # As requests itself would: an origin's unencoded space or non-ASCII path is forgiven, not its host.
        target = requote_uri(urljoin(response.url, location))
    except ValueError:
        raise UrlRefused(f"the URL redirected to a malformed URL: {location[:200]!r}") from None
    check_url(target, what="the URL redirected to a URL that")
    return target


def _copy_capped(chunks: Iterator[bytes], out: IO[bytes], max_bytes: int, deadline: Deadline) -> None:
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > max_bytes:
            raise TooLarge(f"the image is larger than {max_bytes} bytes")
        deadline.check()
        out.write(chunk)


def _filename(url: str) -> str:
    name = os.path.basename(PurePosixPath(unquote(urlsplit(url).path)).name)
    return name[:255] or "download"
