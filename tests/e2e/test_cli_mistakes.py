"""Every mistake a newcomer makes on the command line gets one line naming the flag or variable as
given, and exit status 2 (an unreachable database or API: one line, exit 1); never a traceback."""

from __future__ import annotations

import argparse
import dataclasses
import json
import socket
from pathlib import Path

import pymysql
import pytest

from heartbeat.cli import build_parser
from helpers import free_port, heartbeat, image_bytes


def one_error_line(done, status: int = 2) -> str:
    """The one line a failed command printed (stderr), after checking its exit status."""
    assert done.returncode == status, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


# --- the mistakes of the issue, one test each ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--port", "99999"], {}, "argument --port: expected a port number from 1 to 65535, not '99999'"),
        (["--port", "0"], {}, "argument --port: expected a port number from 1 to 65535, not '0'"),
        (["--port", "eighty"], {}, "argument --port: expected a whole number, not 'eighty'"),
        ([], {"HEARTBEAT_PORT": "eighty"}, "HEARTBEAT_PORT: expected a whole number, not 'eighty'"),
        ([], {"HEARTBEAT_PORT": "70000"}, "HEARTBEAT_PORT: expected a port number from 1 to 65535, not '70000'"),
    ],
    ids=["flag-too-large", "flag-zero", "flag-not-a-number", "env-not-a-number", "env-too-large"],
)
def test_a_port_that_cannot_be_used_names_the_flag_or_variable_given_and_serves_nothing(tmp_path, args, env, named):
    done = heartbeat("serve", "--data-dir", str(tmp_path / "data"), *args, env=env, timeout=30)
    assert named in one_error_line(done)
    assert "serving on" not in done.stdout
    if "HEARTBEAT_PORT" in named:
        assert "--port" not in done.stderr
    else:
        assert "HEARTBEAT_PORT" not in done.stderr


def test_a_port_in_use_stops_serve_with_one_line_naming_it(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = heartbeat("serve", "--port", str(port), "--data-dir", str(tmp_path / "data"), timeout=30)
    assert f"127.0.0.1:{port}" in one_error_line(done)
    assert "serving on" not in done.stdout


@pytest.mark.parametrize(
    "command", [["software", "list"], ["token", "list"], ["check"], ["export"], ["audit"], ["retention", "list"]]
)
def test_a_reading_command_in_another_folder_names_the_missing_data_dir_and_creates_nothing(tmp_path, command):
    done = heartbeat(*command, cwd=tmp_path)
    line = one_error_line(done)
    assert line.startswith("error: no Heartbeat database in heartbeat-data"), line
    assert "--data-dir" in line
    assert list(tmp_path.iterdir()) == []
    elsewhere = heartbeat(*command, "--data-dir", str(tmp_path / "nowhere"))
    assert f"no Heartbeat database in {tmp_path / 'nowhere'}" in one_error_line(elsewhere)
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["software", "add", "ocr"],
        ["token", "create", "--role", "admin"],
        ["retention", "add", "w", "--where", "width > 1", "--max-age", "1h"],
    ],
)
def test_a_writing_command_creates_the_data_dir_and_says_where(tmp_path, command):
    data_dir = tmp_path / "new"
    done = heartbeat(*command, "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    assert f"created a new Heartbeat database in {data_dir}" in done.stderr
    assert (data_dir / "heartbeat.db").is_file()
    again = heartbeat("software", "list", "--data-dir", str(data_dir))
    assert again.returncode == 0 and "created" not in again.stderr, again.stderr


def test_version_prints_the_version():
    done = heartbeat("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "heartbeat 0.1.0"


def _leaf_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Each command that runs something (``software add``), by its name."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found |= _leaf_parsers(child)
            return found
    return {parser.prog.removeprefix("heartbeat "): parser}


LEAF_COMMANDS = _leaf_parsers(build_parser())


def test_every_argument_of_every_command_has_help_text_and_the_description_is_plain_text():
    top = build_parser()
    assert "``" not in top.format_help() and "`" not in (top.description or "")
    for name, parser in LEAF_COMMANDS.items():
        assert f"usage: heartbeat {name}" in parser.format_help()  # a stray % in a help text would raise here
        for action in parser._actions:
            assert action.help, f"heartbeat {name}: {action.dest} has no help text"


def test_a_wrong_flag_shows_the_commands_own_usage_and_names_the_flag():
    done = heartbeat("software", "list", "--bogus")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("usage: heartbeat software list ")
    assert done.stderr.strip().splitlines()[-1] == "heartbeat software list: error: unrecognized arguments: --bogus"


def test_token_create_from_an_empty_variable_names_it(tmp_path):
    done = heartbeat(
        "token", "create", "--role", "admin", "--from-env", "NO_SUCH_VARIABLE", "--data-dir", str(tmp_path)
    )
    assert "NO_SUCH_VARIABLE (--from-env)" in one_error_line(done)
    assert list(tmp_path.iterdir()) == [], "nothing is created for a command that cannot run"


def test_token_create_refuses_the_old_samples_public_placeholder(tmp_path):
    """An .env copied from an older release's sample holds tokens anyone can read in the repository."""
    placeholder = "hb_change-me-admin-token-of-at-least-32-chars"
    args = ["token", "create", "--role", "admin", "--from-env", "ADMIN_TOKEN", "--data-dir", str(tmp_path)]
    done = heartbeat(*args, env={"ADMIN_TOKEN": placeholder})
    line = one_error_line(done)
    assert "ADMIN_TOKEN (--from-env)" in line and "deploy/make_env.py" in line and placeholder not in line, line
    assert list(tmp_path.iterdir()) == [], "nothing is created"


WORKER = ["worker", "run", "heartbeat.examples.face_detection:detect", "--software", "face_detection"]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ([*WORKER, "--concurrency", "0"], "argument --concurrency: expected a number of at least 1, not '0'"),
        ([*WORKER, "--batch", "101"], "argument --batch: expected a number from 1 to 100, not '101'"),
        ([*WORKER, "--batch", "ten"], "argument --batch: expected a whole number, not 'ten'"),
        (["upload", ".", "--parallel", "0"], "argument --parallel: expected a number of at least 1, not '0'"),
        (["check", "--grace-seconds", "soon"], "argument --grace-seconds: invalid float value: 'soon'"),
        (["export", "-o", "no/such/folder/out.jsonl"], "argument -o/--output: no such folder: no/such/folder"),
        (["serve", "--threads", "0"], "argument --threads: expected a positive number, not '0'"),
        (["serve", "--s3-secure", "maybe"], "argument --s3-secure: expected true or false, not 'maybe'"),
        (["token", "create", "--role", "boss"], "argument --role: invalid choice: 'boss'"),
        (
            ["software", "add", "ocr", "--max-in-flight", "0"],
            "argument --max-in-flight: expected a number from 1 to 1000000, not '0' (or none, for no limit)",
        ),
        (
            ["software", "set", "ocr", "--rate", "30/day"],
            "argument --rate: expected N/s, N/min or N/h (or none, for no limit), not '30/day'",
        ),
    ],
    ids=[
        "concurrency",
        "batch-too-large",
        "batch-not-a-number",
        "parallel",
        "grace",
        "output",
        "threads",
        "bool",
        "role",
        "max-in-flight",
        "rate",
    ],
)
def test_a_value_that_cannot_be_used_names_its_flag_in_one_line(tmp_path, args, named):
    done = heartbeat(*args, cwd=tmp_path, timeout=30)
    assert named in one_error_line(done)
    assert list(tmp_path.iterdir()) == []


def test_a_data_dir_that_cannot_be_made_is_named_in_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for command in (["serve", "--port", str(free_port())], ["software", "add", "ocr"]):
        done = heartbeat(*command, "--data-dir", str(blocker / "data"), timeout=30)
        assert f"the data dir {blocker / 'data'} (--data-dir, HEARTBEAT_DATA_DIR) cannot be made" in one_error_line(
            done
        )
        assert "serving on" not in done.stdout


# --- a sweep: every command with a wrong flag, a missing file, an unreachable database ----------

# The fewest arguments each command runs with (its database or API flags come from the sweep).
MINIMAL_ARGS: dict[str, list[str]] = {
    "serve": [],
    "check": [],
    "software add": ["ocr"],
    "software set": ["ocr", "--max-attempts", "2"],
    "software list": [],
    "token create": ["--role", "admin"],
    "token list": [],
    "token revoke": ["no-such-id"],
    "export": [],
    "s3 provision": ["--root-access-key-from-env", "ROOT_KEY", "--root-secret-key-from-env", "ROOT_SECRET"],
    "upload": ["PICTURE"],
    "import": ["FOLDER"],
    "worker run": ["heartbeat.examples.face_detection:detect", "--software", "face_detection"],
    "events": [],
    "retention add": ["week", "--where", "origin = 'cam'", "--max-age", "7d"],
    "retention list": [],
    "retention remove": ["week"],
    "erase": ["--where", "origin = 'cam'"],
    "audit": [],
}
READS_NO_FILE = {"events"}  # its mistakes: tests/e2e/test_events_cli.py
DATABASE_COMMANDS = [name for name, parser in LEAF_COMMANDS.items() if "--db-auth" in parser._option_string_actions]


def test_the_sweep_covers_every_command():
    assert sorted(MINIMAL_ARGS) == sorted(LEAF_COMMANDS)


def minimal_args(command: str, tmp_path: Path) -> list[str]:
    """``MINIMAL_ARGS[command]`` with PICTURE a picture's path, FOLDER a folder holding it."""
    folder = tmp_path / "folder"
    folder.mkdir(exist_ok=True)
    picture = folder / "a.png"
    picture.write_bytes(image_bytes())
    made = {"PICTURE": str(picture), "FOLDER": str(folder)}
    return [made.get(arg, arg) for arg in MINIMAL_ARGS[command]]


@pytest.mark.parametrize("command", sorted(MINIMAL_ARGS))
def test_every_command_with_a_wrong_flag_shows_its_usage_and_exits_2(tmp_path, command):
    done = heartbeat(*command.split(), *minimal_args(command, tmp_path), "--no-such-flag", timeout=30)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"usage: heartbeat {command} "), done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"heartbeat {command}: error: unrecognized arguments: --no-such-flag"


def _missing_file_args(command: str, missing: Path) -> list[str]:
    if command == "upload":
        return [str(missing)]
    if command == "worker run":
        return ["no_such_module:handler", "--software", "face_detection"]
    if command == "s3 provision":  # its files are variables: the root key's, here unset
        return [*MINIMAL_ARGS[command], "--storage", "s3://bucket"]
    return [*minimal_args(command, missing.parent), "--db-auth", str(missing)]


@pytest.mark.parametrize("command", sorted(set(MINIMAL_ARGS) - READS_NO_FILE))
def test_every_command_with_a_missing_file_says_which_in_one_line_and_exits_2(tmp_path, command):
    missing = tmp_path / "missing.json"
    done = heartbeat(*command.split(), *_missing_file_args(command, missing), timeout=30)
    line = one_error_line(done)
    if command == "worker run":
        assert "no_such_module" in line
    elif command == "s3 provision":
        assert "ROOT_KEY" in line and "HEARTBEAT_S3_ENDPOINT" in line
    else:
        flag = "PATH" if command == "upload" else "--db-auth"
        assert f"argument {flag}: no such file" in line and str(missing) in line, line


@pytest.mark.parametrize("command", DATABASE_COMMANDS)
def test_every_command_on_an_unreachable_database_prints_one_line_and_exits_1(tmp_path, command):
    auth = tmp_path / "db_auth.json"
    auth.write_text(json.dumps({"host": "127.0.0.1", "port": free_port(), "user": "root", "database": "x"}))
    done = heartbeat(*command.split(), *minimal_args(command, tmp_path), "--db-auth", str(auth), timeout=30)
    assert one_error_line(done, status=1).startswith("error: the database is unreachable")


def test_the_database_commands_are_the_ones_expected():
    assert set(DATABASE_COMMANDS) == {
        name for name in MINIMAL_ARGS if name.split()[0] not in ("s3", "upload", "worker", "events")
    }


# --- upload -------------------------------------------------------------------------------------


def test_upload_of_a_folder_lists_what_it_skipped_and_why(start_server, tmp_path):
    server = start_server()
    folder = tmp_path / "pictures"
    folder.mkdir()
    (folder / "red.png").write_bytes(image_bytes((200, 0, 0)))
    (folder / "notes.txt").write_text("not a picture")
    done = heartbeat("upload", str(folder), "--api", server.url)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"skipped {folder / 'notes.txt'}: not an image file name (")
    assert "1 uploaded (0 of them stored before), 0 failed, 1 skipped" in done.stdout


def test_upload_of_a_file_the_server_refuses_says_415_once(start_server, tmp_path):
    server = start_server()
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    done = heartbeat("upload", str(notes), "--api", server.url)
    assert done.returncode == 1
    [line] = [line for line in done.stderr.splitlines() if str(notes) in line]
    assert line.count("415") == 1, line


def test_upload_with_no_server_listening_says_so_in_one_line_without_a_progress_bar(tmp_path):
    picture = tmp_path / "a.png"
    picture.write_bytes(image_bytes())
    url = f"http://127.0.0.1:{free_port()}"
    done = heartbeat("upload", str(picture), "--api", url)
    assert one_error_line(done, status=1) == f"error: no Heartbeat API answers at {url} (the URL of --api)"
    from_env = heartbeat("upload", str(picture), env={"HEARTBEAT_API": url})
    assert one_error_line(from_env, status=1).endswith("(the URL of HEARTBEAT_API)")
    assert "100%" not in done.stderr + done.stdout


# --- MariaDB/MySQL: the database named in db_auth.json ------------------------------------------


def _root(auth):
    return pymysql.connect(host=auth.host, port=auth.port, user=auth.user, password=auth.password)


@pytest.fixture
def missing_database(db_auth, tmp_path):
    """(db_auth.json naming a database that does not exist, its name), on the test server; dropped after."""
    if db_auth is None:
        pytest.skip("MariaDB/MySQL only (HEARTBEAT_TEST_DB=mysql)")
    name = f"{db_auth.database}_new"
    with _root(db_auth) as connection, connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    path = tmp_path / "db_auth.json"
    path.write_text(json.dumps(dataclasses.asdict(db_auth) | {"database": name}))
    yield path, name
    with _root(db_auth) as connection, connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")


def _database_charset(auth, name: str) -> str | None:
    with _root(auth) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (name,)
        )
        row = cursor.fetchone()
    return row[0] if row else None


def test_a_missing_mysql_database_is_named_by_a_reading_command_and_created_by_a_writing_one(db_auth, missing_database):
    path, name = missing_database
    listing = heartbeat("software", "list", "--db-auth", str(path))
    line = one_error_line(listing)
    assert f"database '{name}' does not exist on {db_auth.host}:{db_auth.port}" in line
    assert f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4" in line
    assert _database_charset(db_auth, name) is None, "a reading command creates nothing"
    added = heartbeat("software", "add", "ocr", "--db-auth", str(path))
    assert added.returncode == 0, added.stderr
    assert _database_charset(db_auth, name) == "utf8mb4"
    assert heartbeat("software", "list", "--db-auth", str(path)).stdout.startswith("ocr\t")


@pytest.mark.parametrize("host", ["%", "127.0.0.1"])
def test_a_user_who_may_not_create_the_database_is_told_what_to_run(db_auth, missing_database, tmp_path, host):
    """The statements the line prints run as printed, for an account of any host ('hb'@'127.0.0.1': a
    GRANT to 'hb'@'%' would be ERROR 1133, no such account)."""
    path, name = missing_database
    user = f"{name}_user"[-32:]
    try:
        with _root(db_auth) as connection, connection.cursor() as cursor:
            cursor.execute(f"DROP USER IF EXISTS '{user}'@'{host}'")
            cursor.execute(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY 'secret-pw'")
    except pymysql.MySQLError as error:
        pytest.skip(f"the test user may not create users: {error}")
    try:
        limited = tmp_path / "limited.json"
        limited.write_text(json.dumps(json.loads(path.read_text()) | {"user": user, "password": "secret-pw"}))
        done = heartbeat("serve", "--port", str(free_port()), "--db-auth", str(limited), timeout=30)
        line = one_error_line(done)
        assert "as a MySQL/MariaDB administrator, run: " in line
        assert "serving on" not in done.stdout
        statements = line.split("run: ", 1)[1]
        with _root(db_auth) as connection, connection.cursor() as cursor:  # what the line says, as it says it
            for statement in filter(None, (part.strip() for part in statements.split(";"))):
                cursor.execute(statement)
        added = heartbeat("software", "add", "ocr", "--db-auth", str(limited))
        assert added.returncode == 0, added.stderr
    finally:
        with _root(db_auth) as connection, connection.cursor() as cursor:
            cursor.execute(f"DROP USER IF EXISTS '{user}'@'{host}'")


def test_a_worker_at_a_port_where_nothing_listens_gives_up_in_one_line_with_exit_when_idle():
    """No urllib3 retry lines under the worker's own: one line naming what happened, exit 1."""
    api = f"http://127.0.0.1:{free_port()}"
    command = ["worker", "run", "heartbeat.examples.face_detection:detect", "--software", "face_detection"]
    done = heartbeat(*command, "--api", api, "--exit-when-idle", "--give-up-seconds", "1", timeout=60)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == f"error: the API did not answer for 1 s: no answer from {api}: [Errno 111] Connection refused"
    assert not [line for line in lines if "urllib3" in line or "Retrying" in line], lines
