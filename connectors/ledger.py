"""ClickHouse side of billing: stored events for a recompute, the invoice ledger, credit
applications and streamed rated totals. Thin: every decision lives in meterflow.invoicing."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from clickhouse_driver import Client

from meterflow.credits import Application
from meterflow.invoicing import Invoice, Line
from meterflow.meters import Meter
from meterflow.period_usage import StoredEvent
from meterflow.subscriptions import Period

_EVENT_COLUMNS = "customer_id, event_id, event_name, timestamp_ms, value, properties"


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _naive(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None)


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC)


def events_sql(db: str, where: str, *, include_late: bool = True) -> str:
    """Stored events (accepted on time, plus those judged beyond lateness: both are billed)."""
    tables = ["events", "late_events"] if include_late else ["events"]
    parts = [f"SELECT {_EVENT_COLUMNS} FROM {db}.{t} FINAL WHERE {where}" for t in tables]
    return " UNION ALL ".join(parts)


def stored_events(
    ch: Client,
    db: str,
    start: datetime,
    end: datetime,
    customers: Sequence[str] | None = None,
    *,
    include_late: bool = True,
) -> Iterator[tuple[str, StoredEvent]]:
    """(customer, event) for every stored event in [start, end), grouped by customer, each
    event_id once per customer."""
    where = (
        f"event_time >= toDateTime({int(start.timestamp())}) "
        f"AND event_time <= toDateTime({int(end.timestamp())}) "
        f"AND timestamp_ms >= {_ms(start)} AND timestamp_ms < {_ms(end)}"
    )
    params: dict[str, object] = {}
    if customers is not None:
        where += " AND customer_id IN %(customers)s"
        params["customers"] = tuple(customers)
    sql = (
        f"SELECT {_EVENT_COLUMNS} FROM ({events_sql(db, where, include_late=include_late)}) "
        "ORDER BY customer_id"
    )
    current, seen = None, set()
    rows = ch.execute_iter(sql, params, settings={"max_block_size": 100_000})
    for cust, eid, name, ts, value, props in rows:
        if cust != current:
            current, seen = cust, set()
        if eid in seen:  # an event judged late after a restart may sit in both tables
            continue
        seen.add(eid)
        yield cust, StoredEvent(eid, name, ts, value, json.loads(props) if props else {})


@dataclass(frozen=True)
class FinalHeader:
    invoice_id: str
    customer_id: str
    subscription_id: str
    plan: str
    price_version: int
    currency: str
    period_start: datetime
    period_end: datetime
    subtotal: Decimal
    credits: Decimal
    total: Decimal
    closed_at: datetime

    @property
    def period(self) -> Period:
        return Period(
            self.subscription_id, self.customer_id, self.period_start, self.period_end, -1
        )


def final_invoices(ch: Client, db: str, customer_id: str | None = None) -> list[FinalHeader]:
    where = "WHERE customer_id = %(c)s" if customer_id else ""
    rows = ch.execute(
        "SELECT invoice_id, customer_id, subscription_id, plan, price_version, currency, "
        "period_start, period_end, subtotal, credits, total, closed_at "
        f"FROM {db}.invoices FINAL {where} ORDER BY customer_id, period_start",
        {"c": customer_id},
    )
    return [
        FinalHeader(*r[:6], _utc(r[6]), _utc(r[7]), r[8], r[9], r[10], _utc(r[11])) for r in rows
    ]


_LINE_COLUMNS = (
    "invoice_id, line_no, customer_id, kind, period_start, period_end, meter, meter_version, "
    "dimensions, plan, price_version, pricing, quantity, amount, event_count, events_digest, "
    "refers_to, detail, closed_at"
)


def lines(
    ch: Client, db: str, *, invoice_id: str | None = None, period_end_from: datetime | None = None
) -> list[tuple[str, int, Line]]:
    """(invoice_id, line_no, line) in ledger order; only lines of final invoices."""
    cond = [f"invoice_id IN (SELECT invoice_id FROM {db}.invoices)"]
    params: dict[str, object] = {}
    if invoice_id is not None:
        cond.append("invoice_id = %(i)s")
        params["i"] = invoice_id
    if period_end_from is not None:
        cond.append("period_end >= %(pe)s")
        params["pe"] = _naive(period_end_from)
    rows = ch.execute(
        f"SELECT {_LINE_COLUMNS} FROM {db}.invoice_lines FINAL WHERE {' AND '.join(cond)} "
        "ORDER BY closed_at, invoice_id, line_no",
        params,
    )
    out = []
    for r in rows:
        out.append(
            (
                r[0],
                r[1],
                Line(
                    kind=r[3],
                    meter=r[6],
                    meter_version=r[7],
                    dimensions=r[8],
                    quantity=r[12],
                    amount=r[13],
                    event_count=r[14],
                    events_digest=r[15],
                    pricing=r[11],
                    plan=r[9],
                    price_version=r[10],
                    refers_to=r[16],
                    detail=r[17],
                    period_start=_utc(r[4]),
                    period_end=_utc(r[5]),
                ),
            )
        )
    return out


def applications(ch: Client, db: str) -> list[Application]:
    rows = ch.execute(
        f"SELECT grant_id, invoice_id, amount FROM {db}.credit_applications FINAL "
        f"WHERE invoice_id IN (SELECT invoice_id FROM {db}.invoices)"
    )
    return [Application(g, i, a) for g, i, a in rows]


def write_invoices(ch: Client, db: str, invoices: Iterable[Invoice], closed_at: datetime) -> int:
    """Lines and credit applications first, headers last: a header makes an invoice final."""
    invoices = list(invoices)
    at = _naive(closed_at).replace(microsecond=0)
    line_rows, app_rows, header_rows = [], [], []
    for inv in invoices:
        for no, ln in enumerate(inv.lines, start=1):
            line_rows.append(
                (
                    inv.invoice_id,
                    no,
                    inv.customer_id,
                    ln.kind,
                    _naive(ln.period_start or inv.period.start),
                    _naive(ln.period_end or inv.period.end),
                    ln.meter,
                    ln.meter_version,
                    ln.dimensions,
                    ln.plan,
                    ln.price_version,
                    ln.pricing,
                    ln.quantity,
                    ln.amount,
                    ln.event_count,
                    ln.events_digest,
                    ln.refers_to,
                    ln.detail,
                    at,
                )
            )
        for app in inv.credits:
            app_rows.append(
                (app.grant_id, app.invoice_id, inv.customer_id, inv.currency, app.amount, at)
            )
        header_rows.append(
            (
                inv.invoice_id,
                inv.customer_id,
                inv.subscription_id,
                inv.plan,
                inv.price_version,
                inv.currency,
                _naive(inv.period.start),
                _naive(inv.period.end),
                inv.subtotal,
                inv.credited,
                inv.total,
                len(inv.lines),
                at,
            )
        )
    if line_rows:
        ch.execute(f"INSERT INTO {db}.invoice_lines ({_LINE_COLUMNS}) VALUES", line_rows)
    if app_rows:
        ch.execute(
            f"INSERT INTO {db}.credit_applications "
            "(grant_id, invoice_id, customer_id, currency, amount, applied_at) VALUES",
            app_rows,
        )
    if header_rows:
        ch.execute(
            f"INSERT INTO {db}.invoices (invoice_id, customer_id, subscription_id, plan, "
            "price_version, currency, period_start, period_end, subtotal, credits, total, "
            "line_count, closed_at) VALUES",
            header_rows,
        )
    return len(header_rows)


def streamed_totals(
    ch: Client, db: str, customer_id: str | None = None
) -> dict[tuple[str, datetime, str, int], Decimal]:
    """The stream's claim of what each (customer, period start, meter, meter version) costs,
    unrounded: the JVM job's period cost (its newest row, period_cost) where it has one, else the
    sum of the Python job's window amounts (rated_usage). A period cost of NULL (a quantity
    outside the SQL rating's exact domain) is no claim: the close alone rates that line."""
    where = "WHERE customer_id = %(c)s" if customer_id else ""
    rows = ch.execute(
        "SELECT customer_id, period_start, meter, meter_version, sum(amount) "
        f"FROM {db}.rated_usage FINAL {where} "
        "GROUP BY customer_id, period_start, meter, meter_version",
        {"c": customer_id},
    )
    out = {(r[0], _utc(r[1]), r[2], r[3]): r[4] for r in rows}
    periods = ch.execute(
        "SELECT customer_id, period_start, meter, meter_version, period_amount "
        f"FROM {db}.period_cost FINAL {where}",
        {"c": customer_id},
    )
    out.update({(r[0], _utc(r[1]), r[2], r[3]): r[4] for r in periods if r[4] is not None})
    return out


def _sql_str(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def line_events_sql(db: str, customer_id: str, period: Period, meter: Meter) -> str:
    """SQL listing the events behind a line: the meter's selection, written out in SQL.

    Properties are stored as flat JSON with sorted keys, which visitParam* functions (present
    in 18.16 and current ClickHouse) read without a JSON parser."""
    lo, hi = int(period.start.timestamp() * 1000), int(period.end.timestamp() * 1000)
    where = [
        f"customer_id = {_sql_str(customer_id)}",
        f"timestamp_ms >= {lo}",
        f"timestamp_ms < {hi}",
        f"event_name = {_sql_str(meter.event_name)}",
    ]
    for f in meter.filters:
        prop = _sql_str(f.property)
        if f.op == "exists":
            where.append(f"{'' if f.exists else 'NOT '}visitParamHas(properties, {prop})")
            continue
        values = ", ".join(_sql_str(v) for v in sorted(f.values))
        member = f"visitParamExtractString(properties, {prop}) IN ({values})"
        if f.op == "in":
            where.append(f"(visitParamHas(properties, {prop}) AND {member})")
        else:
            where.append(f"NOT (visitParamHas(properties, {prop}) AND {member})")
    cond = " AND ".join(where)
    cols = "event_id, timestamp_ms, value, properties"
    return (
        f"SELECT {cols} FROM (SELECT {cols} FROM {db}.events FINAL WHERE {cond} "
        f"UNION ALL SELECT {cols} FROM {db}.late_events FINAL WHERE {cond}) "
        "ORDER BY timestamp_ms, event_id LIMIT 1 BY event_id"
    )


def rated_amounts_by_currency(ch: Client, db: str) -> dict[str, Decimal]:
    """Sum of the newest revision of every streamed rated row, per currency."""
    rows = ch.execute(f"SELECT currency, sum(amount) FROM {db}.rated_usage FINAL GROUP BY currency")
    return {cur: amount for cur, amount in rows}


# table -> the column that says when a row was written
WRITE_TIME_COLUMNS = {
    "events": "ingested_at",
    "late_events": "ingested_at",
    "usage_windows": "written_at",
    "rated_usage": "written_at",
    "period_cost": "written_at",
    "invoices": "closed_at",
    "invoice_lines": "closed_at",
    "credit_applications": "applied_at",
    "alerts": "written_at",
}


def last_write_times(ch: Client, db: str) -> dict[str, int]:
    """Unix time of the newest row of each table in WRITE_TIME_COLUMNS; 0 for an empty table
    or one not migrated yet. Raises LookupError when the database has no tables at all."""
    present = {
        r[0]
        for r in ch.execute("SELECT name FROM system.tables WHERE database = %(db)s", {"db": db})
    }
    if not present:
        raise LookupError(f"database {db!r} has no tables (run `meterflow init`)")
    # max() of an empty table is the epoch: 0, "never written"
    return {
        table: int(ch.execute(f"SELECT toUInt32(max({column})) FROM {db}.{table}")[0][0])
        if table in present
        else 0
        for table, column in WRITE_TIME_COLUMNS.items()
    }


@dataclass(frozen=True)
class PeriodCost:
    """The stream's period cost of one meter (period_cost, its newest row)."""

    meter: str
    meter_version: int
    subscription_id: str
    period_start: datetime
    period_end: datetime
    plan: str
    price_version: int
    currency: str
    quantity: Decimal
    amount: Decimal | None  # None: outside the SQL rating's exact domain, rated at close only
    revision: int


def period_costs(ch: Client, db: str, customer_id: str, period_start: datetime) -> list[PeriodCost]:
    """Each meter's streamed cost so far in the customer's period starting at `period_start`,
    in (meter, meter version) order."""
    rows = ch.execute(
        "SELECT meter, meter_version, subscription_id, period_start, period_end, plan, "
        "price_version, currency, period_quantity, period_amount, revision "
        f"FROM {db}.period_cost FINAL WHERE customer_id = %(c)s AND period_start = %(ps)s "
        "ORDER BY meter, meter_version",
        {"c": customer_id, "ps": _naive(period_start)},
    )
    return [
        PeriodCost(r[0], r[1], r[2], _utc(r[3]), _utc(r[4]), r[5], r[6], r[7], r[8], r[9], r[10])
        for r in rows
    ]


def final_invoice(ch: Client, db: str, customer_id: str, invoice_id: str) -> FinalHeader | None:
    """One final invoice of one customer; None when the customer has no such invoice (another
    customer's invoice id is "no such invoice" too)."""
    rows = ch.execute(
        "SELECT invoice_id, customer_id, subscription_id, plan, price_version, currency, "
        "period_start, period_end, subtotal, credits, total, closed_at "
        f"FROM {db}.invoices FINAL WHERE customer_id = %(c)s AND invoice_id = %(i)s",
        {"c": customer_id, "i": invoice_id},
    )
    if not rows:
        return None
    r = rows[0]
    return FinalHeader(*r[:6], _utc(r[6]), _utc(r[7]), r[8], r[9], r[10], _utc(r[11]))
