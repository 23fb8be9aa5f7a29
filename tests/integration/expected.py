"""Expected results computed from a scenario's ground truth with plain Python.

This restates schemas/meters/scenario.yaml by hand on purpose: it must not share code with the
pipeline (meterflow.meters / decoding / aggregation), or a bug there would be expected here too.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from meterflow.events import UsageEvent

TWELVE = Decimal("0.000000000001")


def _minute(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(second=0, microsecond=0)


def _hour(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _dims(d: dict[str, str]) -> str:
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


def expected_windows(accepted: list[UsageEvent]) -> dict[tuple, tuple[int, Decimal]]:
    """(customer, meter, version, dimensions, window_start, window_end) -> (events, quantity)."""
    groups: dict[tuple, list] = defaultdict(list)
    kinds: dict[str, str] = {}

    def add(e, meter, version, kind, dims, window, item):
        start = (_minute if window == "minute" else _hour)(e.timestamp)
        end = start + (timedelta(minutes=1) if window == "minute" else timedelta(hours=1))
        groups[(e.customer_id, meter, version, _dims(dims), start, end)].append(item)
        kinds[meter] = kind

    for e in accepted:
        p = e.properties
        if e.event_name == "api_call":
            if p["endpoint"] != "/health":
                add(e, "calls", 3, "count", {"region": p["region"]}, "minute", None)
            add(e, "active_users", 1, "unique", {}, "hour", p["user_id"])
        elif e.event_name == "llm_tokens":
            add(e, "tokens", 1, "sum", {"model": p["model"]}, "minute", e.value)
            weight = Decimal(1) if p["model"] == "small" else Decimal("4.5")
            add(e, "tokens_weighted", 2, "sum", {}, "hour", e.value * weight)
        elif e.event_name == "gpu":
            g = Decimal(p["gpus"])
            add(e, "gpu_max", 1, "max", {}, "minute", g)
            add(e, "gpu_min", 1, "min", {}, "minute", g)
            if p["region"] == "eu":
                add(e, "gpu_avg", 1, "avg", {}, "minute", g)
            # LATEST: greatest event time, ties broken by the greatest event_id
            add(
                e,
                "gpu_latest",
                1,
                "latest",
                {"region": p["region"]},
                "minute",
                (e.timestamp, e.event_id, g),
            )

    out = {}
    for key, items in groups.items():
        kind = kinds[key[1]]
        if kind == "count":
            q = Decimal(len(items))
        elif kind == "unique":
            q = Decimal(len(set(items)))
        elif kind == "sum":
            q = sum(items, Decimal(0))
        elif kind == "max":
            q = max(items)
        elif kind == "min":
            q = min(items)
        elif kind == "avg":
            q = (sum(items, Decimal(0)) / len(items)).quantize(TWELVE, rounding=ROUND_HALF_EVEN)
        else:
            q = max(items)[2]
        out[key] = (len(items), q)
    return out


def actual_windows(rows: list[tuple]) -> dict[tuple, tuple[int, Decimal]]:
    """rows: customer, meter, version, dimensions, window_start, window_end, count, quantity."""
    return {
        (c, m, v, d, ws.replace(tzinfo=UTC), we.replace(tzinfo=UTC)): (n, q)
        for c, m, v, d, ws, we, n, q in rows
    }


WINDOWS_SQL = (
    "SELECT customer_id, meter, meter_version, dimensions, window_start, window_end, "
    "event_count, quantity FROM {db}.usage_windows FINAL"
)


def window_diff(actual: dict, expected: dict, limit: int = 8) -> str:
    missing = [(k, expected[k]) for k in expected if k not in actual][:limit]
    extra = [(k, actual[k]) for k in actual if k not in expected][:limit]
    wrong = [
        (k, actual[k], expected[k]) for k in expected if k in actual and actual[k] != expected[k]
    ][:limit]
    return f"missing {missing}; unexpected {extra}; wrong (actual, expected) {wrong}"
