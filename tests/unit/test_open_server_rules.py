"""The open server's rules on their own (``api/open_server.py``): which ``Host`` names loopback, and
which ``Origin`` is the request's own. The app applies them in tests/integration/test_open_server.py."""

from __future__ import annotations

import falcon.testing
import pytest

from heartbeat.api.open_server import is_loopback_name, sent_from_another_origin, split_host


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", ("localhost", None)),
        ("LOCALHOST:8080", ("localhost", 8080)),
        ("localhost.", ("localhost", None)),  # the absolute form of the name
        ("[::1]:80", ("::1", 80)),
        ("127.0.0.1", ("127.0.0.1", None)),
        ("localhost:http", None),
        ("localhost:99999", None),
        ("user@localhost", None),
        ("localhost/path", None),
        ("", None),
        # Two Host headers (waitress joins them with ", ") and other text that only ends in .localhost
        ("evil.com, a.localhost", None),
        ("evil.com a.localhost", None),
        ("evil.com;.localhost", None),
        ("<script>.localhost", None),
        ('evil.com".localhost', None),
    ],
)
def test_a_host_header_is_split_into_its_name_and_port_or_refused(host, expected):
    assert split_host(host) == expected


@pytest.mark.parametrize("name", ["localhost", "api.localhost", "127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1"])
def test_loopback_names_and_addresses(name):
    assert is_loopback_name(name)


@pytest.mark.parametrize(
    "name", ["localhost.example", "notlocalhost", "0.0.0.0", "::", "10.0.0.1", "::2", "128.0.0.1", "example.org"]
)
def test_names_and_addresses_that_are_not_loopback(name):
    assert not is_loopback_name(name)


def request(headers: dict[str, str], scheme: str = "http") -> falcon.Request:
    return falcon.Request(falcon.testing.create_environ(method="POST", scheme=scheme, headers=headers))


@pytest.mark.parametrize(
    ("headers", "another"),
    [
        ({"Host": "localhost:8080", "Origin": "http://localhost:8080"}, False),
        ({"Host": "localhost", "Origin": "http://LOCALHOST:80"}, False),  # the default port, any case
        ({"Host": "[::1]:8080", "Origin": "http://[::1]:8080"}, False),
        ({"Host": "localhost:8080", "Sec-Fetch-Site": "same-origin"}, False),
        ({"Host": "localhost:8080"}, False),  # no browser
        ({"Host": "localhost:8080", "Origin": "http://localhost:8081"}, True),
        ({"Host": "localhost:8080", "Origin": "https://localhost:8080"}, True),
        ({"Host": "localhost:8080", "Origin": "null"}, True),
        ({"Host": "localhost:8080", "Origin": "http://localhost:8080/path"}, True),  # no origin at all
        ({"Host": "localhost:8080", "Sec-Fetch-Site": "same-site"}, True),
        ({"Host": "localhost:8080", "Sec-Fetch-Site": "cross-site", "Origin": "http://localhost:8080"}, True),
    ],
)
def test_a_write_is_from_another_origin_when_a_browser_says_so(headers, another):
    assert sent_from_another_origin(request(headers)) is another
