"""What each ClickHouse user of the local stack may do, on the real 18.16 server
(infra/clickhouse/users.xml.in, docs/decisions/0018-clickhouse-least-privilege.md).

Needs ClickHouse only: these tests do not use the Kafka/registry fixtures of conftest.py. They
work in the database the stack serves (METERFLOW_DB, the one its users.xml lists), in a table
of their own that is dropped afterwards, and in a second database of their own.
"""

from __future__ import annotations

import base64
import http.client
import os
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from clickhouse_driver import Client
from clickhouse_driver.errors import Error as ClickHouseError

from connectors.clickhouse import connect, migrate
from connectors.loader import ClickHouseHttp
from meterflow.credentials import secret
from meterflow.settings import CLICKHOUSE_USERS, Settings

HTTP_PORT = int(os.environ.get("CLICKHOUSE_HTTP_PORT", "8123"))
# ClickHouse error codes (ErrorCodes.cpp)
WRONG_PASSWORD, IP_ADDRESS_NOT_ALLOWED = 193, 195
DATABASE_ACCESS_DENIED, READONLY, QUERY_IS_PROHIBITED = 291, 164, 392


@dataclass(frozen=True)
class Place:
    settings: Settings
    db: str  # the served database
    table: str  # db.<own table>
    other: str  # a database the limited users may not use


def user(role: str) -> tuple[str, str]:
    # the stack's own users, whatever tests/conftest.py maps the roles to for the other tests
    name, principal = CLICKHOUSE_USERS[role]
    return name, secret(principal)


def client(place: Place, role: str, database: str | None = None) -> Client:
    name, password = user(role)
    s = place.settings
    return Client(
        host=s.clickhouse_host,
        port=s.clickhouse_port,
        user=name,
        password=password,
        database=database or place.db,
    )


def refused(code: int, ch: Client, sql: str, params: object = None, **kw: object) -> None:
    with pytest.raises(ClickHouseError) as err:
        ch.execute(sql, params, **kw)
    assert getattr(err.value, "code", None) == code, str(err.value)[:300]


@pytest.fixture(scope="module")
def place() -> Iterator[Place]:
    s = Settings()
    try:
        connect(s, role="migrate").execute("SELECT 1")
    except Exception as exc:
        pytest.fail(f"clickhouse at {s.clickhouse_host}:{s.clickhouse_port} (`make up`): {exc}")
    migrate(s)  # the served database exists, as after `meterflow init`
    run = uuid.uuid4().hex[:10]
    p = Place(s, s.clickhouse_database, f"{s.clickhouse_database}.priv_{run}", f"priv_{run}")
    admin = connect(s, role="migrate")
    admin.execute(f"CREATE TABLE {p.table} (x UInt32) ENGINE = MergeTree ORDER BY x")
    admin.execute(f"CREATE DATABASE {p.other}")
    admin.execute(f"CREATE TABLE {p.other}.t (x UInt32) ENGINE = MergeTree ORDER BY x")
    admin.execute(f"INSERT INTO {p.other}.t (x) VALUES", [(7,)])
    try:
        yield p
    finally:
        admin.execute(f"DROP TABLE IF EXISTS {p.table}")
        admin.execute(f"DROP DATABASE IF EXISTS {p.other}")


def http_status(place: Place, name: str, password: str, sql: str, source: str | None = None):
    conn = http.client.HTTPConnection(
        place.settings.clickhouse_host,
        HTTP_PORT,
        timeout=10,
        source_address=(source, 0) if source else None,
    )
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    conn.request(
        "POST",
        "/?" + urllib.parse.urlencode({"query": sql}),
        headers={"Authorization": f"Basic {token}"},
    )
    resp = conn.getresponse()
    return resp.status, resp.read().decode()


# ----------------------------------------------------------------------------- authentication


@pytest.mark.parametrize("role", list(CLICKHOUSE_USERS))
def test_every_user_is_refused_with_a_wrong_or_no_password(place: Place, role: str) -> None:
    name, password = user(role)
    assert client(place, role).execute("SELECT 1") == [(1,)]
    s = place.settings
    for wrong in (password[:-1], ""):
        ch = Client(
            host=s.clickhouse_host, port=s.clickhouse_port, user=name, password=wrong,
            database=place.db,
        )  # fmt: skip
        with pytest.raises(ClickHouseError) as err:
            ch.execute("SELECT 1")
        assert err.value.code in (WRONG_PASSWORD, 194), str(err.value)[:200]  # 194: required


def test_a_user_is_refused_from_an_address_not_in_its_networks(place: Place) -> None:
    # 127.0.0.2 is a loopback address of Linux too, but not the 127.0.0.1 users.xml lists:
    # the cheapest "other host" there is. The right password, refused for its address.
    name, password = user("reader")
    status, body = http_status(place, name, password, "SELECT 1", source="127.0.0.2")
    assert status != 200 and f"Code: {IP_ADDRESS_NOT_ALLOWED}" in body, body[:300]
    assert http_status(place, name, password, "SELECT 1") == (200, "1\n")


# ----------------------------------------------------------------------------- readonly users


@pytest.mark.parametrize("role", ["reader", "dashboards"])
def test_readonly_users_read_their_database_and_change_nothing(place: Place, role: str) -> None:
    ch = client(place, role)
    assert ch.execute(f"SELECT count() FROM {place.table}") == [(0,)]
    # per-query settings are allowed (readonly 2): clickhouse_driver and Grafana send them
    assert ch.execute("SELECT 1", settings={"max_block_size": 1000}) == [(1,)]
    refused(READONLY, ch, f"INSERT INTO {place.table} (x) VALUES", [(1,)])
    refused(READONLY, ch, f"ALTER TABLE {place.table} ADD COLUMN y UInt8")
    refused(READONLY, ch, f"ALTER TABLE {place.table} DELETE WHERE x = 1")
    refused(READONLY, ch, f"DROP TABLE {place.table}")
    refused(READONLY, ch, f"TRUNCATE TABLE {place.table}")
    refused(READONLY, ch, f"CREATE TABLE {place.db}.nope (x UInt32) ENGINE = Memory")
    refused(READONLY, ch, "CREATE DATABASE nope")
    refused(READONLY, ch, "SET readonly = 0")
    # readonly 2 ignores a readonly sent with the query: still refused
    refused(READONLY, ch, f"INSERT INTO {place.table} (x) VALUES", [(1,)], settings={"readonly": 0})
    refused(DATABASE_ACCESS_DENIED, ch, f"SELECT count() FROM {place.other}.t")
    assert connect(place.settings, role="migrate").execute(
        f"SELECT count() FROM {place.table}"
    ) == [(0,)]


# ----------------------------------------------------------------------------- writers


@pytest.mark.parametrize("role", ["loader", "close", "keys"])
def test_writers_insert_and_select_in_their_database_only_without_ddl(
    place: Place, role: str
) -> None:
    ch = client(place, role)
    ch.execute(f"INSERT INTO {place.table} (x) VALUES", [(1,), (2,)])
    assert ch.execute(f"SELECT sum(x) FROM {place.table}") == [(3,)]
    for sql in (
        f"CREATE TABLE {place.db}.nope (x UInt32) ENGINE = Memory",
        f"ALTER TABLE {place.table} ADD COLUMN y UInt8",
        f"ALTER TABLE {place.table} DELETE WHERE x = 1",
        f"DROP TABLE {place.table}",
        f"TRUNCATE TABLE {place.table}",
        "SET allow_ddl = 1",
    ):
        refused(QUERY_IS_PROHIBITED, ch, sql)
    refused(DATABASE_ACCESS_DENIED, ch, f"SELECT count() FROM {place.other}.t")
    refused(DATABASE_ACCESS_DENIED, ch, f"INSERT INTO {place.other}.t (x) VALUES", [(1,)])
    with pytest.raises(EOFError):  # the server closes the session of a database not listed
        client(place, role, database=place.other).execute("SELECT 1")
    connect(place.settings, role="migrate").execute(f"TRUNCATE TABLE {place.table}")


def test_the_loaders_http_client_authenticates_and_is_held_to_its_database(place: Place) -> None:
    from connectors.loader import DataError, Unavailable

    name, password = user("loader")
    s = place.settings
    http_client = ClickHouseHttp(s.clickhouse_host, HTTP_PORT, name, password)
    http_client.insert(place.db, place.table.split(".")[1], ["x"], [b'{"x": 5}'])
    migrate_ch = connect(s, role="migrate")
    assert migrate_ch.execute(f"SELECT x FROM {place.table}") == [(5,)]
    with pytest.raises(Unavailable, match=f"Code: {DATABASE_ACCESS_DENIED}"):
        http_client.insert(place.other, "t", ["x"], [b'{"x": 5}'])
    wrong = ClickHouseHttp(s.clickhouse_host, HTTP_PORT, name, password + "x")
    with pytest.raises(Unavailable, match=f"Code: {WRONG_PASSWORD}"):
        wrong.insert(place.db, place.table.split(".")[1], ["x"], [b'{"x": 6}'])
    assert not issubclass(Unavailable, DataError)  # an auth failure is retried, never dropped
    migrate_ch.execute(f"TRUNCATE TABLE {place.table}")


def test_allow_ddl_is_lifted_by_a_per_query_setting_on_18_16(place: Place) -> None:
    """The limit docs/decisions/0018 states: `allow_ddl` 0 refuses `SET allow_ddl = 1`, but
    the same setting sent with a query (native protocol or an HTTP parameter) is applied, so
    holding the loader's password is enough for DDL in its own databases; allow_databases
    still holds. If this test fails, the server now enforces allow_ddl: update 0018."""
    ch = client(place, "loader")
    t = f"{place.db}.priv_ddl_{uuid.uuid4().hex[:8]}"
    try:
        ch.execute(f"CREATE TABLE {t} (x UInt32) ENGINE = Memory", settings={"allow_ddl": 1})
        assert connect(place.settings, role="migrate").execute(f"EXISTS TABLE {t}") == [(1,)]
        refused(
            DATABASE_ACCESS_DENIED, ch, f"DROP TABLE {place.other}.t", settings={"allow_ddl": 1}
        )
    finally:
        connect(place.settings, role="migrate").execute(f"DROP TABLE IF EXISTS {t}")


# ----------------------------------------------------------------------------- migrations


def test_migrate_does_ddl_in_any_database_and_the_others_cannot_create_one(place: Place) -> None:
    ch = connect(place.settings, role="migrate")
    db = f"priv_m_{uuid.uuid4().hex[:8]}"
    try:
        ch.execute(f"CREATE DATABASE {db}")
        ch.execute(f"CREATE TABLE {db}.t (x UInt32) ENGINE = MergeTree ORDER BY x")
        ch.execute(f"ALTER TABLE {db}.t ADD COLUMN y UInt8")
        assert [c[0] for c in ch.execute(f"DESCRIBE TABLE {db}.t")] == ["x", "y"]
        ch.execute(f"DROP TABLE {db}.t")
    finally:
        ch.execute(f"DROP DATABASE IF EXISTS {db}")
    refused(QUERY_IS_PROHIBITED, client(place, "loader"), "CREATE DATABASE nope")
    refused(READONLY, client(place, "reader"), "CREATE DATABASE nope")


# ----------------------------------------------------------------------------- API keys


def test_keys_are_written_by_the_keys_user_and_read_by_the_apis_reader(place: Place) -> None:
    """`meterflow keys` writes api_keys as meterflow_keys; `meterflow serve` reads it as
    meterflow_reader, which cannot add or change a key (docs/decisions/0020-http-api.md)."""
    from datetime import UTC, datetime

    from connectors import api_keys as key_table
    from meterflow.api_keys import ApiKey, Scope, new_key

    db, k = place.db, new_key()
    key = ApiKey(
        k.key_id,
        k.key_hash,
        Scope.CUSTOMER,
        "cust-priv",
        "priv",
        datetime.now(UTC).replace(microsecond=0),
    )
    try:
        key_table.insert_key(client(place, "keys"), db, key)
        reader = client(place, "reader")
        assert key_table.key_by_id(reader, db, k.key_id) == key
        with pytest.raises(ClickHouseError) as err:
            key_table.insert_key(reader, db, key)
        assert err.value.code == READONLY
        with pytest.raises(ClickHouseError) as err:
            key_table.revoke_key(reader, db, k.key_id, datetime.now(UTC))
        assert err.value.code == READONLY
        assert key_table.revoke_key(client(place, "keys"), db, k.key_id, datetime.now(UTC))
        assert key_table.key_by_id(reader, db, k.key_id).revoked
    finally:
        connect(place.settings, role="migrate").execute(
            f"ALTER TABLE {db}.api_keys DELETE WHERE key_id = %(k)s", {"k": k.key_id}
        )
