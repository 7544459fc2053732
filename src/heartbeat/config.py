"""Settings: defaults, the environment, and ``db_auth.json``.

Only the entry points (``cli.py``, ``wsgi.py``) call :func:`Settings.from_env`;
everything else receives a finished :class:`Settings`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class DbAuth:
    """MySQL/MariaDB credentials, the shape of ``db_auth_sample.json``."""

    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    password: str = ""
    database: str = "heartbeat"

    @classmethod
    def from_file(cls, path: str | Path) -> DbAuth:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        return cls(**data)


@dataclasses.dataclass(frozen=True)
class UrlAllowList:
    """Networks and host names that an upload by URL may reach despite the guard."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str) -> UrlAllowList:
        networks = []
        hosts = set()
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                hosts.add(item.lower())
        return cls(tuple(networks), frozenset(hosts))

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def allows_address(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in network for network in self.networks)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the server can be told, with the embedded defaults."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("heartbeat-data")
    db_auth: DbAuth | None = None
    storage: str = ""  # "local:DIR" or "s3://BUCKET"; empty: local under data_dir
    public_url: str | None = None
    max_upload_bytes: int = 50 * MIB
    max_pixels: int = 100_000_000
    url_allow: UrlAllowList = UrlAllowList()
    url_timeout_seconds: float = 10.0
    url_max_redirects: int = 5
    signed_url_seconds: int = 3600
    default_lease_seconds: int = 300
    default_max_attempts: int = 3
    threads: int = 16
    log_format: str = "text"  # or "json"
    secret_key: str | None = None

    @property
    def local_storage_dir(self) -> Path:
        if self.storage.startswith("local:"):
            return Path(self.storage.removeprefix("local:"))
        return self.data_dir / "images"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``HEARTBEAT_*`` variables; ``overrides`` (from command-line flags) win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if "HEARTBEAT_HOST" in env:
            values["host"] = env["HEARTBEAT_HOST"]
        if "HEARTBEAT_PORT" in env:
            values["port"] = int(env["HEARTBEAT_PORT"])
        if "HEARTBEAT_DATA_DIR" in env:
            values["data_dir"] = Path(env["HEARTBEAT_DATA_DIR"])
        if env.get("HEARTBEAT_DB_AUTH"):
            values["db_auth"] = DbAuth.from_file(env["HEARTBEAT_DB_AUTH"])
        if "HEARTBEAT_STORAGE" in env:
            values["storage"] = env["HEARTBEAT_STORAGE"]
        if env.get("HEARTBEAT_PUBLIC_URL"):
            values["public_url"] = env["HEARTBEAT_PUBLIC_URL"]
        if "HEARTBEAT_MAX_UPLOAD_BYTES" in env:
            values["max_upload_bytes"] = int(env["HEARTBEAT_MAX_UPLOAD_BYTES"])
        if "HEARTBEAT_MAX_PIXELS" in env:
            values["max_pixels"] = int(env["HEARTBEAT_MAX_PIXELS"])
        if "HEARTBEAT_URL_ALLOW" in env:
            values["url_allow"] = UrlAllowList.parse(env["HEARTBEAT_URL_ALLOW"])
        if "HEARTBEAT_THREADS" in env:
            values["threads"] = int(env["HEARTBEAT_THREADS"])
        if env.get("HEARTBEAT_LOG_FORMAT"):
            values["log_format"] = env["HEARTBEAT_LOG_FORMAT"]
        if env.get("HEARTBEAT_SECRET_KEY"):
            values["secret_key"] = env["HEARTBEAT_SECRET_KEY"]
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)
