"""Stage 4: every meter's projection of an event and its tumbling windows.

One row per (event, meter selecting it), made with UNNEST of a per-event array: a single flow
after the one Deduplicate, where a UNION ALL of per-meter projections made the planner copy the
dedup into every branch (decision 0005). Windows are the legacy GROUP BY TUMBLE: with
`table.exec.emit.allow-lateness` they re-fire for late-but-allowed events, an update stream
whose newest row per window has the highest revision (= event count, decision 0004).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from jobs.streaming.sql import interval, literal
from meterflow.meters import Aggregation, Meter

_ROW_TYPE = (
    "ROW<meter STRING, meter_version INT, window_s INT, dims STRING, q DECIMAL(38, 12), "
    "u STRING, l STRING, f DECIMAL(38, 20)>"
)
_NULL_FEE = "CAST(NULL AS DECIMAL(38, 20))"


def _meter_row(m: Meter, i: int, fee: str | None) -> str:
    q = f"m{i}_q" if m.aggregation.needs_quantity else "CAST(NULL AS DECIMAL(38, 12))"
    u = f"m{i}_u" if m.aggregation is Aggregation.UNIQUE_COUNT else "CAST(NULL AS STRING)"
    lk = f"m{i}_l" if m.aggregation is Aggregation.LATEST else "CAST(NULL AS STRING)"
    f = _NULL_FEE if fee is None else fee.format(q=q)
    return (
        f"CAST(ROW({literal(m.id)}, {m.version}, {m.window.seconds}, m{i}_d, {q}, {u}, {lk}, {f}) "
        f"AS {_ROW_TYPE})"
    )


_NO_METER = (
    "CAST(ROW(CAST(NULL AS STRING), 0, 0, CAST(NULL AS STRING), CAST(NULL AS DECIMAL(38, 12)), "
    f"CAST(NULL AS STRING), CAST(NULL AS STRING), {_NULL_FEE}) AS {_ROW_TYPE})"
)


def exploded_sql(
    meters: Sequence[Meter], source: str, fees: Mapping[str, str] | None = None
) -> str:
    """(event, meter) rows of the events each meter selects (m{i}_d is NULL otherwise). Only
    the meters of the event's name are candidates, so the array built per event holds those
    alone (building and unnesting rows is the cost here, not the filter).

    `fees`: meter id -> the SQL of an event's fee for a percentage charge with per-event
    bounds (rating.fee_sql), `{q}` standing for the event's quantity; NULL for other meters."""
    fees = fees or {}
    by_name: dict[str, list[str]] = {}
    for i, m in enumerate(meters):
        by_name.setdefault(m.event_name, []).append(_meter_row(m, i, fees.get(m.id)))
    whens = " ".join(
        f"WHEN {literal(name)} THEN ARRAY[{', '.join(rows)}]" for name, rows in by_name.items()
    )
    return (
        "SELECT e.customer_id, e.ts, e.ts_ms, x.meter, x.meter_version, x.window_s, x.dims, "
        f"x.q, x.u, x.l, x.f FROM {source} AS e CROSS JOIN UNNEST(CASE e.event_name {whens} "
        f"ELSE ARRAY[{_NO_METER}] END) "
        "AS x(meter, meter_version, window_s, dims, q, u, l, f) WHERE x.dims IS NOT NULL"
    )


def quantity_sql(aggregation: Aggregation) -> str:
    """The window's quantity from its partials (partials_sql), as
    meterflow.aggregation.window_quantity; also a period's from the sums, minima and maxima of
    its windows' partials (combined_quantity)."""
    match aggregation:
        case Aggregation.COUNT:
            return "CAST(n AS DECIMAL(38, 12))"
        case Aggregation.UNIQUE_COUNT:
            return "CAST(uc AS DECIMAL(38, 12))"
        case Aggregation.SUM:
            return "s"
        case Aggregation.MIN:
            return "mn"
        case Aggregation.MAX:
            return "mx"
        case Aggregation.AVG:
            return "MF_DIV(s, n)"  # one rounding, half-even (Java: DivideHalfEven)
        case Aggregation.LATEST:
            return "CAST(SUBSTRING(lk FROM POSITION(CHR(0) IN lk) + 1) AS DECIMAL(38, 12))"
    raise ValueError(f"unknown aggregation {aggregation!r}")


def meter_quantity_sql(meters: Sequence[Meter]) -> str:
    """CASE meter WHEN id THEN its quantity END, over partials columns."""
    whens = " ".join(f"WHEN {literal(m.id)} THEN {quantity_sql(m.aggregation)}" for m in meters)
    return f"CAST(CASE meter {whens} END AS DECIMAL(38, 12))"


def partials_sql(meters: Sequence[Meter], window_s: int, source: str) -> str:
    """Each window's partial aggregates (meterflow.aggregation.Partials) of the meters of one
    window size: n, s, mn, mx, uc (distinct count, UNIQUE_COUNT meters only), lk, fs."""
    mine = [m for m in meters if m.window.seconds == window_s]
    uniques = [literal(m.id) for m in mine if m.aggregation is Aggregation.UNIQUE_COUNT]
    # COUNT(DISTINCT) keeps a map per window: only where a meter needs it
    uc = (
        f"CASE WHEN meter IN ({', '.join(uniques)}) THEN COUNT(DISTINCT u) END"
        if uniques
        else "CAST(NULL AS BIGINT)"
    )
    size = interval(window_s)
    return (
        "SELECT customer_id, meter, meter_version, dims, "
        f"TUMBLE_START(ts, {size}) AS ws, TUMBLE_END(ts, {size}) AS we, "
        f"COUNT(*) AS n, SUM(q) AS s, MIN(q) AS mn, MAX(q) AS mx, {uc} AS uc, MAX(l) AS lk, "
        "SUM(f) AS fs "
        f"FROM {source} WHERE window_s = {window_s} "
        f"GROUP BY customer_id, meter, meter_version, dims, TUMBLE(ts, {size})"
    )


def windows_sql(meters: Sequence[Meter], source: str) -> str:
    """Usage windows in usage_windows' column names, from partials_sql rows."""
    return (
        "SELECT customer_id, meter, meter_version, dims AS dimensions, "
        "DATE_FORMAT(ws, 'yyyy-MM-dd HH:mm:ss') AS window_start, "
        "DATE_FORMAT(we, 'yyyy-MM-dd HH:mm:ss') AS window_end, "
        f"n AS event_count, {meter_quantity_sql(meters)} AS quantity, n AS revision "
        f"FROM {source}"
    )
