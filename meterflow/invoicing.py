"""Invoice maths (pure): usage lines, minimum true-up, adjustments of final invoices, credits.

Rounding: every line's amount is rounded once, half away from zero to the currency's minor units
(`money.round_amount`), when the line is made; subtotal and total are sums of rounded lines, so
sum(lines) == total always holds and nothing is rounded twice.

Adjustments: an invoice, once final, is never edited. When a later close recomputes a closed
period from the stored events and finds a line whose events changed (new digest), the next
invoice gets an adjustment line for the difference between the corrected
rounded amount and everything billed for that group so far, referring to the original invoice.
The minimum-commitment true-up of the old period is corrected the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from meterflow.credits import Application, Grant, apply_credits
from meterflow.money import Currency, round_amount
from meterflow.period_usage import LineKey, LineUsage
from meterflow.price_book import Charge, PlanVersion
from meterflow.pricing import charge_amount, true_up
from meterflow.subscriptions import Period

USAGE, MINIMUM, ADJUSTMENT, CREDIT = "usage", "minimum", "adjustment", "credit"


@dataclass(frozen=True)
class Line:
    kind: str
    meter: str
    meter_version: int
    dimensions: str
    quantity: Decimal
    amount: Decimal
    event_count: int = 0
    events_digest: str = ""
    pricing: str = ""
    plan: str = ""
    price_version: int = 0
    refers_to: str = ""
    detail: str = ""
    # the period this line bills (an adjustment's is the original invoice's period)
    period_start: datetime | None = None
    period_end: datetime | None = None

    @property
    def key(self) -> LineKey:
        return (self.meter, self.meter_version, self.dimensions)


@dataclass(frozen=True)
class Invoice:
    invoice_id: str
    customer_id: str
    subscription_id: str
    plan: str
    price_version: int
    currency: str
    period: Period
    lines: tuple[Line, ...]
    credits: tuple[Application, ...]

    @property
    def subtotal(self) -> Decimal:
        return sum((ln.amount for ln in self.lines if ln.kind != CREDIT), Decimal(0))

    @property
    def credited(self) -> Decimal:
        return -sum((ln.amount for ln in self.lines if ln.kind == CREDIT), Decimal(0))

    @property
    def total(self) -> Decimal:
        return sum((ln.amount for ln in self.lines), Decimal(0))


def invoice_id(period: Period) -> str:
    return f"INV-{period.subscription_id}-{period.start:%Y%m%d}"


def usage_lines(
    charges: Mapping[str, Charge],
    meter_versions: Mapping[str, int],
    usage: Mapping[LineKey, LineUsage],
    currency: Currency,
    plan: str,
    price_version: int,
    period: Period,
) -> list[Line]:
    """One line per charged meter (its total over all dimensions). A charged meter without usage
    gets a zero line only if it costs something at zero (a flat fee)."""
    lines = []
    for meter_id in sorted(charges):
        charge = charges[meter_id]
        groups = sorted(k for k in usage if k[0] == meter_id)
        if not groups:
            amount = round_amount(charge.model.price(Decimal(0)), currency)
            if amount:
                lines.append(
                    Line(
                        USAGE,
                        meter_id,
                        meter_versions.get(meter_id, 0),
                        "{}",
                        Decimal(0),
                        amount,
                        pricing=charge.describe(),
                        plan=plan,
                        price_version=price_version,
                        period_start=period.start,
                        period_end=period.end,
                    )
                )
            continue
        for key in groups:
            u = usage[key]
            lines.append(
                Line(
                    USAGE,
                    key[0],
                    key[1],
                    key[2],
                    u.quantity,
                    round_amount(charge_amount(charge.model, u.quantity, u.values), currency),
                    u.event_count,
                    u.digest,
                    charge.describe(),
                    plan,
                    price_version,
                    period_start=period.start,
                    period_end=period.end,
                )
            )
    return lines


def minimum_line(
    version: PlanVersion, usage_total: Decimal, currency: Currency, plan: str, period: Period
) -> Line | None:
    if version.minimum is None:
        return None
    amount = round_amount(true_up(usage_total, version.minimum), currency)
    if not amount:
        return None
    return Line(
        MINIMUM,
        "",
        0,
        "{}",
        Decimal(0),
        amount,
        pricing=f"minimum commitment {version.minimum} per period",
        plan=plan,
        price_version=version.version,
        detail=f"usage {usage_total} < minimum {version.minimum}",
        period_start=period.start,
        period_end=period.end,
    )


@dataclass(frozen=True)
class FinalInvoice:
    """What a later close needs to know about a final invoice: its period and all lines billed
    for it so far (its own and adjustments on later invoices)."""

    invoice_id: str
    period: Period
    plan: str
    version: PlanVersion
    billed: Sequence[Line]


def adjustment_lines(
    final: FinalInvoice,
    usage: Mapping[LineKey, LineUsage],
    meter_versions: Mapping[str, int],
    currency: Currency,
) -> list[Line]:
    """Corrections for a final invoice's period, given its usage recomputed now."""
    billed_amount: dict[LineKey, Decimal] = {}
    billed_digest: dict[LineKey, str] = {}
    origin: dict[LineKey, str] = {}
    minimum_billed = Decimal(0)
    for ln in final.billed:
        if ln.kind == MINIMUM or (ln.kind == ADJUSTMENT and ln.meter == ""):
            minimum_billed += ln.amount
        elif ln.kind in (USAGE, ADJUSTMENT):
            billed_amount[ln.key] = billed_amount.get(ln.key, Decimal(0)) + ln.amount
            billed_digest[ln.key] = ln.events_digest  # lines come in billing order
            origin.setdefault(ln.key, ln.refers_to or final.invoice_id)
    fresh = usage_lines(
        final.version.charges,
        meter_versions,
        usage,
        currency,
        final.plan,
        final.version.version,
        final.period,
    )
    out = []
    for ln in fresh:
        if ln.key in billed_digest and billed_digest[ln.key] == ln.events_digest:
            continue
        delta = ln.amount - billed_amount.get(ln.key, Decimal(0))
        if ln.key not in billed_digest and not ln.event_count:
            continue  # a zero-usage flat-fee line billed under its own key already
        out.append(
            replace(
                ln,
                kind=ADJUSTMENT,
                amount=delta,
                refers_to=origin.get(ln.key, final.invoice_id),
                detail=(
                    f"events changed after {final.invoice_id} was final: now {ln.event_count} "
                    f"events, quantity {ln.quantity}, amount {ln.amount}"
                ),
            )
        )
    # The period's minimum true-up follows its corrected usage.
    usage_total = sum((ln.amount for ln in fresh), Decimal(0))
    m = minimum_line(final.version, usage_total, currency, final.plan, final.period)
    wanted = m.amount if m else Decimal(0)
    if out and wanted != minimum_billed:
        out.append(
            Line(
                ADJUSTMENT,
                "",
                0,
                "{}",
                Decimal(0),
                wanted - minimum_billed,
                pricing=f"minimum commitment {final.version.minimum} per period",
                plan=final.plan,
                price_version=final.version.version,
                refers_to=final.invoice_id,
                detail=f"minimum true-up of {final.invoice_id} is now {wanted}",
                period_start=final.period.start,
                period_end=final.period.end,
            )
        )
    return out


def build_invoice(
    period: Period,
    plan: str,
    version: PlanVersion,
    currency: Currency,
    usage: Mapping[LineKey, LineUsage],
    meter_versions: Mapping[str, int],
    adjustments: Sequence[Line],
    grants: Sequence[Grant],
    prior_applications: Sequence[Application],
) -> Invoice:
    iid = invoice_id(period)
    lines = usage_lines(
        version.charges, meter_versions, usage, currency, plan, version.version, period
    )
    m = minimum_line(version, sum((ln.amount for ln in lines), Decimal(0)), currency, plan, period)
    if m is not None:
        lines.append(m)
    lines.extend(adjustments)
    due = sum((ln.amount for ln in lines), Decimal(0))
    # Credits are judged at the period's end, not the wall clock: a re-run decides the same way.
    apps = apply_credits(grants, prior_applications, due, period.end - _TICK, iid, currency.code)
    for app in apps:
        lines.append(
            Line(
                CREDIT,
                "",
                0,
                "{}",
                Decimal(0),
                -app.amount,
                refers_to=app.grant_id,
                detail=f"prepaid credit from grant {app.grant_id}",
                plan=plan,
                price_version=version.version,
                period_start=period.start,
                period_end=period.end,
            )
        )
    return Invoice(
        iid,
        period.customer_id,
        period.subscription_id,
        plan,
        version.version,
        currency.code,
        period,
        tuple(lines),
        tuple(apps),
    )


_TICK = datetime.resolution
