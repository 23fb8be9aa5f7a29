"""Stage 5: real-time rating, as generated SQL (decision 0013).

Each usage window firing is given its customer's billing period, plan, price version and
currency by MF_PERIOD, a lookup in the period table that meterflow.rating.priced_periods
computes from the subscriptions and the price book and the builder writes beside the job's
checkpoints. The windows of a (customer, meter, meter version, period) are summed into the
period's partials -- a late re-firing retracts its older result first -- and the period quantity
is priced by the charge's SQL twin (jobs/pricing_sql.py, exact within its domain, NULL outside:
that line is rated at close only). One row per period, updated on every firing: the period's
cost so far is its newest row, not a sum of window deltas, so the streamed amount is price(period
quantity) by construction.

A percentage charge with per-event bounds prices the sum of its events' clamped fees: the fee is
computed per event (fee_sql), where the event is still at hand, and summed through the windows.
UNIQUE_COUNT meters are rated at close only (a distinct count does not add over windows).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from jobs.pricing_sql import (
    A_TYPE,
    AMOUNT_LIMIT,
    P_TYPE,
    Q_TYPE,
    QUANTITY_LIMIT,
    RESULT_TYPE,
    book_charges,
    price_book_sql,
)
from jobs.streaming.source import epoch_ms
from jobs.streaming.sql import literal
from jobs.streaming.windows import meter_quantity_sql
from meterflow.meters import Aggregation, Meter
from meterflow.price_book import PriceBook
from meterflow.pricing import Percentage, PriceModel, plain
from meterflow.rating import PricedPeriod, rateable


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def period_table_text(periods: Sequence[PricedPeriod]) -> str:
    """The table MF_PERIOD reads (java/: PeriodLookup), one tab-separated line per period."""
    lines = []
    for p in periods:
        fields = (
            p.customer_id,
            str(_ms(p.start)),
            str(_ms(p.end)),
            p.subscription_id,
            p.plan,
            str(p.price_version),
            p.currency,
        )
        lines.append("\t".join(_escape(f) for f in fields))
    return "".join(f"{line}\n" for line in lines)


def write_period_table(periods: Sequence[PricedPeriod], directory: Path) -> Path:
    """Written once per content (its hash names it), so a restart with the same subscriptions
    names the same file. On a cluster the directory must be readable by every TaskManager, as
    the checkpoint directory already is."""
    text = period_table_text(periods)
    path = directory / f"periods-{hashlib.sha256(text.encode()).hexdigest()[:16]}.tsv"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return path


def period_call(table: Path, customer: str, at_ms: str) -> str:
    return f"MF_PERIOD({literal(str(table))}, {customer}, {at_ms})"


def _bounded(model: PriceModel) -> bool:
    return isinstance(model, Percentage) and model.needs_events


def fee_sql(book: PriceBook, meter: str, period: str) -> str | None:
    """The SQL of one event's fee for `meter` under the charge in force for its period
    (`period`: an MF_PERIOD call), `{q}` standing for the event's quantity; None when no
    plan prices the meter with a per-event-bounded percentage.

    Exact like Percentage.event_quantity (rate x value, clamped) for a value in [0, 10^12); a
    value outside gives 10^17, which puts the period's fee sum outside price_sql's domain, so
    the line's streamed amount is NULL (rated at close) rather than silently short."""
    branches = []
    for plan_id, version, meter_id, model in book_charges(book):
        if meter_id != meter or not _bounded(model):
            continue
        assert isinstance(model, Percentage)
        fee = f"CAST(CAST({{q}} AS {Q_TYPE}) * CAST({plain(model.rate)} AS {P_TYPE}) AS {A_TYPE})"
        if model.per_event_min is not None:
            fee = f"GREATEST({fee}, CAST({plain(model.per_event_min)} AS {A_TYPE}))"
        if model.per_event_max is not None:
            fee = f"LEAST({fee}, CAST({plain(model.per_event_max)} AS {A_TYPE}))"
        branches.append(
            f"WHEN {period}.plan = {literal(plan_id)} AND {period}.price_version = {version} "
            f"THEN CAST({fee} AS {RESULT_TYPE})"
        )
    if not branches:
        return None
    outside = (
        f"WHEN {{q}} < 0 OR {{q}} >= {plain(QUANTITY_LIMIT)} "
        f"THEN CAST({plain(AMOUNT_LIMIT)} AS {RESULT_TYPE})"
    )
    return f"CASE {outside} {' '.join(branches)} ELSE CAST(NULL AS {RESULT_TYPE}) END"


def fees(meters: Sequence[Meter], book: PriceBook, table: Path) -> dict[str, str]:
    """meter id -> fee_sql, for the meters some plan prices with per-event bounds."""
    period = period_call(table, "e.customer_id", "e.ts_ms")
    return {m.id: sql for m in meters if (sql := fee_sql(book, m.id, period)) is not None}


def rated_meters(meters: Sequence[Meter], book: PriceBook) -> list[Meter]:
    charged = {meter for _, _, meter, _ in book_charges(book)}
    return [m for m in meters if m.id in charged and rateable(m.aggregation)]


def charged_sql(book: PriceBook, plan: str = "plan", version: str = "price_version") -> str:
    """TRUE when (plan, version, meter) has a charge. Applied before the period aggregation:
    after it, the planner would fold a version every charge shares into a constant, and a
    constant is no longer the upsert sink's key column."""
    tree: dict[str, dict[int, list[str]]] = {}
    for plan_id, number, meter_id, _ in book_charges(book):
        tree.setdefault(plan_id, {}).setdefault(number, []).append(literal(meter_id))
    if not tree:
        return "FALSE"
    plans = " ".join(
        f"WHEN {literal(p)} THEN CASE {version} "
        + " ".join(f"WHEN {v} THEN meter IN ({', '.join(ms)})" for v, ms in vs.items())
        + " ELSE FALSE END"
        for p, vs in tree.items()
    )
    return f"CASE {plan} {plans} ELSE FALSE END"


def priced_windows_sql(meters: Sequence[Meter], book: PriceBook, table: Path, source: str) -> str:
    """The window partials of rated meters with the period that rates them (by window start,
    as the close assigns windows to periods), where the period's plan version charges them."""
    rated = rated_meters(meters, book)
    ids = ", ".join(literal(m.id) for m in rated)

    def only(column: str, aggregations: tuple[Aggregation, ...]) -> str:
        # a partial the meter's quantity does not use is NULL: MIN/MAX over a retracting
        # input keep every value in state, and nothing is kept for a NULL
        mine = [literal(m.id) for m in rated if m.aggregation in aggregations]
        if not mine:
            return f"CAST(NULL AS {'STRING' if column == 'lk' else 'DECIMAL(38, 12)'}) AS {column}"
        return f"CASE WHEN meter IN ({', '.join(mine)}) THEN {column} END AS {column}"

    p = period_call(table, "customer_id", epoch_ms("CAST(ws AS TIMESTAMP_LTZ(3))"))
    inner = (
        "SELECT customer_id, meter, meter_version, n, "
        f"{only('s', (Aggregation.SUM, Aggregation.AVG))}, {only('mn', (Aggregation.MIN,))}, "
        f"{only('mx', (Aggregation.MAX,))}, {only('lk', (Aggregation.LATEST,))}, fs, "
        f"{p} AS p FROM {source} WHERE meter IN ({ids})"
    )
    # period bounds in unix seconds, the form the sink writes: group keys pass to an upsert
    # sink's primary key only as plain columns (an expression would make the planner add a
    # stateful upsert materializer)
    return (
        "SELECT customer_id, p.subscription_id AS subscription_id, "
        "p.period_start_ms / 1000 AS period_start, p.period_end_ms / 1000 AS period_end, meter, "
        "meter_version, p.plan AS plan, p.price_version AS price_version, "
        "p.currency AS currency, n, s, mn, mx, lk, fs "
        f"FROM ({inner}) WHERE p IS NOT NULL AND {charged_sql(book, 'p.plan', 'p.price_version')}"
    )


def period_partials_sql(source: str) -> str:
    """A period's partials: the sums, minima and maxima of its windows' partials."""
    keys = (
        "customer_id, subscription_id, period_start, period_end, meter, meter_version, "
        "plan, price_version, currency"
    )
    return (
        f"SELECT {keys}, "
        "SUM(n) AS n, SUM(s) AS s, MIN(mn) AS mn, MAX(mx) AS mx, MAX(lk) AS lk, SUM(fs) AS fs "
        f"FROM {source} GROUP BY {keys}"
    )


def period_cost_sql(meters: Sequence[Meter], book: PriceBook, source: str) -> str:
    """One row per (customer, meter, meter version, period) in period_cost's column names
    (period bounds as unix seconds)."""
    rated = rated_meters(meters, book)
    amount = price_book_sql(book_charges(book), quantity="period_quantity", fee_sum="fs")
    inner = f"SELECT *, {meter_quantity_sql(rated)} AS period_quantity FROM {source}"
    return (
        "SELECT customer_id, subscription_id, period_start, period_end, "
        "meter, meter_version, plan, price_version, currency, period_quantity, "
        f"{amount} AS period_amount, n AS revision FROM ({inner})"
    )
