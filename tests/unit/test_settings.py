"""Every setting read from the environment has a ``heartbeat serve`` flag of its own, and the README names it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heartbeat.cli import build_parser, settings_from_args
from heartbeat.config import OPTIONS, DbAuth, SettingError, Settings, UrlAllowList
from helpers import heartbeat

README = Path(__file__).parents[2] / "README.md"
INLINE_DB_AUTH = {"host": "mariadb", "port": 3306, "user": "hb", "password": "pw", "database": "heartbeat"}

# One good value per variable, and what Settings makes of it.
EXAMPLES = {
    "HEARTBEAT_HOST": ("0.0.0.0", "0.0.0.0"),
    "HEARTBEAT_PORT": ("9090", 9090),
    "HEARTBEAT_DATA_DIR": ("/srv/heartbeat", Path("/srv/heartbeat")),
    "HEARTBEAT_STORAGE": ("s3://images", "s3://images"),
    "HEARTBEAT_PUBLIC_URL": ("https://hb.example.org", "https://hb.example.org"),
    "HEARTBEAT_MAX_UPLOAD_BYTES": ("1000", 1000),
    "HEARTBEAT_MAX_PIXELS": ("2000", 2000),
    "HEARTBEAT_THREADS": ("4", 4),
    "HEARTBEAT_LOG_FORMAT": ("json", "json"),
    "HEARTBEAT_SECRET_KEY": ("s3cr3t", "s3cr3t"),
    "HEARTBEAT_SIGNED_URL_SECONDS": ("600", 600),
    "HEARTBEAT_S3_ENDPOINT": ("minio:9000", "minio:9000"),
    "HEARTBEAT_S3_ACCESS_KEY": ("access", "access"),
    "HEARTBEAT_S3_SECRET_KEY": ("secret", "secret"),
    "HEARTBEAT_S3_REGION": ("eu-west-1", "eu-west-1"),
    "HEARTBEAT_S3_SECURE": ("false", False),
    "HEARTBEAT_S3_PUBLIC_ENDPOINT": ("localhost:9000", "localhost:9000"),
    "HEARTBEAT_URL_ALLOW": ("10.0.0.0/8,cam.local", UrlAllowList.parse("cam.local,10.0.0.0/8")),
    "HEARTBEAT_URL_DEADLINE_SECONDS": ("12.5", 12.5),
    "HEARTBEAT_QUERY_SECONDS": ("2.5", 2.5),
    "HEARTBEAT_EVENTS_RETAIN_SECONDS": ("3600", 3600.0),
    "HEARTBEAT_WEBHOOK_RETRY_SECONDS": ("90.5", 90.5),
    "HEARTBEAT_RETENTION_INTERVAL_SECONDS": ("60", 60.0),
    "HEARTBEAT_AUDIT_RETAIN_SECONDS": ("86400.5", 86400.5),
    "HEARTBEAT_CONNECTION_LIMIT": ("2000", 2000),
    "HEARTBEAT_PROCESSES": ("2", 2),
    "HEARTBEAT_MAX_WAITING_CLAIMS": ("3", 3),
    "HEARTBEAT_MAX_URL_FETCHES": ("2", 2),
    "HEARTBEAT_DB_AUTH": (json.dumps(INLINE_DB_AUTH), DbAuth(**INLINE_DB_AUTH)),
    # The same values as INLINE_DB_AUTH's, so that together they make the same DbAuth.
    "HEARTBEAT_DB_HOST": ("mariadb", "mariadb"),
    "HEARTBEAT_DB_PORT": ("3306", 3306),
    "HEARTBEAT_DB_USER": ("hb", "hb"),
    "HEARTBEAT_DB_PASSWORD": ("pw", "pw"),
    "HEARTBEAT_DB_NAME": ("heartbeat", "heartbeat"),
}


def test_every_variable_is_read_into_its_setting():
    environ = {name: text for name, (text, _value) in EXAMPLES.items()}
    assert set(environ) == {option.env for option in OPTIONS}, "an example for every variable"
    settings = Settings.from_env(environ)
    for option in OPTIONS:
        assert getattr(settings, option.field) == EXAMPLES[option.env][1], option.env


def test_every_variable_has_a_serve_flag_that_wins_over_it(monkeypatch):
    for option in OPTIONS:
        text, value = EXAMPLES[option.env]
        monkeypatch.setenv(option.env, "")  # empty counts as unset; a value would lose to the flag
        settings = settings_from_args(build_parser().parse_args(["serve", option.flag, text]))
        assert getattr(settings, option.field) == value, option.flag
    monkeypatch.setenv("HEARTBEAT_PORT", "1")
    assert settings_from_args(build_parser().parse_args(["serve", "--port", "7000"])).port == 7000
    assert settings_from_args(build_parser().parse_args(["serve"])).port == 1


def test_db_auth_is_a_file_or_its_json(tmp_path):
    path = tmp_path / "db_auth.json"
    path.write_text(json.dumps(INLINE_DB_AUTH))
    assert DbAuth.load(str(path)) == DbAuth.load(json.dumps(INLINE_DB_AUTH)) == DbAuth(**INLINE_DB_AUTH)
    with pytest.raises(SettingError, match="HEARTBEAT_DB_AUTH"):
        Settings.from_env({"HEARTBEAT_DB_AUTH": '{"host": "x", "surprise": 1}'})


def test_each_database_field_replaces_that_key_of_db_auth_whatever_its_characters(tmp_path):
    password = "p\"a\\ss$HOME{}'word"
    settings = Settings.from_env({"HEARTBEAT_DB_AUTH": json.dumps(INLINE_DB_AUTH), "HEARTBEAT_DB_PASSWORD": password})
    assert settings.db_auth == DbAuth(**{**INLINE_DB_AUTH, "password": password})
    alone = Settings.from_env({"HEARTBEAT_DB_HOST": "db.internal", "HEARTBEAT_DB_NAME": "images"})
    assert alone.db_auth == DbAuth(host="db.internal", database="images")  # the rest: DbAuth's defaults
    assert Settings.from_env({}).db_auth is None  # none given: SQLite
    flags = build_parser().parse_args(["token", "list", "--db-user", "hb", "--db-port", "3307"])
    assert settings_from_args(flags).db_auth == DbAuth(user="hb", port=3307)


@pytest.mark.parametrize(
    ("variable", "text"),
    [
        ("HEARTBEAT_PORT", "eighty"),
        ("HEARTBEAT_DB_PORT", "-1"),
        ("HEARTBEAT_S3_SECURE", "maybe"),
        ("HEARTBEAT_THREADS", "0"),
        ("HEARTBEAT_URL_DEADLINE_SECONDS", "0"),
        ("HEARTBEAT_URL_DEADLINE_SECONDS", "inf"),
        ("HEARTBEAT_CONNECTION_LIMIT", "0"),
        ("HEARTBEAT_PROCESSES", "100000"),  # it forked until the machine's memory ran out
        ("HEARTBEAT_PROCESSES", "65"),
    ],
)
def test_a_bad_value_is_refused_naming_its_variable(variable, text, tmp_path):
    done = heartbeat("serve", "--data-dir", str(tmp_path), env={variable: text})
    assert done.returncode == 2
    assert variable in done.stderr
    assert "Traceback" not in done.stderr


def test_a_bad_flag_is_refused_naming_it(tmp_path):
    done = heartbeat("serve", "--data-dir", str(tmp_path), "--s3-secure", "maybe")
    assert done.returncode == 2
    assert "--s3-secure" in done.stderr
    done = heartbeat("serve", "--data-dir", str(tmp_path), "--processes", "100000")
    assert done.returncode == 2
    assert "--processes" in done.stderr and "at most 64" in done.stderr


def test_the_readme_documents_every_variable_and_its_flag():
    text = README.read_text()
    for option in OPTIONS:
        assert f"`{option.env}`" in text, f"README does not name {option.env}"
        assert f"`{option.flag}" in text, f"README does not name {option.flag}"
