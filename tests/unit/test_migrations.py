"""Migration files are well-formed and their DDL runs on the modern ClickHouse engine (chdb).

The same statements run on Debian's 18.16 server in the integration tests, so the DDL is
checked against both ends of the ClickHouse range we support.
"""

import pytest

from connectors.clickhouse import migrations


def test_migrations_are_numbered_and_unique():
    found = migrations()
    assert found, "no migrations found in connectors/migrations"
    versions = [m.version for m in found]
    assert versions == sorted(versions)
    assert versions[0] == 1


def test_statements_substitute_database_and_drop_comments():
    stmts = migrations()[0].statements("somedb")
    assert stmts and all("{db}" not in s and "--" not in s for s in stmts)
    assert all("somedb." in st for st in stmts)


@pytest.fixture(scope="module")
def chdb_session(tmp_path_factory):
    from chdb import session

    s = session.Session(str(tmp_path_factory.mktemp("chdb")))
    yield s
    s.close()


def test_ddl_and_final_read_on_modern_engine(chdb_session):
    s = chdb_session
    s.query("CREATE DATABASE IF NOT EXISTS mf")
    for mig in migrations():
        for stmt in mig.statements("mf"):
            s.query(stmt)
    row = "('c1','calls',1,'{{}}','2026-01-01 00:00:00','2026-01-01 00:01:00',{n},{v},{rev},now())"
    # the same window written twice (a replay) and once more with a newer revision
    for n, v, rev in ((2, "7.5", 1), (2, "7.5", 1), (3, "9.25", 2)):
        s.query(f"INSERT INTO mf.usage_windows VALUES {row.format(n=n, v=v, rev=rev)}")
    out = (
        s.query("SELECT event_count, quantity, revision FROM mf.usage_windows FINAL", "CSV")
        .bytes()
        .decode()
    )
    assert out.strip() == "3,9.25,2"
