"""One known set of events through Kafka, the registry, the Flink job and ClickHouse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from connectors.clickhouse import connect, read_windows
from connectors.producer import produce_events
from meterflow.events import UsageEvent
from meterflow.settings import REPO_ROOT

METERS = str(REPO_ROOT / "tests" / "integration" / "data" / "skeleton_meters.yaml")


def _base() -> datetime:
    # a whole minute safely in the past, so nothing depends on wall-clock timing
    return datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)


def _events(base: datetime) -> list[UsageEvent]:
    def ev(i: int, cust: str, name: str, offset_ms: int, value: str | None) -> UsageEvent:
        return UsageEvent(
            event_id=f"evt-{i}",
            event_name=name,
            customer_id=cust,
            timestamp=base + timedelta(milliseconds=offset_ms),
            value=None if value is None else Decimal(value),
            properties={"region": "eu"},
        )

    return [
        ev(1, "c-a", "api_call", 5_000, None),
        ev(4, "c-a", "llm_tokens", 10_000, "100.5"),
        ev(5, "c-a", "llm_tokens", 20_000, "0.25"),
        ev(2, "c-a", "api_call", 40_000, None),
        ev(6, "c-b", "llm_tokens", 61_000, "7"),
        ev(3, "c-a", "api_call", 65_000, None),
        ev(7, "c-b", "llm_tokens", 119_999, "3"),
        ev(8, "c-b", "api_call", 120_000, None),  # exactly on a boundary: next window
    ]


def _as_tuples(windows):
    return [
        (w.customer_id, w.meter, w.window_start, w.window_end, w.event_count, w.quantity)
        for w in windows
    ]


def test_known_events_become_exact_usage_rows_and_rewrites_do_not_double_count(scratch):
    s = scratch.settings
    base = _base()
    m = timedelta(minutes=1)
    assert produce_events(s, _events(base)) == 8

    scratch.run_job("--meters", METERS)
    ch = connect(s, s.clickhouse_database, role="reader")
    expected = [
        ("c-a", "api_call", base, base + m, 2, Decimal(2)),
        ("c-a", "api_call", base + m, base + 2 * m, 1, Decimal(1)),
        ("c-a", "llm_tokens", base, base + m, 2, Decimal("100.75")),
        ("c-b", "api_call", base + 2 * m, base + 3 * m, 1, Decimal(1)),
        ("c-b", "llm_tokens", base + m, base + 2 * m, 2, Decimal(10)),
    ]
    assert _as_tuples(read_windows(ch, s.clickhouse_database)) == expected

    # Replay the whole topic with a fresh consumer group: every window is written again.
    second_run_start = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    scratch.run_job("--meters", METERS, group_id=f"meterflow-metering-it-{scratch.run_id}-replay")
    assert _as_tuples(read_windows(ch, s.clickhouse_database)) == expected
    rewritten = ch.execute(
        f"SELECT count(), min(written_at) FROM {s.clickhouse_database}.usage_windows FINAL"
    )[0]
    assert rewritten[0] == len(expected)
    assert rewritten[1] >= second_run_start, "the replay did not rewrite the windows"
    events = ch.execute(
        f"SELECT count(), uniqExact(event_id) FROM {s.clickhouse_database}.events FINAL"
    )
    assert events == [(8, 8)]
