"""Uploading by URL: the server fetches the bytes itself, and never reaches where it may not.

The pictures come from a real HTTP server started on 127.0.0.1 for each test. Loopback is
refused by default, so the tests that must succeed build the app with loopback allowed.
Addresses other than loopback are only ever named, never connected to: the guard must
refuse them before any connection is made.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
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

from heartbeat.app import create_app
from heartbeat.config import Settings, UrlAllowList
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
