"""The database settings given field by field reach a real MariaDB with any password: it is passed as
it is (never spliced into JSON), so quotes, backslashes and dollars work."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pymysql
import pytest

from conftest import BACKEND, mysql_auth
from heartbeat.config import DbAuth
from helpers import heartbeat

pytestmark = pytest.mark.skipif(BACKEND != "mysql", reason="about MariaDB's credentials: runs in the MariaDB pass")

# The characters that broke HEARTBEAT_DB_AUTH assembled by string substitution, and a shell's too.
AWKWARD_PASSWORD = "a\"b\\c$d${HOME}'e `f` " + secrets.token_hex(4)


def _root(auth: DbAuth) -> pymysql.Connection:
    return pymysql.connect(host=auth.host, port=auth.port, user=auth.user, password=auth.password, autocommit=True)


@pytest.fixture
def awkward_user(database) -> Iterator[tuple[DbAuth, str]]:
    """A MariaDB user with AWKWARD_PASSWORD on the test database (dropped afterwards): (root's auth, its name)."""
    auth = mysql_auth()
    user = f"hb_pw_{secrets.token_hex(4)}"
    with _root(auth) as connection, connection.cursor() as cursor:
        cursor.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, AWKWARD_PASSWORD))
        cursor.execute(f"GRANT ALL ON `{auth.database}`.* TO %s@'%%'", (user,))
    try:
        yield auth, user
    finally:
        with _root(auth) as connection, connection.cursor() as cursor:
            cursor.execute("DROP USER IF EXISTS %s@'%%'", (user,))


def test_a_password_with_quotes_backslashes_and_dollars_works_given_field_by_field(awkward_user):
    auth, user = awkward_user
    env = {
        "HEARTBEAT_DB_HOST": auth.host,
        "HEARTBEAT_DB_PORT": str(auth.port),
        "HEARTBEAT_DB_USER": user,
        "HEARTBEAT_DB_PASSWORD": AWKWARD_PASSWORD,
        "HEARTBEAT_DB_NAME": auth.database,
    }
    created = heartbeat("token", "create", "--role", "admin", "--name", "awkward", env=env)
    assert created.returncode == 0, created.stderr
    listed = heartbeat("token", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "awkward" in listed.stdout
    wrong = heartbeat("token", "list", env={**env, "HEARTBEAT_DB_PASSWORD": AWKWARD_PASSWORD + "x"})
    assert wrong.returncode == 1 and "Access denied" in wrong.stderr
