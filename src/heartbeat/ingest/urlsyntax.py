"""Whether a URL is one that an upload by URL may fetch, by its text alone (RFC 3986, IDNA 2008).

Every refusal is a :class:`UrlRefused` (422) saying what is wrong, before any lookup or
connection; where the address leads is the guard's business (``urlfetch``), not this module's.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

import idna

from heartbeat.errors import UrlRefused

MAX_URL_CHARS = 4096  # as the JSON body's schema allows
MAX_HOST_CHARS = 253  # DNS: a name's whole length, without the trailing dot
# Spaces and control characters are never part of a URL; a backslash is a slash to browsers but
# not to Python's parsers, the classic way to make two parsers see two hosts.
FORBIDDEN_CHARACTER = re.compile(r"[\x00-\x20\x7f-\x9f\\]")
# host, or [IPv6], then an optional :port (empty means the scheme's default, as RFC 3986 allows)
AUTHORITY = re.compile(r"(?:\[(?P<ip_literal>[^\]]*)\]|(?P<name>[^:\[\]]*))(?::(?P<port>[^:]*))?")
# A DNS label; underscores appear in real host names, though no standard allows them.
ASCII_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


def check_url(url: str, what: str = "the URL") -> None:
    """Refuse a URL that is not plain ``http(s)://host[:port]/...``; ``what`` names it in the message."""
    if len(url) > MAX_URL_CHARS:
        raise UrlRefused(f"{what} is longer than {MAX_URL_CHARS} characters")
    bad = FORBIDDEN_CHARACTER.search(url)
    if bad:
        raise UrlRefused(
            f"{what} contains {_describe(bad.group())} at position {bad.start()}; percent-encode it (a space is %20)"
        )
    try:
        parts = urlsplit(url)
    except ValueError as error:
        raise UrlRefused(f"{what} is malformed: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise UrlRefused(f"{what} is not http:// or https://")
    if "@" in parts.netloc:
        raise UrlRefused(f"{what} carries a user name or password (user@host); uploads by URL send no credentials")
    authority = AUTHORITY.fullmatch(parts.netloc)
    if authority is None:
        raise UrlRefused(f"{what} has a malformed host and port: {parts.netloc!r}")
    _check_port(authority["port"], what)
    if authority["ip_literal"] is not None:
        _check_ip_literal(authority["ip_literal"], what)
    else:
        check_host_name(authority["name"], what)


def _describe(character: str) -> str:
    if character == " ":
        return "a space"
    if character == "\\":
        return "a backslash"
    return f"the control character U+{ord(character):04X}"


def _check_port(port: str | None, what: str) -> None:
    if not port:
        return
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UrlRefused(f"{what} has the port {port!r}; a port is a number from 1 to 65535")


def _check_ip_literal(text: str, what: str) -> None:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        raise UrlRefused(f"{what} has [{text}] as its host, which is not an IPv6 address") from None


def check_host_name(name: str, what: str = "the URL") -> None:
    """A DNS name (or an IPv4 address, in any form the resolver reads): labels of 1 to 63 letters, digits,
    hyphens and underscores, at most 253 characters; international names must be valid IDNA 2008."""
    if not name:
        raise UrlRefused(f"{what} has no host")
    ascii_name = name.lower()
    if not name.isascii() or "xn--" in ascii_name:
        try:
            ascii_name = idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError as error:
            raise UrlRefused(f"{what} has the host {name!r}, which is not a valid domain name: {error}") from None
    labels = ascii_name.removesuffix(".").split(".")
    if len(ascii_name.removesuffix(".")) > MAX_HOST_CHARS:
        raise UrlRefused(f"{what} has a host longer than {MAX_HOST_CHARS} characters")
    for label in labels:
        if not ASCII_LABEL.fullmatch(label):
            raise UrlRefused(
                f"{what} has the host {name!r}, whose part {label!r} is not a DNS label "
                "(1 to 63 letters, digits and inner hyphens)"
            )
