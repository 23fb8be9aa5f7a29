"""Stage 4: every meter's projection of an event and its tumbling windows.

One row per (event, meter selecting it), made with UNNEST of a per-event array: a single flow
after the one Deduplicate, where a UNION ALL of per-meter projections made the planner copy the
dedup into every branch (decision 0005). Windows are the legacy GROUP BY TUMBLE: with
`table.exec.emit.allow-lateness` they re-fire for late-but-allowed events, an update stream
whose newest row per window has the highest revision (= event count, decision 0004).
"""

from __future__ import annotations

from collections.abc import Sequence

from jobs.streaming.sql import interval, literal
from meterflow.meters import Aggregation, Meter

_ROW_TYPE = (
    "ROW<meter STRING, meter_version INT, window_s INT, dims STRING, q DECIMAL(38, 12), "
    "u STRING, l STRING>"
)


def _meter_row(m: Meter, i: int) -> str:
    q = f"m{i}_q" if m.aggregation.needs_quantity else "CAST(NULL AS DECIMAL(38, 12))"
    u = f"m{i}_u" if m.aggregation is Aggregation.UNIQUE_COUNT else "CAST(NULL AS STRING)"
    lk = f"m{i}_l" if m.aggregation is Aggregation.LATEST else "CAST(NULL AS STRING)"
    return (
        f"CAST(ROW({literal(m.id)}, {m.version}, {m.window.seconds}, m{i}_d, {q}, {u}, {lk}) "
        f"AS {_ROW_TYPE})"
    )


_NO_METER = (
    "CAST(ROW(CAST(NULL AS STRING), 0, 0, CAST(NULL AS STRING), CAST(NULL AS DECIMAL(38, 12)), "
    f"CAST(NULL AS STRING), CAST(NULL AS STRING)) AS {_ROW_TYPE})"
)


def exploded_sql(meters: Sequence[Meter], source: str) -> str:
    """(event, meter) rows of the events each meter selects (m{i}_d is NULL otherwise). Only
    the meters of the event's name are candidates, so the array built per event holds those
    alone (building and unnesting rows is the cost here, not the filter)."""
    by_name: dict[str, list[str]] = {}
    for i, m in enumerate(meters):
        by_name.setdefault(m.event_name, []).append(_meter_row(m, i))
    whens = " ".join(
        f"WHEN {literal(name)} THEN ARRAY[{', '.join(rows)}]" for name, rows in by_name.items()
    )
    return (
        "SELECT e.customer_id, e.ts, x.meter, x.meter_version, x.window_s, x.dims, x.q, x.u, x.l "
        f"FROM {source} AS e CROSS JOIN UNNEST(CASE e.event_name {whens} "
        f"ELSE ARRAY[{_NO_METER}] END) "
        "AS x(meter, meter_version, window_s, dims, q, u, l) WHERE x.dims IS NOT NULL"
    )


def quantity_sql(aggregation: Aggregation) -> str:
    """The window's quantity from its rows, as meterflow.aggregation.window_quantity."""
    match aggregation:
        case Aggregation.COUNT:
            return "CAST(COUNT(*) AS DECIMAL(38, 12))"
        case Aggregation.UNIQUE_COUNT:
            return "CAST(COUNT(DISTINCT u) AS DECIMAL(38, 12))"
        case Aggregation.SUM:
            return "SUM(q)"
        case Aggregation.MIN:
            return "MIN(q)"
        case Aggregation.MAX:
            return "MAX(q)"
        case Aggregation.AVG:
            return "MF_DIV(SUM(q), COUNT(*))"  # one rounding, half-even (Java: DivideHalfEven)
        case Aggregation.LATEST:
            return "CAST(SUBSTRING(MAX(l) FROM POSITION(CHR(0) IN MAX(l)) + 1) AS DECIMAL(38, 12))"
    raise ValueError(f"unknown aggregation {aggregation!r}")


def windows_sql(meters: Sequence[Meter], window_s: int, source: str) -> str:
    """Usage windows of the meters of one window size, in usage_windows' column names."""
    mine = [m for m in meters if m.window.seconds == window_s]
    whens = " ".join(f"WHEN {literal(m.id)} THEN {quantity_sql(m.aggregation)}" for m in mine)
    size = interval(window_s)
    return (
        "SELECT customer_id, meter, meter_version, dims AS dimensions, "
        f"DATE_FORMAT(TUMBLE_START(ts, {size}), 'yyyy-MM-dd HH:mm:ss') AS window_start, "
        f"DATE_FORMAT(TUMBLE_END(ts, {size}), 'yyyy-MM-dd HH:mm:ss') AS window_end, "
        "COUNT(*) AS event_count, "
        f"CAST(CASE meter {whens} END AS DECIMAL(38, 12)) AS quantity, "
        "COUNT(*) AS revision "
        f"FROM {source} WHERE window_s = {window_s} "
        f"GROUP BY customer_id, meter, meter_version, dims, TUMBLE(ts, {size})"
    )
