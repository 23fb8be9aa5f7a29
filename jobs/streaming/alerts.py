"""Stage 6: quota alerts, as generated SQL (decision 0013).

A plan version may give a meter a quota; an alert fires when the period quantity reaches 75, 90
or 100 % of it, once per (customer, meter, period, threshold) (meterflow.alerts). The period
rows of rating are an update stream, and "the first row over a threshold" cannot be taken from
a stream that retracts, so alerts come from the append-only on-time events instead: an OVER
aggregation per (customer, meter, period), in arrival order, carries the period's running
partials, and the event at which the running quantity first reaches a threshold emits it. The
OVER state is checkpointed with the Kafka transactions, so a restart neither repeats nor loses
one.

The first crossing is read off a single OVER for the aggregations whose period quantity only
moves one way: COUNT and SUM of non-negative quantities (the running total before the event is
the total minus the event), MAX (the first event at or above the threshold) and MIN (only the
first event can be at or above it). A quota on any other meter (AVG, LATEST, SUM allowing
negatives) is refused when the job is built; UNIQUE_COUNT meters are not rated, so not alerted
(as in the Python job).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from jobs.streaming.rating import period_call
from jobs.streaming.sql import literal
from jobs.streaming.windows import quantity_sql
from meterflow.alerts import THRESHOLDS
from meterflow.meters import Aggregation, Meter
from meterflow.price_book import PriceBook
from meterflow.pricing import plain
from meterflow.rating import rateable

QUOTA_TYPE = "DECIMAL(38, 12)"
_ONE_WAY = (Aggregation.COUNT, Aggregation.SUM, Aggregation.MAX, Aggregation.MIN)


class UnsupportedQuota(ValueError):
    pass


def _quotas(book: PriceBook) -> list[tuple[str, int, str, object]]:
    return [
        (p.id, v.version, meter, quota)
        for p in book.plans.values()
        for v in p.versions
        for meter, quota in v.quotas.items()
    ]


def quota_meters(meters: Sequence[Meter], book: PriceBook) -> list[Meter]:
    """The rated meters some plan version gives a quota; raises UnsupportedQuota for a quota
    this job cannot alert on exactly."""
    with_quota = {meter for _, _, meter, _ in _quotas(book)}
    out = []
    for m in meters:
        if m.id not in with_quota or not rateable(m.aggregation):
            continue
        negative = m.quantity is not None and m.quantity.allow_negative
        if m.aggregation not in _ONE_WAY or (m.aggregation is Aggregation.SUM and negative):
            raise UnsupportedQuota(
                f"meter {m.id!r}: quota alerts on {m.aggregation.value}"
                f"{' allowing negative quantities' if negative else ''} are not supported by "
                "the JVM job yet (its period quantity can go down and up again)"
            )
        out.append(m)
    return out


def quota_sql(book: PriceBook, attribute: str) -> str:
    """CASE over (plan, price_version, meter) giving the quota's `limit` or `hard_cap`."""
    typ = QUOTA_TYPE if attribute == "limit" else "BOOLEAN"
    whens = []
    for plan_id, version, meter_id, quota in _quotas(book):
        value = getattr(quota, attribute)
        text = plain(value) if attribute == "limit" else ("TRUE" if value else "FALSE")
        whens.append(
            f"WHEN plan = {literal(plan_id)} AND price_version = {version} "
            f"AND meter = {literal(meter_id)} THEN CAST({text} AS {typ})"
        )
    if not whens:
        return f"CAST(NULL AS {typ})"
    return f"CASE {' '.join(whens)} ELSE CAST(NULL AS {typ}) END"


def quota_events_sql(meters: Sequence[Meter], book: PriceBook, table: Path, source: str) -> str:
    """The on-time (event, meter) rows of meters with a quota, with the period of their window
    (as rating assigns windows), the quota, and an arrival-time attribute to order them by."""
    ids = ", ".join(literal(m.id) for m in quota_meters(meters, book))
    windowed = (
        "SELECT customer_id, meter, q, "
        "ts_ms - MOD(ts_ms, CAST(window_s AS BIGINT) * 1000) AS ws_ms "
        f"FROM {source} WHERE meter IN ({ids})"
    )
    periods = f"SELECT *, {period_call(table, 'customer_id', 'ws_ms')} AS p FROM ({windowed})"
    flat = (
        "SELECT customer_id, meter, q, ws_ms, p.subscription_id AS subscription_id, "
        "p.period_start_ms AS period_start_ms, p.period_end_ms AS period_end_ms, "
        f"p.plan AS plan, p.price_version AS price_version FROM ({periods}) WHERE p IS NOT NULL"
    )
    return (
        f"SELECT *, {quota_sql(book, 'limit')} AS quota, {quota_sql(book, 'hard_cap')} "
        f"AS hard_cap, PROCTIME() AS arrival FROM ({flat})"
    )


def running_sql(source: str) -> str:
    """Each row with its period's running partials up to and including it (arrival order), and
    per threshold how many rows so far were themselves at or above it (MAX)."""
    at_or_above = "".join(
        f", SUM(CASE WHEN q * 100 >= quota * {t} THEN 1 ELSE 0 END) OVER w AS c{t}"
        for t in THRESHOLDS
    )
    return (
        "SELECT customer_id, meter, q, ws_ms, subscription_id, period_start_ms, period_end_ms, "
        "quota, hard_cap, COUNT(*) OVER w AS n, SUM(q) OVER w AS s, MAX(q) OVER w AS mx, "
        f"MIN(q) OVER w AS mn{at_or_above} FROM {source} WHERE quota IS NOT NULL "
        "WINDOW w AS (PARTITION BY customer_id, meter, period_start_ms ORDER BY arrival "
        "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
    )


def crossing_sql(aggregation: Aggregation, pct: str) -> tuple[str, str]:
    """(the period quantity after the row, whether the row first reaches `pct` % of quota).
    The running partials are named as a window's (running_sql), so the quantity is the
    window's formula."""
    reach = f"quota * {pct}"
    match aggregation:
        case Aggregation.COUNT:
            first = f"(n - 1) * 100 < {reach} AND n * 100 >= {reach}"
        case Aggregation.SUM:
            first = f"(s - q) * 100 < {reach} AND s * 100 >= {reach}"
        case Aggregation.MAX:
            # the first row at or above the threshold (counted per threshold in running_sql)
            count = f"CASE {pct} " + " ".join(f"WHEN {t} THEN c{t}" for t in THRESHOLDS) + " END"
            first = f"q * 100 >= {reach} AND {count} = 1"
        case Aggregation.MIN:
            first = f"n = 1 AND q * 100 >= {reach}"
        case _:
            raise UnsupportedQuota(f"no first-crossing rule for {aggregation.value}")
    return quantity_sql(aggregation), first


def alerts_sql(meters: Sequence[Meter], book: PriceBook, source: str) -> str:
    """One row per (customer, meter, period, threshold) reached, in the alerts' field names
    (the schema's `limit` is `quota` here, as in the alerts table)."""
    mine = quota_meters(meters, book)
    qs = " ".join(f"WHEN {literal(m.id)} THEN {quantity_sql(m.aggregation)}" for m in mine)

    def reached(t: int) -> str:
        conds = " ".join(
            f"WHEN {literal(m.id)} THEN {crossing_sql(m.aggregation, str(t))[1]}" for m in mine
        )
        return f"CASE WHEN (CASE meter {conds} ELSE FALSE END) THEN {t} END"

    # the array refers to the row, so it is unnested per row (a constant one would be planned
    # as a join with a VALUES table, with join state)
    crossed = ", ".join(reached(t) for t in THRESHOLDS)

    def ts(ms: str) -> str:
        return f"CAST(TO_TIMESTAMP_LTZ({ms}, 3) AS TIMESTAMP(3))"

    return (
        "SELECT CONCAT(customer_id, '/', meter, '/', "
        "DATE_FORMAT(TO_TIMESTAMP_LTZ(period_start_ms, 3), 'yyyyMMdd''T''HHmm'), '/', "
        "CAST(t.pct AS STRING)) AS alert_id, customer_id, subscription_id, meter, "
        f"{ts('period_start_ms')} AS period_start, {ts('period_end_ms')} AS period_end, "
        f"t.pct AS threshold_pct, CAST(CASE meter {qs} END AS {QUOTA_TYPE}) AS quantity, "
        f"quota, hard_cap, {ts('ws_ms')} AS window_start "
        f"FROM {source} CROSS JOIN UNNEST(ARRAY[{crossed}]) AS t(pct) WHERE t.pct IS NOT NULL"
    )


# the alert as the alerts topic's Avro record (schemas/alert/v1.avsc) and as an alerts-table row
AVRO_SELECT = (
    "alert_id, customer_id, subscription_id, meter, period_start, period_end, threshold_pct, "
    "CAST(quantity AS STRING), CAST(quota AS STRING), hard_cap, window_start"
)
ROW_SELECT = (
    "alert_id, customer_id, subscription_id, meter, "
    "DATE_FORMAT(period_start, 'yyyy-MM-dd HH:mm:ss'), "
    "DATE_FORMAT(period_end, 'yyyy-MM-dd HH:mm:ss'), threshold_pct, quantity, quota, "
    "CASE WHEN hard_cap THEN 1 ELSE 0 END, DATE_FORMAT(window_start, 'yyyy-MM-dd HH:mm:ss')"
)
