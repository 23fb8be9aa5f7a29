"""Every customer id, meter id, dimension, invoice id or date the operator CLI passes to a query
is data: rows whose ids *are* SQL injection strings are found by exactly those strings and
nothing else, strings that match nothing find nothing, and no table changes."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from meterflow.settings import REPO_ROOT

pytestmark = pytest.mark.integration

METERS = str(REPO_ROOT / "schemas" / "meters" / "default.yaml")
INJECTIONS = (
    "x' OR '1'='1",
    "x\\' OR 1=1 --",
    "'; DROP TABLE {db}.events; --",
    "cust-0' --",
    "%(c)s",
    "{db}",
    "a\") UNION ALL SELECT name, '', 0 FROM system.tables --",
    "' OR customer_id != '",
    "ö' OR ''='\u2028",
    "*/ OR 1=1 /*",
)
TABLES = ("events", "usage_windows", "invoices", "alerts")


def _cli(scratch, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "meterflow.cli", *args],
        cwd=REPO_ROOT, env=scratch.env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _counts(scratch) -> dict[str, int]:
    return {t: scratch.query(f"SELECT count() FROM {{db}}.{t}")[0][0] for t in TABLES}


@pytest.fixture(scope="module")
def seeded(module_scratch):
    """One event, one usage window (event_count = its index + 1) and one final invoice per
    customer — the injection strings and an ordinary one — plus windows of cust-0 whose region
    is each injection string."""
    s = module_scratch
    ch = s.ch()
    db = s.settings.clickhouse_database
    minute = datetime.now(UTC).replace(second=0, microsecond=0, tzinfo=None) - timedelta(hours=1)
    customers = ("cust-0", *INJECTIONS)
    ch.execute(
        f"INSERT INTO {db}.events (customer_id, event_id, event_name, timestamp_ms, value, "
        "properties, source, schema_id, kafka_topic, kafka_partition, kafka_offset) VALUES",
        [
            (c, f"e-{i}", "api_call", int(minute.replace(tzinfo=UTC).timestamp() * 1000), None,
             "{}", "", 1, "t", 0, i)
            for i, c in enumerate(customers)
        ],
    )  # fmt: skip
    windows = [
        (c, "api_calls", 1, '{"region":"eu"}', minute, minute + timedelta(minutes=1), i + 1,
         Decimal(i + 1), 1)
        for i, c in enumerate(customers)
    ] + [
        ("cust-0", "api_calls", 1, f'{{"region":{_json(inj)}}}', minute,
         minute + timedelta(minutes=1), 100 + i, Decimal(100 + i), 1)
        for i, inj in enumerate(INJECTIONS)
    ]  # fmt: skip
    ch.execute(
        f"INSERT INTO {db}.usage_windows (customer_id, meter, meter_version, dimensions, "
        "window_start, window_end, event_count, quantity, revision) VALUES",
        windows,
    )
    start = minute.replace(day=1, hour=0, minute=0) - timedelta(days=40)
    ch.execute(
        f"INSERT INTO {db}.invoices (invoice_id, customer_id, subscription_id, plan, "
        "price_version, currency, period_start, period_end, subtotal, credits, total, "
        "line_count, closed_at) VALUES",
        [
            (f"INV-{i}", c, "sub", "plan", 1, "USD", start, start + timedelta(days=30),
             Decimal(i), Decimal(0), Decimal(i), 0, minute)
            for i, c in enumerate(customers)
        ],
    )  # fmt: skip
    return s, customers, _counts(s)


def _json(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _usage(scratch, *args: str) -> list[list[str]]:
    proc = _cli(scratch, "usage", "--meters", METERS, "--csv", *args)
    assert proc.returncode == 0, proc.stderr
    return list(csv.reader(io.StringIO(proc.stdout)))[1:]


@pytest.mark.parametrize("inj", INJECTIONS)
def test_a_customer_id_is_matched_as_written(seeded, inj):
    s, customers, before = seeded
    rows = _usage(s, "--customer", inj)
    assert [(r[0], r[5]) for r in rows] == [(inj, str(customers.index(inj) + 1))]
    proc = _cli(s, "invoices", "list", "--customer", inj)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "1 invoices"
    assert f"INV-{customers.index(inj)}  {inj}  " in proc.stdout
    assert _counts(s) == before


@pytest.mark.parametrize("inj", INJECTIONS)
def test_a_dimension_value_is_matched_as_written(seeded, inj):
    s, _, before = seeded
    rows = _usage(s, "--customer", "cust-0", "--dimension", f"region={inj}")
    assert [r[5] for r in rows] == [str(100 + INJECTIONS.index(inj))]
    assert _counts(s) == before


@pytest.mark.parametrize("inj", INJECTIONS)
def test_strings_that_match_nothing_find_nothing(seeded, inj):
    s, _, before = seeded
    assert _usage(s, "--customer", "cust-0", "--dimension", f"{inj}=eu") == []
    for args in (
        ("alerts", "list", "--customer", inj),
        ("invoices", "list", "--customer", inj + "x"),
    ):
        proc = _cli(s, *args)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines() == [f"0 {args[0]}"]
    assert _counts(s) == before


@pytest.mark.parametrize("inj", INJECTIONS)
def test_ids_and_dates_that_are_not_ids_or_dates_are_one_clear_error(seeded, inj):
    s, _, before = seeded
    for args, message in (
        (("usage", "--customer", inj + "x"), "unknown customer"),
        (("usage", "--meter", inj), "unknown meter"),
        (("usage", "--from", inj), "is not a date"),
        (("invoices", "show", inj), "no final invoice"),
    ):
        proc = _cli(s, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr
    assert _counts(s) == before
