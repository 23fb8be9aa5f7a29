"""Invoice explanations, shadow re-rating and streamed-vs-closed reconciliation.

Read-only: nothing here writes to the ledger. The maths is the same code the close job uses
(period_usage, invoicing, pricing); this module only gathers the inputs and prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from clickhouse_driver import Client

from connectors import ledger
from connectors.clickhouse import connect
from meterflow.invoicing import USAGE, Line, usage_lines
from meterflow.meters import Meter
from meterflow.money import currency, format_amount, round_amount
from meterflow.period_usage import LineUsage, period_usage
from meterflow.price_book import PriceBook
from meterflow.rating import rateable
from meterflow.settings import Settings
from meterflow.subscriptions import Period


class NotFound(LookupError):
    pass


@dataclass(frozen=True)
class InvoiceView:
    header: ledger.FinalHeader
    lines: list[tuple[int, Line]]

    @property
    def period(self) -> Period:
        return self.header.period


def load_invoice(ch: Client, db: str, invoice_id: str) -> InvoiceView:
    headers = [h for h in ledger.final_invoices(ch, db) if h.invoice_id == invoice_id]
    if not headers:
        raise NotFound(f"no final invoice {invoice_id!r}")
    rows = ledger.lines(ch, db, invoice_id=invoice_id)
    return InvoiceView(headers[0], [(no, ln) for _, no, ln in rows])


def explain(settings: Settings, invoice_id: str, meters: Sequence[Meter]) -> str:
    db = settings.clickhouse_database
    return explain_view(
        load_invoice(connect(settings, db, role="reader"), db, invoice_id), db, meters
    )


def explain_view(inv: InvoiceView, db: str, meters: Sequence[Meter]) -> str:
    """The explanation of a loaded invoice (`meterflow invoices explain`, the HTTP API)."""
    h = inv.header
    by_id = {m.id: m for m in meters}
    cur = currency(h.currency)

    def money(amount: Decimal) -> str:
        return format_amount(amount, cur)

    out = [
        f"invoice {h.invoice_id}  customer {h.customer_id}  subscription {h.subscription_id}",
        f"period {h.period_start:%Y-%m-%d %H:%M} .. {h.period_end:%Y-%m-%d %H:%M} UTC  "
        f"plan {h.plan} price version {h.price_version}  closed {h.closed_at:%Y-%m-%d %H:%M}",
        "",
    ]
    for no, ln in inv.lines:
        what = f"{ln.meter} v{ln.meter_version}" if ln.meter else ln.kind
        out.append(f"line {no}: {ln.kind:<10} {what:<24} {h.currency} {money(ln.amount)}")
        if ln.pricing:
            out.append(f"    rule: {ln.pricing} (plan {ln.plan} version {ln.price_version})")
        if ln.meter:
            out.append(
                f"    quantity {ln.quantity.normalize():f} from {ln.event_count} events, "
                f"digest {ln.events_digest}"
            )
        if ln.refers_to:
            out.append(f"    refers to {ln.refers_to}")
        if ln.detail:
            out.append(f"    {ln.detail}")
        meter = by_id.get(ln.meter)
        if meter is not None and ln.period_start and ln.period_end:
            p = Period(h.subscription_id, h.customer_id, ln.period_start, ln.period_end, -1)
            out.append(f"    events: {ledger.line_events_sql(db, h.customer_id, p, meter)}")
    out.append("")
    out.append(
        f"subtotal {money(h.subtotal)}  credits {money(h.credits)}  "
        f"total {h.currency} {money(h.total)}  "
        f"(sum of lines {money(sum((ln.amount for _, ln in inv.lines), Decimal(0)))})"
    )
    return "\n".join(out)


def _usage(
    ch: Client,
    db: str,
    customer_id: str,
    period: Period,
    meters: Sequence[Meter],
    include_late: bool = True,
) -> dict:
    events = [
        ev
        for _, ev in ledger.stored_events(
            ch, db, period.start, period.end, [customer_id], include_late=include_late
        )
    ]
    return period_usage(meters, events)


@dataclass(frozen=True)
class RerateRow:
    meter: str
    billed_quantity: Decimal
    shadow_quantity: Decimal
    billed_amount: Decimal
    shadow_amount: Decimal
    currency: str

    @property
    def difference(self) -> Decimal:
        return self.shadow_amount - self.billed_amount


def rerate(
    settings: Settings,
    invoice_id: str,
    book: PriceBook,
    meters: Sequence[Meter],
    price_version: int | None = None,
) -> list[RerateRow]:
    """The invoice's usage lines recomputed now with another price version (or price book, or
    meter definitions) next to what was billed. Writes nothing."""
    db = settings.clickhouse_database
    ch = connect(settings, db, role="reader")
    inv = load_invoice(ch, db, invoice_id)
    h = inv.header
    plan = book.plan(h.plan)
    version = plan.version(price_version if price_version is not None else h.price_version)
    usage = _usage(ch, db, h.customer_id, inv.period, meters)
    shadow = usage_lines(
        version.charges,
        {m.id: m.version for m in meters},
        usage,
        plan.currency,
        h.plan,
        version.version,
        inv.period,
    )
    billed = {ln.meter: ln for _, ln in inv.lines if ln.kind == USAGE}
    rows = []
    for meter in sorted({*billed, *(ln.meter for ln in shadow)}):
        b = billed.get(meter)
        s = next((ln for ln in shadow if ln.meter == meter), None)
        rows.append(
            RerateRow(
                meter,
                b.quantity if b else Decimal(0),
                s.quantity if s else Decimal(0),
                b.amount if b else Decimal(0),
                s.amount if s else Decimal(0),
                plan.currency.code,
            )
        )
    return rows


@dataclass(frozen=True)
class ReconRow:
    customer_id: str
    invoice_id: str
    period_start: datetime
    meter: str
    currency: str
    streamed: Decimal
    closed: Decimal
    late_events: int
    # "match" | "explained by late events" | "close only" | "no usage" | "UNEXPLAINED"
    status: str

    @property
    def gap(self) -> Decimal:
        return self.closed - self.streamed


def reconcile(
    settings: Settings, book: PriceBook, meters: Sequence[Meter], customer_id: str | None = None
) -> list[ReconRow]:
    """Per final invoice usage line: the streamed rated total (rounded once, like the line) vs
    the closed amount. A gap is explained when re-pricing the period without the events judged
    beyond lateness (which never reached a window) gives exactly the streamed amount."""
    db = settings.clickhouse_database
    ch = connect(settings, db, role="reader")
    streamed = ledger.streamed_totals(ch, db, customer_id)
    by_id = {m.id: m for m in meters}
    out = []
    for h in ledger.final_invoices(ch, db, customer_id):
        plan = book.plan(h.plan)
        version = plan.version(h.price_version)
        period = h.period
        recheck: dict[str, LineUsage] | None = None
        late: dict | None = None
        for _, _, ln in ledger.lines(ch, db, invoice_id=h.invoice_id):
            if ln.kind != USAGE or not ln.meter:
                continue
            charge = version.charges.get(ln.meter)
            meter = by_id.get(ln.meter)
            key = (h.customer_id, h.period_start, ln.meter, ln.meter_version)
            s_amount = streamed.get(key)
            s = round_amount(s_amount, plan.currency) if s_amount is not None else Decimal(0)
            n_late = 0
            if charge is None or meter is None or not rateable(meter.aggregation):
                status = "close only"
            elif not ln.event_count and s_amount is None:
                status = "no usage"  # a fee due at zero usage: no window ever carried it
            else:
                if recheck is None:
                    on_time = _usage(ch, db, h.customer_id, period, meters, include_late=False)
                    recheck = {k[0]: v for k, v in on_time.items()}
                    everything = _usage(ch, db, h.customer_id, period, meters)
                    late = {
                        k[0]: v.event_count - (on_time[k].event_count if k in on_time else 0)
                        for k, v in everything.items()
                    }
                n_late = (late or {}).get(ln.meter, 0)
                if s == ln.amount:
                    status = "match"
                else:
                    u = recheck.get(ln.meter)
                    without_late = usage_lines(
                        {ln.meter: charge},
                        {ln.meter: ln.meter_version},
                        {(ln.meter, ln.meter_version, "{}"): u} if u else {},
                        plan.currency,
                        h.plan,
                        version.version,
                        period,
                    )
                    expected = without_late[0].amount if without_late else Decimal(0)
                    status = (
                        "explained by late events" if n_late and expected == s else "UNEXPLAINED"
                    )
            out.append(
                ReconRow(
                    h.customer_id,
                    h.invoice_id,
                    h.period_start,
                    ln.meter,
                    h.currency,
                    s,
                    ln.amount,
                    n_late,
                    status,
                )
            )
    return out


def write_reconciliation_metrics(rows: Sequence[ReconRow], path: Path) -> None:
    """Prometheus text file (node-exporter textfile format) with the gaps per currency."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    reg = CollectorRegistry()
    gap = Gauge(
        "meterflow_reconciliation_gap",
        "closed minus streamed amount over final invoices, by explanation",
        ["currency", "status"],
        registry=reg,
    )
    totals: dict[tuple[str, str], Decimal] = {}
    for r in rows:
        k = (r.currency, r.status)
        totals[k] = totals.get(k, Decimal(0)) + r.gap
    for (cur, status), v in totals.items():
        gap.labels(cur, status).set(float(v))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), reg)
