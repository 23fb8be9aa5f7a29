"""Expected results computed from a scenario's ground truth with plain Python.

This restates schemas/meters/scenario.yaml by hand on purpose: it must not share code with the
pipeline (meterflow.meters / decoding / aggregation), or a bug there would be expected here too.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal

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


# ------------------------------------------------------------------------------------ billing
# schemas/prices/scenario.yaml restated by hand, for the same reason as the meters above.

CENT = Decimal("0.01")


def _cents(x: Decimal) -> Decimal:
    return x.quantize(CENT, rounding=ROUND_HALF_UP)


def scenario_period_quantities(events: list[UsageEvent]) -> dict[str, tuple[int, Decimal]]:
    """meter -> (events, period quantity) over one customer's events of one period."""
    calls, users, tokens, weighted, gpus, eu, latest = 0, set(), [], [], [], [], []
    n_users = n_gpu = 0
    for e in events:
        p = e.properties
        if e.event_name == "api_call":
            calls += p["endpoint"] != "/health"
            users.add(p["user_id"])
            n_users += 1
        elif e.event_name == "llm_tokens":
            tokens.append(e.value)
            weighted.append(e.value * (Decimal(1) if p["model"] == "small" else Decimal("4.5")))
        elif e.event_name == "gpu":
            g = Decimal(p["gpus"])
            gpus.append(g)
            n_gpu += 1
            if p["region"] == "eu":
                eu.append(g)
            latest.append((e.timestamp, e.event_id, g))
    out: dict[str, tuple[int, Decimal]] = {}
    if calls:
        out["calls"] = (calls, Decimal(calls))
    if n_users:
        out["active_users"] = (n_users, Decimal(len(users)))
    if tokens:
        out["tokens"] = (len(tokens), sum(tokens, Decimal(0)))
        out["tokens_weighted"] = (len(weighted), sum(weighted, Decimal(0)))
    if gpus:
        out["gpu_max"] = (n_gpu, max(gpus))
        out["gpu_min"] = (n_gpu, min(gpus))
        out["gpu_latest"] = (n_gpu, max(latest)[2])
    if eu:
        avg = (sum(eu, Decimal(0)) / len(eu)).quantize(TWELVE, rounding=ROUND_HALF_EVEN)
        out["gpu_avg"] = (len(eu), avg)
    return out


def scenario_amount(plan: str, meter: str, events: list[UsageEvent]) -> Decimal:
    """Unrounded amount of one customer's period events of a meter under `plan` version 1."""
    if plan == "scenario_min" and meter == "tokens":
        # 0.1 % of each event's tokens, at least 0.50 and at most 2.00 per event
        fees = (
            min(max(e.value * Decimal("0.001"), Decimal("0.50")), Decimal("2.00"))
            for e in events
            if e.event_name == "llm_tokens"
        )
        return sum(fees, Decimal(0))
    quantities = scenario_period_quantities(events)
    return scenario_price(meter, quantities[meter][1])


def scenario_price(meter: str, q: Decimal) -> Decimal:
    """Unrounded amount of a period quantity under plan `scenario` version 1."""
    if meter == "calls":  # graduated: 50 @ 0.01 | 51-200 @ 0.008 + 1.00 | above @ 0.005 + 2.50
        amount = min(q, Decimal(50)) * Decimal("0.01")
        if q > 50:
            amount += (min(q, Decimal(200)) - 50) * Decimal("0.008") + Decimal("1.00")
        if q > 200:
            amount += (q - 200) * Decimal("0.005") + Decimal("2.50")
        return amount
    if meter == "active_users":  # 10.00 including 5 users, then 1.50 each
        return Decimal("10.00") + max(Decimal(0), q - 5) * Decimal("1.50")
    if meter == "tokens":  # volume: the whole quantity at its tier's price
        if q <= 100_000:
            return q * Decimal("0.00002")
        return q * (Decimal("0.000015") if q <= 1_000_000 else Decimal("0.00001"))
    if meter == "tokens_weighted":  # packages of 10,000 at 0.15, partial packages round up
        # (Decimal's // truncates toward zero, so ceil is spelled out)
        return (q / 10_000).to_integral_value(rounding=ROUND_CEILING) * Decimal("0.15")
    if meter == "gpu_max":  # first unit free, then 2.50
        return max(Decimal(0), q - 1) * Decimal("2.50")
    if meter == "gpu_min":
        return q * Decimal("1.25")
    if meter == "gpu_avg":
        return q * Decimal("1.75")
    if meter == "gpu_latest":  # 10 % of the value
        return q * Decimal("0.1")
    raise KeyError(meter)


# schemas/customers/scenario.yaml: cust-1 is on plan scenario_min, every other customer on scenario
SCENARIO_PLANS = {"cust-1": "scenario_min"}
# their minimums per period (a period's usage below it is topped up)
SCENARIO_MINIMUMS = {"scenario": Decimal("5.00"), "scenario_min": Decimal("100000.00")}
# quota limits of plan `scenario` version 1 (scenario_min has none); thresholds in percent
SCENARIO_QUOTAS = {"calls": Decimal(100), "gpu_max": Decimal(8)}
THRESHOLDS = (75, 90, 100)


def scenario_months(events: list[UsageEvent]) -> dict[tuple[str, datetime], list[UsageEvent]]:
    """(customer, naive UTC month start) -> its events: the calendar-month periods of
    schemas/customers/scenario.yaml."""
    periods: dict[tuple[str, datetime], list[UsageEvent]] = defaultdict(list)
    for e in events:
        month = e.timestamp.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        periods[(e.customer_id, month.replace(tzinfo=None))].append(e)
    return periods


def scenario_period_amounts(
    months: dict[tuple[str, datetime], list[UsageEvent]],
) -> dict[tuple[str, datetime, str], tuple[Decimal, int]]:
    """(customer, month, meter) -> (unrounded amount, events) of every line streamed rating
    prices (UNIQUE_COUNT's active_users is priced at close only)."""
    out = {}
    for (c, month), evs in months.items():
        for meter, (n, _q) in scenario_period_quantities(evs).items():
            if meter != "active_users":
                plan = SCENARIO_PLANS.get(c, "scenario")
                out[(c, month, meter)] = (scenario_amount(plan, meter, evs), n)
    return out


def scenario_quota_alert_ids(months: dict[tuple[str, datetime], list[UsageEvent]]) -> set[str]:
    """The id of every quota threshold the period quantities reach, as Alert.alert_id."""
    want = set()
    for (c, month), evs in months.items():
        if SCENARIO_PLANS.get(c, "scenario") != "scenario":
            continue
        for meter, (_, q) in scenario_period_quantities(evs).items():
            limit = SCENARIO_QUOTAS.get(meter)
            for pct in THRESHOLDS if limit else ():
                if q * 100 >= limit * pct:
                    want.add(f"{c}/{meter}/{month:%Y%m%dT%H%M}/{pct}")
    return want


def id_digest(ids) -> str:
    total = sum(int.from_bytes(hashlib.md5(i.encode()).digest()[:8], "big") for i in ids)
    return f"{total % 2**64:016x}"


def scenario_invoice_lines(
    events: list[UsageEvent], minimum: Decimal, plan: str = "scenario"
) -> list[tuple[str, str, Decimal, Decimal, int]]:
    """(kind, meter, quantity, amount, events) of one period's usage and true-up lines."""
    quantities = scenario_period_quantities(events)
    lines = []
    charged = ("calls", "active_users", "tokens", "tokens_weighted", "gpu_max", "gpu_min")
    for meter in sorted((*charged, "gpu_avg", "gpu_latest")):
        if meter in quantities:
            n, q = quantities[meter]
            lines.append(("usage", meter, q, _cents(scenario_amount(plan, meter, events)), n))
        elif meter == "active_users":  # the only charge that costs something at zero usage
            lines.append(("usage", meter, Decimal(0), Decimal("10.00"), 0))
    usage = sum((ln[3] for ln in lines), Decimal(0))
    if usage < minimum:
        lines.append(("minimum", "", Decimal(0), minimum - usage, 0))
    return lines
