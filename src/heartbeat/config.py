"""Settings: defaults, the environment, and ``db_auth.json``.

Only the entry points (``cli/``, ``wsgi.py``) call :func:`Settings.from_env`;
everything else receives a finished :class:`Settings`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from heartbeat.logs import LOG_FORMATS

MIB = 1024 * 1024


class SettingError(ValueError):
    """A setting that cannot be used; the message names the variable or flag."""


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
        try:
            with open(path, encoding="utf-8") as f:
                return cls.from_json(f.read(), str(path))
        except FileNotFoundError:
            raise ValueError(f"no such file: {path}") from None
        except OSError as error:
            raise ValueError(f"cannot read {path}: {error.strerror or error}") from None

    @classmethod
    def load(cls, text: str) -> DbAuth:
        """A db_auth.json file's path, or (starting with ``{``) its JSON itself, as a container's env gives it."""
        if text.lstrip().startswith("{"):
            return cls.from_json(text, "the JSON given")
        return cls.from_file(text)

    @classmethod
    def from_json(cls, text: str, path: str) -> DbAuth:
        try:
            data = json.loads(text)
        except ValueError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        return cls(**data)


# Settings field db_<name> -> the DbAuth key it sets.
DB_AUTH_FIELDS = {"host": "host", "port": "port", "user": "user", "password": "password", "name": "database"}


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
    url_timeout_seconds: float = 10.0  # each wait for the origin of an upload by URL
    url_deadline_seconds: float = 30.0  # the whole upload by URL: DNS, connects, redirects and body
    url_max_redirects: int = 5
    signed_url_seconds: int = 3600
    default_lease_seconds: int = 300
    default_max_attempts: int = 3
    threads: int = 16
    query_seconds: float = 30.0  # the longest one statement of a query (where=, exports, requeue) may run
    events_retain_seconds: float = 7 * 86400.0  # events older than this are removed; older cursors are 410
    webhook_retry_seconds: float = 86400.0  # a webhook delivery is tried again for this long, then failed
    retention_interval_seconds: float = 3600.0  # how often each retention policy erases what came due
    audit_retain_seconds: float = 400 * 86400.0  # audit entries older than this are removed
    connection_limit: int = 1000  # open connections each server process accepts at once
    processes: int = 1
    max_waiting_claims: int | None = None  # None: half the threads
    max_url_fetches: int | None = None  # None: a quarter of the threads, at least one
    log_format: str = "text"  # or "json"
    secret_key: str | None = None
    s3_endpoint: str | None = None  # "host:port" or a URL
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"  # known up front, so that presigning never asks the store
    s3_secure: bool | None = None  # None: the endpoint URL's scheme says, else HTTPS
    s3_public_endpoint: str | None = None  # the host presigned URLs are signed for
    # The database settings one by one: each given one replaces that key of db_auth (or of DbAuth's
    # defaults), so that a password is passed as it is, never spliced into JSON.
    db_host: str | None = None
    db_port: int | None = None
    db_user: str | None = None
    db_password: str | None = None
    db_name: str | None = None

    def __post_init__(self) -> None:
        fields = {key: getattr(self, f"db_{name}") for name, key in DB_AUTH_FIELDS.items()}
        given = {key: value for key, value in fields.items() if value is not None}
        if given:  # frozen: set once here, so that every reader sees the merged credentials
            object.__setattr__(self, "db_auth", dataclasses.replace(self.db_auth or DbAuth(), **given))

    @property
    def waiting_claims_limit(self) -> int:
        """How many long-polling claims one process lets wait at once: ``max_waiting_claims``, by default
        half of ``threads`` (none with one thread), so that the others always serve uploads, submits
        and reads."""
        if self.max_waiting_claims is not None:
            return self.max_waiting_claims
        return self.threads // 2

    @property
    def url_fetches_limit(self) -> int:
        """How many uploads by URL one process fetches at once: ``max_url_fetches``, by default a quarter
        of ``threads`` (at least one), so that slow origins never hold most of the threads."""
        if self.max_url_fetches is not None:
            return self.max_url_fetches
        return max(1, self.threads // 4)

    def check_serving(self) -> None:
        """:class:`SettingError` for settings that could not serve well together."""
        if self.waiting_claims_limit >= self.threads:
            raise SettingError(
                f"HEARTBEAT_MAX_WAITING_CLAIMS (--max-waiting-claims) is {self.waiting_claims_limit}: it must be "
                f"less than HEARTBEAT_THREADS (--threads), {self.threads}, or waiting claims could hold every thread"
            )

    @property
    def local_storage_dir(self) -> Path:
        if self.storage.startswith("local:"):
            return Path(self.storage.removeprefix("local:"))
        return self.data_dir / "images"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read the ``HEARTBEAT_*`` variables of :data:`OPTIONS`; ``overrides`` (from command-line flags) win.

        An empty variable counts as unset, as compose files and ``.env`` files write them.
        """
        env = os.environ if environ is None else environ
        values = {option.field: option.read(env[option.env]) for option in OPTIONS if env.get(option.env)}
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)


def parse_bool(text: str) -> bool:
    """``true``/``false`` in the usual spellings; anything else is an error, not a silent false."""
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, not {text!r}")


def log_format(text: str) -> str:
    if text not in LOG_FORMATS:
        raise ValueError(f"expected one of {', '.join(LOG_FORMATS)}, not {text!r}")
    return text


def whole_number(text: str) -> int:
    """An integer; anything else is a ValueError that quotes it."""
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, not {text!r}") from None


def port_number(text: str) -> int:
    """A TCP port, 1 to 65535 (a larger number would wrap around to another port)."""
    value = whole_number(text)
    if not 1 <= value <= 65535:
        raise ValueError(f"expected a port number from 1 to 65535, not {text!r}")
    return value


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise ValueError(f"expected a positive number of seconds, not {text!r}")
    return value


def positive_int(text: str) -> int:
    value = whole_number(text)
    if value < 1:
        raise ValueError(f"expected a positive number, not {text!r}")
    return value


MAX_PROCESSES = 64  # server processes on one machine: each holds a database connection per thread


def process_count(text: str) -> int:
    value = positive_int(text)
    if value > MAX_PROCESSES:
        raise ValueError(f"expected at most {MAX_PROCESSES} processes, not {text!r}")
    return value


def natural_int(text: str) -> int:
    value = whole_number(text)
    if value < 0:
        raise ValueError(f"expected 0 or a positive number, not {text!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting: its :class:`Settings` field, environment variable and ``heartbeat serve`` flag."""

    field: str
    env: str
    help: str
    parse: Callable[[str], Any] = str

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    def read(self, text: str) -> Any:
        """The value of the environment variable; a bad one raises :class:`SettingError` naming the variable
        (a flag's value is parsed by :attr:`parse` itself, and the command line names the flag)."""
        try:
            return self.parse(text)
        except (ValueError, OSError) as error:
            raise SettingError(f"{self.env}: {error}") from None


# Every setting read from the environment, each with its flag: the contract's "every env setting has a flag".
OPTIONS: tuple[Option, ...] = (
    Option("host", "HEARTBEAT_HOST", "address to bind (default 127.0.0.1)"),
    Option("port", "HEARTBEAT_PORT", "port, 1 to 65535 (default 8080)", port_number),
    Option("data_dir", "HEARTBEAT_DATA_DIR", "SQLite and image files live here (default ./heartbeat-data)", Path),
    Option("db_auth", "HEARTBEAT_DB_AUTH", "MySQL/MariaDB credentials: a db_auth.json file, or its JSON", DbAuth.load),
    Option("db_host", "HEARTBEAT_DB_HOST", "MySQL/MariaDB host, replacing db_auth's (any of these five: MySQL)"),
    Option("db_port", "HEARTBEAT_DB_PORT", "MySQL/MariaDB port, replacing db_auth's (default 3306)", positive_int),
    Option("db_user", "HEARTBEAT_DB_USER", "MySQL/MariaDB user, replacing db_auth's (default root)"),
    Option("db_password", "HEARTBEAT_DB_PASSWORD", "MySQL/MariaDB password, replacing db_auth's, taken as it is"),
    Option("db_name", "HEARTBEAT_DB_NAME", "MySQL/MariaDB database, replacing db_auth's (default heartbeat)"),
    Option("storage", "HEARTBEAT_STORAGE", "local:DIR (default DATA_DIR/images) or s3://BUCKET"),
    Option("public_url", "HEARTBEAT_PUBLIC_URL", "base URL workers reach this API by (local storage's URLs)"),
    Option(
        "max_upload_bytes", "HEARTBEAT_MAX_UPLOAD_BYTES", "larger uploads are refused (default 50 MiB)", positive_int
    ),
    Option("max_pixels", "HEARTBEAT_MAX_PIXELS", "larger images are refused (default 100 million)", positive_int),
    Option("url_allow", "HEARTBEAT_URL_ALLOW", "networks or hosts URL uploads may reach", UrlAllowList.parse),
    Option(
        "url_deadline_seconds",
        "HEARTBEAT_URL_DEADLINE_SECONDS",
        "the whole time an upload by URL may take: DNS, connects, redirects and body (default 30)",
        positive_seconds,
    ),
    Option(
        "query_seconds",
        "HEARTBEAT_QUERY_SECONDS",
        "the longest one statement of a query (where=, exports, requeue) may run; then 503 (default 30)",
        positive_seconds,
    ),
    Option(
        "events_retain_seconds",
        "HEARTBEAT_EVENTS_RETAIN_SECONDS",
        "events are kept this long; an older cursor answers 410 (default 604800: 7 days)",
        positive_seconds,
    ),
    Option(
        "webhook_retry_seconds",
        "HEARTBEAT_WEBHOOK_RETRY_SECONDS",
        "a webhook delivery is tried again for this long, then failed (default 86400: 24 h)",
        positive_seconds,
    ),
    Option(
        "retention_interval_seconds",
        "HEARTBEAT_RETENTION_INTERVAL_SECONDS",
        "each retention policy erases the images that came due this often (default 3600)",
        positive_seconds,
    ),
    Option(
        "audit_retain_seconds",
        "HEARTBEAT_AUDIT_RETAIN_SECONDS",
        "audit entries are kept this long (default 34560000: 400 days)",
        positive_seconds,
    ),
    Option("threads", "HEARTBEAT_THREADS", "waitress worker threads of each process (default 16)", positive_int),
    Option(
        "connection_limit",
        "HEARTBEAT_CONNECTION_LIMIT",
        "open connections each server process accepts at once, idle keep-alive ones included (default 1000)",
        positive_int,
    ),
    Option(
        "processes",
        "HEARTBEAT_PROCESSES",
        f"server processes sharing the port, to use more cores (default 1, at most {MAX_PROCESSES})",
        process_count,
    ),
    Option(
        "max_waiting_claims",
        "HEARTBEAT_MAX_WAITING_CLAIMS",
        "long-polling claims each process lets wait at once (default: half the threads); others get Retry-After",
        natural_int,
    ),
    Option(
        "max_url_fetches",
        "HEARTBEAT_MAX_URL_FETCHES",
        "uploads by URL each process fetches at once (default: a quarter of the threads); others get 503",
        positive_int,
    ),
    Option("log_format", "HEARTBEAT_LOG_FORMAT", "text (the default) or json: one JSON object a line", log_format),
    Option("secret_key", "HEARTBEAT_SECRET_KEY", "signs local storage's URLs (default: a key kept in DATA_DIR)"),
    Option(
        "signed_url_seconds", "HEARTBEAT_SIGNED_URL_SECONDS", "lifetime of presigned URLs (default 3600)", positive_int
    ),
    Option("s3_endpoint", "HEARTBEAT_S3_ENDPOINT", "the S3/MinIO endpoint, host:port or a URL"),
    Option("s3_access_key", "HEARTBEAT_S3_ACCESS_KEY", "S3 access key"),
    Option("s3_secret_key", "HEARTBEAT_S3_SECRET_KEY", "S3 secret key"),
    Option("s3_region", "HEARTBEAT_S3_REGION", "the bucket's region (default us-east-1)"),
    Option("s3_secure", "HEARTBEAT_S3_SECURE", "true: HTTPS to a host:port endpoint (the default)", parse_bool),
    Option("s3_public_endpoint", "HEARTBEAT_S3_PUBLIC_ENDPOINT", "the host presigned URLs name, if not the endpoint"),
)
