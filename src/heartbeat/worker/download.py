"""Fetching an image's bytes from a presigned URL, and checking them against the image record.

A worker makes one download per job, so downloads go through urllib3 (the library under requests)
rather than a requests Session: the session's own work on every request (the environment read again
for proxies, certificates and a netrc file; the body read 10 KB at a time) cost more CPU than the
transfer and the sha256 check together. What the environment says is still obeyed, the way requests
reads it, but read once per storage host.

The pools belong to the :class:`~heartbeat.worker.Client` that made them, with its retries and
timeouts, and are closed with it: nothing here is made at import.
"""

from __future__ import annotations

import hashlib
import os
import threading
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.util.retry import Retry

from heartbeat import __version__
from heartbeat.worker.exceptions import ContentMismatch, ServerUnavailable, error_from_answer
from heartbeat.worker.models import Image

POOL_SIZE = 64  # keep-alive connections per storage host: more than any worker's handlers at once
MAX_REDIRECTS = 30  # as many as requests follows


class Downloads:
    """Connection pools for presigned URLs: a pool per storage host, reached directly or through the
    proxy the environment names for it. They send no API token: it never goes to the storage host.

    ``retries``: connection errors and 503s, as the API's (redirects are followed besides, up to
    ``MAX_REDIRECTS``); ``timeout``: to connect, and for each read of the answer.
    """

    def __init__(self, retries: Retry, timeout: urllib3.Timeout) -> None:
        self._retries = retries.new(redirect=MAX_REDIRECTS, total=None)  # each kind bounded on its own
        self._timeout = timeout
        self._lock = threading.Lock()
        self._routes: dict[str, tuple[urllib3.PoolManager, HTTPConnectionPool | None]] = {}
        self._managers: dict[tuple[str | None, str | bool | None], urllib3.PoolManager] = {}

    def fetch(self, url: str) -> bytes:
        """The bytes at a presigned URL (it needs no token, and is sent none).

        Raises :class:`ServerUnavailable` when the retries are spent, or the error of a 4xx or 5xx answer.
        """
        try:
            response = self._get(url)
        except urllib3.exceptions.HTTPError as error:
            raise ServerUnavailable(f"could not fetch the image bytes: {error}") from error
        if response.status >= 400:
            raise error_from_answer(response.status, response.data.decode(errors="replace"))
        return response.data

    def _get(self, url: str) -> urllib3.BaseHTTPResponse:
        """GET ``url``, read whole, retried as ``retries`` says."""
        origin = _origin(url)
        manager, pool = self._route(origin, url)
        if pool is None:
            return manager.request("GET", url, timeout=self._timeout)
        # Straight to the host's pool: the pool manager's own work per request (parsing the URL, finding
        # the pool) cost a sixth of a download. It is kept for what a presigned URL seldom does: redirect.
        target = url[len(origin) :] or "/"
        response = pool.urlopen("GET", target, headers=manager.headers, timeout=self._timeout, redirect=False)
        location = response.get_redirect_location()
        if location:
            return manager.request("GET", urljoin(url, location), timeout=self._timeout)
        return response

    def _route(self, origin: str, url: str) -> tuple[urllib3.PoolManager, HTTPConnectionPool | None]:
        """The pool manager for ``url``'s host, made on first use as a requests Session would connect,
        and the host's pool when it is reached directly (None through a proxy)."""
        route = self._routes.get(origin)
        if route is not None:
            return route
        with self._lock:
            route = self._routes.get(origin)
            if route is None:
                with requests.Session() as session:
                    settings = session.merge_environment_settings(url, {}, None, None, None)
                proxy = requests.utils.select_proxy(url, settings["proxies"])
                key = (proxy, settings["verify"])
                manager = self._managers.get(key) or _pool_manager(proxy, settings["verify"], self._retries)
                self._managers[key] = manager
                route = self._routes[origin] = (manager, None if proxy else manager.connection_from_url(url))
            return route

    def close(self) -> None:
        """Close every pooled connection; the next fetch opens new ones."""
        with self._lock:
            for manager in self._managers.values():
                manager.clear()
            self._routes.clear()
            self._managers.clear()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _pool_manager(proxy: str | None, verify: str | bool | None, retries: Retry) -> urllib3.PoolManager:
    options: dict[str, object] = {
        "maxsize": POOL_SIZE,
        "headers": {"User-Agent": f"heartbeat-worker/{__version__}"},
        "retries": retries,
    }
    if verify is False:
        options["cert_reqs"] = "CERT_NONE"
    elif isinstance(verify, str):
        options["ca_cert_dir" if os.path.isdir(verify) else "ca_certs"] = verify
    if proxy is None:
        return urllib3.PoolManager(**options)  # type: ignore[arg-type]
    if proxy.lower().startswith("socks"):
        from urllib3.contrib.socks import SOCKSProxyManager

        return SOCKSProxyManager(proxy, **options)  # type: ignore[arg-type]
    return urllib3.ProxyManager(proxy, **options)  # type: ignore[arg-type]


def check_content(data: bytes, image: Image) -> bytes:
    """``data``, when its size and sha256 are the image record's; else :class:`ContentMismatch`."""
    if len(data) != image.size:
        raise ContentMismatch(f"downloaded {len(data)} bytes, the image record says {image.size}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != image.sha256:
        raise ContentMismatch(f"downloaded bytes have sha256 {digest}, the image record says {image.sha256}")
    return data
