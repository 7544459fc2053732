"""Uploading by URL: the server fetches the bytes itself, and never reaches where it may not.

The pictures come from a real HTTP server started on 127.0.0.1 for each test. Loopback is
refused by default, so the tests that must succeed build the app with loopback allowed.
Addresses other than loopback are only ever named, never connected to: the guard must
refuse them before any connection is made.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import io
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import falcon.testing
import PIL.Image
import pytest
import requests

from heartbeat.app import create_app
from heartbeat.config import Settings, UrlAllowList
from heartbeat.ingest.urlsyntax import check_url
from heartbeat.storage import Storage
from helpers import fetch_url, free_port, image_bytes, multipart, stored_keys

LOOPBACK = UrlAllowList.parse("127.0.0.0/8")
SMALL_LIMIT = 4000

Route = Callable[[BaseHTTPRequestHandler], None]


# --- the source: a real HTTP server whose answers each test chooses ---------------------------


class _SourceHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # a keep-alive connection nobody closes does not hold the server's shutdown
    source: Source

    def do_GET(self) -> None:
        self.source.requested.append(self.path)
        route = self.source.routes.get(urlsplit(self.path).path)
        if route is None:
            self.send_error(404)
        else:
            route(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Source6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class Source:
    """An HTTP server on 127.0.0.1 (and on ::1 at the same port where it can): ``routes`` maps a
    path to what it answers, ``requested`` lists the paths asked for."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requested: list[str] = []
        handler = type("Handler", (_SourceHandler,), {"source": self})
        self._servers = [ThreadingHTTPServer(("127.0.0.1", 0), handler)]
        self.port = self._servers[0].server_address[1]
        with contextlib.suppress(OSError):  # no IPv6 loopback here: the [::1] cases prove less
            self._servers.append(_Source6(("::1", self.port), handler))
        self._threads = []
        for server in self._servers:
            server.daemon_threads = True
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
            thread.start()
            self._threads.append(thread)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def stop(self) -> None:
        for server, thread in zip(self._servers, self._threads, strict=True):
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


def answer(body: bytes, *, status: int = 200, content_type: str = "image/jpeg", framing: str = "length") -> Route:
    """A route answering ``body``; ``framing`` is how its end is told: length, chunked, or close."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        if framing == "length":
            handler.send_header("Content-Length", str(len(body)))
        elif framing == "chunked":
            handler.send_header("Transfer-Encoding", "chunked")
        else:  # no length at all: the body ends when the connection does
            handler.send_header("Connection", "close")
        handler.end_headers()
        if framing == "chunked":
            for start in range(0, len(body), 1024):
                piece = body[start : start + 1024]
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            handler.wfile.write(b"0\r\n\r\n")
        else:
            handler.wfile.write(body)

    return route


def redirect(location: str, status: int = 302) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


class Flood:
    """A route streaming ``total`` bytes without a Content-Length; it records how far it got."""

    def __init__(self, total: int):
        self.total = total
        self.sent = 0
        self.finished = threading.Event()

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        chunk = b"\0" * 65536
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "image/png")
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            while self.sent < self.total:
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.sent += len(chunk)
            handler.wfile.write(b"0\r\n\r\n")
        except OSError:  # the fetcher hung up
            handler.close_connection = True
        finally:
            self.finished.set()


class Slow:
    """A route that sends its headers (unless ``headers`` is False), then ``body`` one byte every
    ``seconds`` (or nothing, with None), and then waits. ``started`` counts the requests it got;
    ``hung_up`` is set when the fetcher closes the connection; ``release`` ends every wait."""

    def __init__(self, body: bytes = b"", seconds: float | None = None, *, headers: bool = True):
        self.body = body
        self.seconds = seconds
        self.headers = headers
        self.started = threading.Semaphore(0)
        self.hung_up = threading.Event()
        self.released = threading.Event()

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        self.started.release()
        handler.close_connection = True
        try:
            if self.headers:
                handler.send_response(200)
                handler.send_header("Content-Type", "image/jpeg")
                handler.send_header("Content-Length", str(len(self.body)))
                handler.end_headers()
            for index in range(len(self.body) if self.seconds is not None else 0):
                if self._hang_up_within(handler, self.seconds):
                    return
                handler.wfile.write(self.body[index : index + 1])
            self._hang_up_within(handler, None)
        except OSError:
            self.hung_up.set()

    def _hang_up_within(self, handler: BaseHTTPRequestHandler, seconds: float | None) -> bool:
        """Wait ``seconds`` (None: until released) for the fetcher to hang up; whether it did."""
        ends_at = None if seconds is None else time.monotonic() + seconds
        while not self.released.is_set() and (ends_at is None or time.monotonic() < ends_at):
            wait = 0.02 if ends_at is None else max(0.0, min(0.02, ends_at - time.monotonic()))
            readable, _, _ = select.select([handler.connection], [], [], wait)
            if readable and not handler.connection.recv(1, socket.MSG_PEEK):
                self.hung_up.set()
                return True
        return self.released.is_set()


@pytest.fixture
def slow_routes() -> Iterator[Callable[..., Slow]]:
    """Make :class:`Slow` routes, all released when the test ends."""
    made: list[Slow] = []

    def make(*args: Any, **kwargs: Any) -> Slow:
        made.append(Slow(*args, **kwargs))
        return made[-1]

    yield make
    for route in made:
        route.released.set()


@pytest.fixture
def source() -> Iterator[Source]:
    server = Source()
    yield server
    server.stop()


# --- the API under test ----------------------------------------------------------------------


@dataclasses.dataclass
class Api:
    client: falcon.testing.TestClient
    settings: Settings
    storage: Storage

    def by_json(self, url: str, **fields: Any) -> falcon.testing.Result:
        return self.client.simulate_post("/v1/images", json={"url": url, **fields})

    def by_form(self, url: str, **fields: str) -> falcon.testing.Result:
        return self.client.simulate_post("/v1/images", **multipart({"url": url, **fields}))


@pytest.fixture
def make_api(settings, storage, database, clock) -> Callable[..., Api]:
    def make(**overrides: Any) -> Api:
        changed = dataclasses.replace(settings, **overrides)
        app = create_app(changed, database=database, storage=storage, clock=clock)
        return Api(falcon.testing.TestClient(app), changed, storage)

    return make


@pytest.fixture
def api(make_api) -> Api:
    """Loopback allowed, so that the local source can be reached."""
    return make_api(url_allow=LOOPBACK)


@pytest.fixture
def default_api(make_api) -> Api:
    """The shipped defaults: no allow list. A long fetch timeout shows any attempt to connect."""
    return make_api(url_timeout_seconds=30)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def assert_nothing_kept(api: Api) -> None:
    assert api.client.simulate_get("/v1/images").json["images"] == []
    assert stored_keys(api.storage) == []
    assert files_under(api.settings.data_dir / "tmp") == []


def signed_bytes(api: Api, image_id: str) -> bytes:
    signed = api.client.simulate_get(f"/v1/images/{image_id}/url")
    assert signed.status_code == 200, signed.text
    result = fetch_url(api.client, signed.json["url"])
    assert result.status_code == 200
    return result.content


def noisy_png(more_than: int) -> bytes:
    """A real picture whose file is larger than ``more_than`` bytes."""
    out = io.BytesIO()
    PIL.Image.effect_noise((96, 96), 80).convert("RGB").save(out, "PNG")
    assert len(out.getvalue()) > more_than
    return out.getvalue()


# --- success ---------------------------------------------------------------------------------


@pytest.mark.parametrize("channel", ["json", "form"])
def test_an_image_fetched_by_url_is_stored_byte_for_byte(api, source, clock, channel):
    data = image_bytes(size=(40, 30), fmt="PNG")
    source.routes["/img.png"] = answer(data, content_type="image/png")
    send = api.by_json if channel == "json" else api.by_form
    other_data = {"camera": 7} if channel == "json" else '{"camera": 7}'
    result = send(source.url("/img.png"), origin="webcam", other_data=other_data)
    assert result.status_code == 201, result.text
    image = result.json
    assert image["duplicate"] is False
    assert result.headers["location"].endswith(f"/v1/images/{image['id']}")
    assert (image["origin"], image["other_data"]) == ("webcam", {"camera": 7})
    assert (image["width"], image["height"], image["size"]) == (40, 30, len(data))
    assert image["content_type"] == "image/png"
    assert image["uploaded_date"] == clock.now
    assert signed_bytes(api, image["id"]) == data
    assert [i["id"] for i in api.client.simulate_get("/v1/images").json["images"]] == [image["id"]]
    assert files_under(api.settings.data_dir / "tmp") == []


@pytest.mark.parametrize(
    ("path", "filename"),
    [
        ("/photos/cat.jpg", "cat.jpg"),
        ("/a/b/cat.jpg?size=large#top", "cat.jpg"),
        ("/sunset%20beach.jpg", "sunset beach.jpg"),
    ],
    ids=["plain", "query-ignored", "percent-decoded"],
)
def test_the_filename_is_taken_from_the_url_path(api, source, path, filename):
    source.routes[urlsplit(path).path] = answer(image_bytes())
    result = api.by_json(source.url(path))
    assert result.status_code == 201, result.text
    assert result.json["filename"] == filename


def test_the_same_url_again_answers_200_with_the_existing_image(api, source):
    source.routes["/img.jpg"] = answer(image_bytes())
    first = api.by_json(source.url("/img.jpg"))
    again = api.by_form(source.url("/img.jpg"), origin="elsewhere")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json["duplicate"] is True
    assert again.json["id"] == first.json["id"]
    assert len(api.client.simulate_get("/v1/images").json["images"]) == 1
    assert len(stored_keys(api.storage)) == 2  # the picture and its thumbnail


def test_a_redirect_between_allowed_addresses_is_followed(api, source):
    source.routes["/r"] = redirect("/img.jpg")
    source.routes["/img.jpg"] = answer(image_bytes())
    result = api.by_json(source.url("/r"))
    assert result.status_code == 201, result.text
    assert signed_bytes(api, result.json["id"]) == image_bytes()


def test_a_host_named_in_the_allow_list_is_reachable_by_that_name(make_api, source):
    api = make_api(url_allow=UrlAllowList.parse("localhost"))
    source.routes["/img.jpg"] = answer(image_bytes())
    result = api.by_json(source.url("/img.jpg", host="localhost"))
    assert result.status_code == 201, result.text


@pytest.fixture
def rebinding_dns(monkeypatch) -> list[str]:
    """``rebind.heartbeat.test`` answers 127.0.0.1 once, then a private address to every later lookup:
    the DNS-rebinding trick. Returns the list of lookups made for that name."""
    lookups: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.heartbeat.test":
            return real(host, port, *args, **kwargs)
        answer = "127.0.0.1" if not lookups else "10.255.255.1"
        lookups.append(answer)
        return real(answer, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


def test_the_fetch_connects_to_the_address_it_checked_not_to_a_second_dns_answer(api, source, rebinding_dns):
    source.routes["/img.jpg"] = answer(image_bytes())
    result = api.by_json(source.url("/img.jpg", host="rebind.heartbeat.test"))
    # Had the connection looked the name up again, it would have gone to 10.255.255.1 and failed.
    assert result.status_code == 201, result.text
    assert rebinding_dns == ["127.0.0.1"]
    assert source.requested


# --- refused by the address guard ------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/img.jpg",
        "http://localhost:{port}/img.jpg",
        "http://[::1]:{port}/img.jpg",
        "http://2130706433:{port}/img.jpg",
        "http://0x7f000001:{port}/img.jpg",
        "http://127.1:{port}/img.jpg",
        "http://0.0.0.0:{port}/img.jpg",
        "http://[::ffff:127.0.0.1]:{port}/img.jpg",
        "http://example.com@127.0.0.1:{port}/img.jpg",
    ],
    ids=["ipv4", "localhost", "ipv6", "decimal", "hex", "short", "any", "ipv4-mapped", "userinfo"],
)
def test_urls_reaching_this_machine_are_refused_by_default_without_a_request(default_api, source, url):
    source.routes["/img.jpg"] = answer(image_bytes())
    result = default_api.by_json(url.format(port=source.port))
    assert result.status_code == 422, result.text
    assert result.json["description"]
    assert source.requested == []
    assert_nothing_kept(default_api)


def test_the_form_upload_by_url_passes_the_same_guard(default_api, source):
    source.routes["/img.jpg"] = answer(image_bytes())
    result = default_api.by_form(source.url("/img.jpg"))
    assert result.status_code == 422, result.text
    assert source.requested == []
    assert_nothing_kept(default_api)


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://10.0.0.1/img.jpg", "10.0.0.1"),
        ("http://172.16.0.1/img.jpg", "172.16.0.1"),
        ("http://192.168.0.1:8080/img.jpg", "192.168.0.1"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://100.64.0.1/img.jpg", "100.64.0.1"),
        ("http://224.0.0.1/img.jpg", "224.0.0.1"),
        ("http://[fd00::1]/img.jpg", "fd00::1"),
        ("http://[fe80::1]/img.jpg", "fe80::1"),
    ],
)
def test_private_link_local_and_multicast_addresses_are_refused_before_connecting(default_api, url, address):
    started = time.monotonic()
    result = default_api.by_json(url)
    assert result.status_code == 422, result.text
    assert time.monotonic() - started < 5  # refused outright, not after a connection attempt timed out
    assert address in result.json["description"]
    assert_nothing_kept(default_api)


def test_a_redirect_to_an_address_outside_the_allow_list_is_refused(make_api, source):
    # Only the name "localhost" is allowed: the address it stands for is not allowed by any other name.
    api = make_api(url_allow=UrlAllowList.parse("localhost"))
    source.routes["/r"] = redirect(source.url("/img.jpg", host="127.0.0.1"))
    source.routes["/img.jpg"] = answer(image_bytes())
    result = api.by_json(source.url("/r", host="localhost"))
    assert result.status_code == 422, result.text
    assert source.requested == ["/r"]
    assert_nothing_kept(api)


@pytest.mark.parametrize(
    ("target", "address"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://10.0.0.1/img.jpg", "10.0.0.1"),
        ("http://[::1]:{port}/img.jpg", "::1"),
    ],
    ids=["metadata", "private", "ipv6-loopback"],
)
def test_a_redirect_to_a_forbidden_address_is_refused_before_connecting(api, source, target, address):
    source.routes["/r"] = redirect(target.format(port=source.port))
    source.routes["/img.jpg"] = answer(image_bytes())
    started = time.monotonic()
    result = api.by_json(source.url("/r"))
    assert result.status_code == 422, result.text
    assert time.monotonic() - started < 5
    assert address in result.json["description"]
    assert source.requested == ["/r"]
    assert_nothing_kept(api)


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1:{port}/img.jpg", "file:///etc/hosts", "gopher://127.0.0.1:{port}/img.jpg"],
    ids=["ftp", "file", "gopher"],
)
def test_only_http_and_https_urls_are_fetched(api, source, url):
    source.routes["/img.jpg"] = answer(image_bytes())
    result = api.by_json(url.format(port=source.port))
    assert result.status_code == 422, result.text
    assert source.requested == []
    assert_nothing_kept(api)


@pytest.mark.parametrize(
    ("channel", "url"),
    [("json", "127.0.0.1:{port}/img.jpg"), ("json", "http:///img.jpg"), ("json", "nonsense"), ("form", "")],
    ids=["no-scheme", "no-host", "not-a-url", "form-empty"],
)
def test_a_malformed_url_is_refused_without_fetching(api, source, channel, url):
    # A bad field (400) or a refused URL (422): either way a client error, and nothing fetched.
    source.routes["/img.jpg"] = answer(image_bytes())
    send = api.by_json if channel == "json" else api.by_form
    result = send(url.format(port=source.port))
    assert result.status_code in (400, 422), result.text
    assert source.requested == []
    assert_nothing_kept(api)


@pytest.mark.parametrize("target", ["file:///etc/hosts", "ftp://127.0.0.1/img.jpg"], ids=["file", "ftp"])
def test_a_redirect_to_another_scheme_is_refused(api, source, target):
    source.routes["/r"] = redirect(target)
    result = api.by_json(source.url("/r"))
    assert result.status_code == 422, result.text
    assert_nothing_kept(api)


# --- refused because of what the source answers ----------------------------------------------


@pytest.mark.parametrize("status", [404, 500])
def test_a_source_answering_an_error_status_gives_422(api, source, status):
    source.routes["/img.jpg"] = answer(image_bytes(), status=status)
    result = api.by_json(source.url("/img.jpg"))
    assert result.status_code == 422, result.text
    assert str(status) in result.json["description"]
    assert_nothing_kept(api)


def test_an_unreachable_source_gives_422(api):
    result = api.by_json(f"http://127.0.0.1:{free_port()}/img.jpg")
    assert result.status_code == 422, result.text
    assert_nothing_kept(api)


def test_a_redirect_loop_gives_422_after_a_bounded_number_of_requests(api, source):
    source.routes["/loop"] = redirect("/loop")
    result = api.by_json(source.url("/loop"))
    assert result.status_code == 422, result.text
    assert 1 < len(source.requested) <= api.settings.url_max_redirects + 1
    assert_nothing_kept(api)


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_a_picture_over_the_byte_limit_gives_413(make_api, source, framing):
    api = make_api(url_allow=LOOPBACK, max_upload_bytes=SMALL_LIMIT)
    source.routes["/big.png"] = answer(noisy_png(SMALL_LIMIT), content_type="image/png", framing=framing)
    result = api.by_json(source.url("/big.png"))
    assert result.status_code == 413, result.text
    assert_nothing_kept(api)


def test_an_endless_body_is_cut_off_at_the_byte_limit(make_api, source):
    api = make_api(url_allow=LOOPBACK, max_upload_bytes=SMALL_LIMIT)
    flood = Flood(total=64 * 1024 * 1024)
    source.routes["/endless.png"] = flood
    result = api.by_json(source.url("/endless.png"))
    assert result.status_code == 413, result.text
    assert flood.finished.wait(timeout=30)
    assert flood.sent < flood.total  # the fetcher hung up long before the end
    assert_nothing_kept(api)


@pytest.mark.parametrize(
    "body", [b"hello, this is not a picture", b"", image_bytes()[:60]], ids=["text", "empty", "truncated-jpeg"]
)
def test_bytes_that_are_not_a_picture_give_415(api, source, body):
    source.routes["/img.jpg"] = answer(body, content_type="image/jpeg")
    result = api.by_json(source.url("/img.jpg"))
    assert result.status_code == 415, result.text
    assert_nothing_kept(api)


# --- refused because the request itself is wrong ---------------------------------------------


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"json": {"origin": "webcam"}},
        {"json": {"url": ""}},
        {"json": {"url": 42}},
        multipart({"origin": "webcam"}),
    ],
    ids=["json-no-url", "json-empty-url", "json-url-not-text", "form-no-url"],
)
def test_a_request_without_a_url_gives_400(api, request_kwargs):
    result = api.client.simulate_post("/v1/images", **request_kwargs)
    assert result.status_code == 400, result.text
    assert_nothing_kept(api)


@pytest.mark.parametrize(
    ("channel", "fields"),
    [
        ("json", {"other_data": [1, 2]}),
        ("json", {"other_data": "text"}),
        ("json", {"other_data": 5}),
        ("json", {"origin": "x" * 300}),
        ("json", {"surprise": "field"}),
        ("form", {"other_data": "[1, 2]"}),
        ("form", {"other_data": "not json"}),
        ("form", {"origin": "x" * 300}),
    ],
    ids=[
        "json-list",
        "json-text",
        "json-number",
        "json-long-origin",
        "json-unknown-field",
        "form-list",
        "form-not-json",
        "form-long-origin",
    ],
)
def test_bad_metadata_gives_400_without_fetching(api, source, channel, fields):
    source.routes["/img.jpg"] = answer(image_bytes())
    send = api.by_json if channel == "json" else api.by_form
    result = send(source.url("/img.jpg"), **fields)
    assert result.status_code == 400, result.text
    assert source.requested == []
    assert_nothing_kept(api)


# --- the deadline: DNS, connects, redirects and body together ---------------------------------

DEADLINE_SECONDS = 1.0
# Past the deadline by this much, the fetch was not cut by it (a loaded machine included): each
# slow source below would hold the fetch for half a minute or more.
CUT_WITHIN_SECONDS = 10.0


@pytest.fixture
def deadline_api(make_api) -> Api:
    """A one-second deadline, and a per-read timeout long enough that only the deadline can cut a fetch."""
    return make_api(url_allow=LOOPBACK, url_deadline_seconds=DEADLINE_SECONDS, url_timeout_seconds=60)


def assert_cut_at_the_deadline(api: Api, result: falcon.testing.Result, started: float) -> None:
    assert result.status_code == 422, result.text
    assert "deadline" in result.json["description"]
    assert time.monotonic() - started < CUT_WITHIN_SECONDS
    assert_nothing_kept(api)


@pytest.mark.parametrize("channel", ["json", "form"])
def test_a_source_trickling_its_body_without_pause_is_cut_at_the_deadline(deadline_api, source, slow_routes, channel):
    trickle = slow_routes(image_bytes(), seconds=0.05)  # never silent for long, done only after half a minute
    source.routes["/img.jpg"] = trickle
    send = deadline_api.by_json if channel == "json" else deadline_api.by_form
    started = time.monotonic()
    result = send(source.url("/img.jpg"))
    assert_cut_at_the_deadline(deadline_api, result, started)
    assert trickle.hung_up.wait(timeout=CUT_WITHIN_SECONDS)


@pytest.mark.parametrize("headers", [True, False], ids=["silent-after-headers", "silent-from-the-start"])
@pytest.mark.parametrize("channel", ["json", "form"])
def test_a_source_that_sends_nothing_is_cut_at_the_deadline(deadline_api, source, slow_routes, channel, headers):
    silent = slow_routes(image_bytes(), seconds=None, headers=headers)
    source.routes["/img.jpg"] = silent
    send = deadline_api.by_json if channel == "json" else deadline_api.by_form
    started = time.monotonic()
    result = send(source.url("/img.jpg"))
    assert_cut_at_the_deadline(deadline_api, result, started)
    assert silent.hung_up.wait(timeout=CUT_WITHIN_SECONDS)


def test_redirects_share_one_deadline(deadline_api, source):
    # Each hop answers in 0.3 s, well within the per-read timeout; together they pass the deadline.
    def slow_redirect(target: str) -> Route:
        def route(handler: BaseHTTPRequestHandler) -> None:
            time.sleep(0.3)  # the hop's slowness is what is tested; nothing to wait on
            redirect(target)(handler)

        return route

    for hop in range(5):
        source.routes[f"/hop{hop}"] = slow_redirect(f"/hop{hop + 1}")
    source.routes["/hop5"] = answer(image_bytes())
    started = time.monotonic()
    result = deadline_api.by_json(source.url("/hop0"))
    assert_cut_at_the_deadline(deadline_api, result, started)
    assert len(source.requested) < 5


@pytest.fixture
def slow_dns(monkeypatch) -> Iterator[threading.Event]:
    """``slow-dns.heartbeat.test`` resolves to 127.0.0.1 only once the returned event is set."""
    answer_now = threading.Event()
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "slow-dns.heartbeat.test":
            answer_now.wait(timeout=60)
            host = "127.0.0.1"
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield answer_now
    answer_now.set()


def test_a_dns_lookup_that_does_not_answer_is_cut_at_the_deadline(make_api, source, slow_dns):
    api = make_api(url_allow=UrlAllowList.parse("slow-dns.heartbeat.test"), url_deadline_seconds=DEADLINE_SECONDS)
    source.routes["/img.jpg"] = answer(image_bytes())
    started = time.monotonic()
    result = api.by_json(source.url("/img.jpg", host="slow-dns.heartbeat.test"))
    assert_cut_at_the_deadline(api, result, started)
    assert source.requested == []


def test_a_slow_source_that_finishes_within_the_deadline_is_fetched_whole(deadline_api, source, slow_routes):
    data = image_bytes()  # one byte at a time, over about 0.2 s
    source.routes["/img.jpg"] = slow_routes(data, seconds=0.2 / len(data))
    result = deadline_api.by_json(source.url("/img.jpg"))
    assert result.status_code == 201, result.text
    assert signed_bytes(deadline_api, result.json["id"]) == data


def test_slow_sources_hold_only_their_own_threads_and_only_until_the_deadline(start_server, source, slow_routes):
    server = start_server(
        "--threads", "3", "--max-url-fetches", "2", "--url-allow", "127.0.0.0/8", "--url-deadline-seconds", "3"
    )
    trickle = slow_routes(image_bytes(), seconds=0.05)
    source.routes["/img.jpg"] = trickle
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow_uploads = [
            pool.submit(requests.post, f"{server.url}/v1/images", json={"url": source.url("/img.jpg")}, timeout=60)
            for _ in range(2)
        ]
        for _ in slow_uploads:
            assert trickle.started.acquire(timeout=10)  # both fetches are under way, each on a thread of its own
        health = requests.get(f"{server.url}/v1/health", timeout=2)
        upload = requests.post(f"{server.url}/v1/images", files={"file": ("a.png", image_bytes(fmt="PNG"))}, timeout=2)
        assert (health.status_code, upload.status_code) == (200, 201)
        for slow_upload in slow_uploads:
            refused = slow_upload.result()
            assert refused.status_code == 422
            assert "deadline" in refused.json()["description"]
    assert trickle.hung_up.wait(timeout=CUT_WITHIN_SECONDS)
    [stored] = requests.get(f"{server.url}/v1/images", timeout=5).json()["images"]
    assert stored["id"] == upload.json()["id"]


def test_uploads_by_url_beyond_the_fetch_limit_answer_503_at_once(start_server, source, slow_routes):
    server = start_server("--threads", "8", "--url-allow", "127.0.0.0/8", "--url-deadline-seconds", "5")
    trickle = slow_routes(image_bytes(), seconds=0.05)
    source.routes["/img.jpg"] = trickle
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = [
            pool.submit(requests.post, f"{server.url}/v1/images", json={"url": source.url("/img.jpg")}, timeout=60)
            for _ in range(2)  # the default limit of 8 threads: 2 fetches at once
        ]
        for _ in slow:
            assert trickle.started.acquire(timeout=10)
        began = time.monotonic()
        busy = requests.post(f"{server.url}/v1/images", json={"url": source.url("/img.jpg")}, timeout=10)
        assert time.monotonic() - began < 2
        assert busy.status_code == 503
        assert int(busy.headers["Retry-After"]) >= 1
        assert "by URL" in busy.json()["description"]
        assert requests.get(f"{server.url}/v1/health", timeout=2).status_code == 200
        assert [upload.result().status_code for upload in slow] == [422, 422]
    assert requests.get(f"{server.url}/v1/images", timeout=5).json()["images"] == []


# --- malformed URLs: 422, saying what is wrong, before any lookup or connection ---------------

MALFORMED_URLS = {
    # id: (URL, words the description holds); {port} is the local source's, which nothing may reach
    "ipv6-unclosed": ("http://[::1/img.jpg", "malformed"),
    "ipv6-not-an-address": ("http://[::g]:{port}/img.jpg", "malformed"),
    "ipv4-in-brackets": ("http://[127.0.0.1]:{port}/img.jpg", "malformed"),
    "text-after-brackets": ("http://[::1]x:{port}/img.jpg", "host and port"),
    "port-too-large": ("http://127.0.0.1:99999/img.jpg", "port"),
    "port-zero": ("http://127.0.0.1:0/img.jpg", "port"),
    "port-not-a-number": ("http://127.0.0.1:abc/img.jpg", "port"),
    "port-signed": ("http://127.0.0.1:+{port}/img.jpg", "port"),
    "no-host": ("http:///img.jpg", "no host"),
    "no-host-but-a-port": ("http://:{port}/img.jpg", "no host"),
    "nul": ("http://127.0.0.1:{port}/img\x00.jpg", "control character U+0000"),
    "header-injection": ("http://127.0.0.1:{port}/img.jpg\r\nX-Injected: 1", "control character U+000D"),
    "tab-in-host": ("http://127.0.\t0.1:{port}/img.jpg", "control character U+0009"),
    "delete-character": ("http://127.0.0.1:{port}/img\x7f.jpg", "control character U+007F"),
    "space-in-path": ("http://127.0.0.1:{port}/my img.jpg", "a space"),
    "space-in-host": ("http://local host:{port}/img.jpg", "a space"),
    "backslash-userinfo": ("http://example.com\\@127.0.0.1:{port}/img.jpg", "a backslash"),
    "idna-empty-punycode": ("http://xn--/img.jpg", "not a valid domain name"),
    "idna-bad-punycode": ("http://xn--abc.example/img.jpg", "not a valid domain name"),
    "idna-disallowed-character": ("http://caf\u00e9\u2044.example/img.jpg", "not a valid domain name"),
    "label-too-long": (f"http://{'a' * 64}.example/img.jpg", "DNS label"),
    "host-too-long": (f"http://{'a' * 60}.{'b' * 60}.{'c' * 60}.{'d' * 60}.{'e' * 60}/img.jpg", "longer than 253"),
    "empty-label": ("http://images..example/img.jpg", "DNS label"),
    "leading-dot": ("http://.example/img.jpg", "DNS label"),
    "hyphen-at-label-end": ("http://images-.example/img.jpg", "DNS label"),
    "userinfo": ("http://user:secret@127.0.0.1:{port}/img.jpg", "user name or password"),
    "userinfo-hiding-the-host": ("http://127.0.0.1:{port}@example.com/img.jpg", "user name or password"),
    "two-at-signs": ("http://a@127.0.0.1:{port}@example.com/img.jpg", "user name or password"),
}


@pytest.mark.parametrize("channel", ["json", "form"])
@pytest.mark.parametrize(("url", "words"), MALFORMED_URLS.values(), ids=MALFORMED_URLS.keys())
def test_a_malformed_url_is_422_saying_what_is_wrong(api, source, channel, url, words):
    source.routes["/img.jpg"] = answer(image_bytes())
    send = api.by_json if channel == "json" else api.by_form
    result = send(url.format(port=source.port))
    assert result.status_code == 422, result.text
    assert words in result.json["description"]
    assert source.requested == []
    assert_nothing_kept(api)


def test_a_url_longer_than_the_limit_is_refused_on_the_form_as_the_json_schema_refuses_it(api, source):
    source.routes["/img.jpg"] = answer(image_bytes())
    long_url = source.url("/img.jpg?" + "a" * 5000)
    assert api.by_form(long_url).status_code == 400  # the form's schema, as the document shows it
    assert api.by_json(long_url).status_code == 400
    assert source.requested == []
    assert_nothing_kept(api)


@pytest.mark.parametrize(
    ("location", "words"),
    [
        ("http://[::1/img.jpg", "malformed"),
        ("http://127.0.0.1:99999/img.jpg", "port"),
        ("http://user:secret@127.0.0.1:{port}/img.jpg", "user name or password"),
        ("http://xn--/img.jpg", "not a valid domain name"),
    ],
    ids=["ipv6-unclosed", "bad-port", "userinfo", "idna"],
)
def test_a_redirect_to_a_malformed_url_is_422_saying_so(api, source, location, words):
    source.routes["/r"] = redirect(location.format(port=source.port))
    source.routes["/img.jpg"] = answer(image_bytes())
    result = api.by_json(source.url("/r"))
    assert result.status_code == 422, result.text
    assert "redirected" in result.json["description"]
    assert words in result.json["description"]
    assert source.requested == ["/r"]
    assert_nothing_kept(api)


def test_a_redirect_with_an_unencoded_space_in_its_path_is_followed_as_browsers_do(api, source):
    source.routes["/r"] = redirect("/my img.jpg")
    source.routes["/my%20img.jpg"] = answer(image_bytes())
    result = api.by_json(source.url("/r"))
    assert result.status_code == 201, result.text
    assert result.json["filename"] == "my img.jpg"


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/img.jpg",
        "https://EXAMPLE.com:443/a/b.jpg?size=large#top",
        "http://example.com./img.jpg",
        "http://b\u00fccher.example/img.jpg",
        "http://xn--bcher-kva.example/img.jpg",
        "http://under_score.example/img.jpg",
        "http://127.1:8080/img.jpg",
        "http://[::1]:8080/img.jpg",
        "http://example.com:/img.jpg",
        "http://example.com/caf\u00e9%20au%20lait.jpg",
    ],
    ids=[
        "plain",
        "upper-case-port-query",
        "trailing-dot",
        "idn",
        "a-label",
        "underscore",
        "short-ipv4",
        "ipv6",
        "empty-port",
        "non-ascii-path",
    ],
)
def test_a_well_formed_url_passes_the_syntax_check(url):
    check_url(url)  # raises UrlRefused otherwise
