"""ClickHouse access: connection, versioned migrations, usage-window writes and reads.

All SQL here stays within what ClickHouse 18.16 (Debian's server) and current ClickHouse share.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources

from clickhouse_driver import Client

from meterflow.settings import Settings

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def connect(settings: Settings, database: str | None = "default", *, role: str) -> Client:
    """A client acting as the ClickHouse user of `role` (meterflow.settings.CLICKHOUSE_USERS).
    A user limited to some databases is refused a session in any other, "default" included:
    pass the database it works in."""
    user, password = settings.clickhouse_credentials(role)
    return Client(
        host=settings.clickhouse_host,
        port=settings.clickhouse_port,
        database=database or "default",
        user=user,
        password=password,
        settings={"use_numpy": False},
    )


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self, db: str) -> list[str]:
        body = self.sql.replace("{db}", db)
        lines = [ln for ln in body.splitlines() if not ln.lstrip().startswith("--")]
        return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def migrations() -> list[Migration]:
    found = []
    for entry in resources.files("connectors.migrations").iterdir():
        m = _MIGRATION_NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), entry.name, entry.read_text()))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in connectors/migrations: {versions}")
    return found


def migrate(settings: Settings) -> list[str]:
    """Apply pending migrations in order; return the names applied. Safe to run concurrently-ish
    from one operator at a time (the DDL itself is IF NOT EXISTS)."""
    db = settings.clickhouse_database
    ch = connect(settings, role="migrate")
    ch.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
    ch.execute(
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
        "(version UInt32, name String, applied_at DateTime) ENGINE = MergeTree ORDER BY version"
    )
    done = {row[0] for row in ch.execute(f"SELECT version FROM {db}.schema_migrations")}
    applied = []
    for mig in migrations():
        if mig.version in done:
            continue
        for stmt in mig.statements(db):
            ch.execute(stmt)
        ch.execute(
            f"INSERT INTO {db}.schema_migrations (version, name, applied_at) VALUES",
            [(mig.version, mig.name, datetime.now(UTC).replace(tzinfo=None))],
        )
        applied.append(mig.name)
    return applied


def has_events(ch: Client, db: str, customer_id: str) -> bool:
    """Whether any accepted event of `customer_id` is stored."""
    q = f"SELECT count() FROM {db}.events WHERE customer_id = %(c)s"
    return ch.execute(q, {"c": customer_id})[0][0] > 0


@dataclass(frozen=True)
class UsageWindow:
    customer_id: str
    meter: str
    meter_version: int
    dimensions: str
    window_start: datetime
    window_end: datetime
    event_count: int
    quantity: Decimal
    revision: int


def read_windows(
    ch: Client,
    db: str,
    customer_id: str | None = None,
    meter: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    dimensions: dict[str, str] | None = None,
    *,
    window_s: int | None = None,
    limit: int | None = None,
) -> list[UsageWindow]:
    """Current usage: one row per window (its newest revision), in key order, optionally for
    one customer / meter / dimension values / window length in seconds and windows starting in
    [start, end); at most `limit` rows (the HTTP API pages with it)."""
    cond, params = [], {}
    if customer_id:
        cond.append("customer_id = %(c)s")
        params["c"] = customer_id
    if meter:
        cond.append("meter = %(m)s")
        params["m"] = meter
    if start:
        cond.append("window_start >= %(s)s")
        params["s"] = start.astimezone(UTC).replace(tzinfo=None)
    if end:
        cond.append("window_start < %(e)s")
        params["e"] = end.astimezone(UTC).replace(tzinfo=None)
    for i, (k, v) in enumerate(sorted((dimensions or {}).items())):
        # dimensions are flat JSON with sorted keys (decoding.dimensions_json)
        cond.append(f"visitParamExtractString(dimensions, %(dk{i})s) = %(dv{i})s")
        params[f"dk{i}"], params[f"dv{i}"] = k, v
    if window_s is not None:
        cond.append("toUInt32(window_end) - toUInt32(window_start) = %(ws)s")
        params["ws"] = int(window_s)
    where = f"WHERE {' AND '.join(cond)}" if cond else ""
    limit_sql = ""
    if limit is not None:
        limit_sql = " LIMIT %(lim)s"
        params["lim"] = int(limit)
    rows = ch.execute(
        "SELECT customer_id, meter, meter_version, dimensions, window_start, window_end, "
        f"event_count, quantity, revision FROM {db}.usage_windows FINAL {where} "
        "ORDER BY customer_id, meter, meter_version, dimensions, window_start" + limit_sql,
        params,
    )
    return [
        UsageWindow(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4].replace(tzinfo=UTC),
            r[5].replace(tzinfo=UTC),
            r[6],
            r[7],
            r[8],
        )
        for r in rows
    ]
