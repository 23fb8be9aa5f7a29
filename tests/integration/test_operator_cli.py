"""The operator CLI on the real stack: usage as a table or CSV with filters, one-line errors
with exit status 2, and replay of a Kafka time range."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from connectors.producer import produce_raw
from meterflow.settings import REPO_ROOT
from meterflow.testing.scenario import ScenarioConfig, generate

METERS = str(REPO_ROOT / "schemas" / "meters" / "scenario.yaml")


def _cli(scratch, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "meterflow.cli", *args],
        cwd=REPO_ROOT,
        env=scratch.env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def replayed(module_scratch):
    """Half of a stream re-metered by `meterflow replay` over its Kafka time range."""
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    cfg = ScenarioConfig(seed=31, start=start, events=400, duplicate_rate=0, malformed_per_kind=0)
    sc = generate(cfg)
    produce_raw(module_scratch.settings, [(r.key, r.value, r.timestamp_ms) for r in sc.records])
    # records carry event time + 1 s as their Kafka timestamp
    cut = start + cfg.span / 2
    lo, hi = start, cut
    proc = _cli(
        module_scratch, "replay", "--from", lo.isoformat(), "--to", hi.isoformat(),
        "--meters", METERS,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = {e.event_id for e in sc.accepted if lo <= e.timestamp + timedelta(seconds=1) < hi}
    return module_scratch, sc, expected, (lo, hi)


def test_replay_meters_exactly_the_records_of_the_time_range(replayed):
    scratch, _, expected, _ = replayed
    stored = {r[0] for r in scratch.query("SELECT event_id FROM {db}.events FINAL")}
    assert expected and stored == expected


def test_usage_filters_by_customer_meter_dimension_and_period_as_csv(replayed):
    scratch, sc, expected, (lo, hi) = replayed
    proc = _cli(
        scratch, "usage", "--meters", METERS, "--customer", "cust-1", "--meter", "calls",
        "--dimension", "region=eu", "--from", lo.isoformat(), "--to", hi.isoformat(), "--csv",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.reader(io.StringIO(proc.stdout)))
    assert rows[0][:2] == ["customer", "meter"]
    # calls: api_call events of cust-1 in region eu, endpoint not /health, per minute window
    want: dict[str, int] = {}
    for e in sc.accepted:
        p = e.properties
        if (
            e.event_id in expected
            and e.customer_id == "cust-1"
            and e.event_name == "api_call"
            and p["region"] == "eu"
            and p["endpoint"] != "/health"
        ):
            minute = e.timestamp.replace(second=0, microsecond=0).strftime("%Y-%m-%d %H:%M")
            want[minute] = want.get(minute, 0) + 1
    assert want
    assert {r[4]: int(r[5]) for r in rows[1:]} == want
    assert all(r[0] == "cust-1" and r[1] == "calls" and r[3] == '{"region":"eu"}' for r in rows[1:])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("usage", "--meter", "nope"), "unknown meter 'nope'"),
        (("usage", "--customer", "nobody"), "unknown customer 'nobody'"),
        (("usage", "--from", "2026-13-45"), "--from: '2026-13-45' is not a date"),
        (("usage", "--dimension", "region"), "expected key=value"),
        (("invoices", "show", "INV-none"), "no final invoice 'INV-none'"),
        (("replay", "--from", "2026-11-02", "--to", "2026-11-01"), "is not after"),
        (("credits", "--customer", "nobody"), "no credit grants for customer 'nobody'"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_status_2(scratch, args, message):
    proc = _cli(scratch, *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
