"""Billing-period close: turn ended periods into final invoices from the stored raw events.

For every subscription period that ended more than `--grace` ago and has no final invoice yet:
recompute each meter's usage from the stored events (deduplicated by event_id, on-time and
beyond-lateness alike), rate it with the plan version in force at the period's start, add the
minimum-commitment true-up, corrections of earlier final invoices whose events changed
(adjustment lines), and prepaid credits; then write lines, credit applications and, last, the
invoice header. Re-running writes nothing new: a period with a final invoice is skipped.

Run it from cron (`meterflow close`) or as a batch step; it is idempotent and safe to repeat.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from connectors import ledger
from connectors.clickhouse import connect
from jobs.progress import Progress
from meterflow.catalog import Catalog, load_catalog
from meterflow.cli.args import add_catalog_args, utc_time
from meterflow.credits import Grant
from meterflow.invoicing import FinalInvoice, Invoice, Line, adjustment_lines, build_invoice
from meterflow.invoicing import invoice_id as make_invoice_id
from meterflow.money import currency, format_amount
from meterflow.period_usage import StoredEvent, period_usage
from meterflow.rating import period_plan
from meterflow.settings import Settings
from meterflow.subscriptions import (
    Period,
    Subscription,
    closable_periods,
    period_at,
)


@dataclass(frozen=True)
class CloseResult:
    invoices: int
    lines: int
    adjustment_lines: int
    already_final: int
    events_read: int
    seconds: float


@dataclass
class _Work:
    """One subscription's periods to close now and final invoices to re-check."""

    subscription: Subscription
    to_close: list[Period]
    recheck: list[FinalInvoice]


def plan_work(
    cat: Catalog,
    finals: dict[str, ledger.FinalHeader],
    billed: dict[str, list[Line]],
    as_of: datetime,
    grace: timedelta,
    lookback: timedelta,
    preview: bool = False,
) -> tuple[list[_Work], int]:
    by_sub: dict[str, list[ledger.FinalHeader]] = defaultdict(list)
    for h in finals.values():
        by_sub[h.subscription_id].append(h)
    work, skipped = [], 0
    for sub in cat.subscriptions:
        todo = []
        # a preview treats the period running at `as_of` as if it ended now
        current = period_at(sub, as_of) if preview else None
        for p in [current] if current is not None else closable_periods(sub, as_of, grace):
            if make_invoice_id(p) in finals:
                skipped += 1
            else:
                todo.append(p)
        if not todo:
            continue
        recheck = []
        for h in by_sub.get(sub.id, []):
            if h.period_end < as_of - lookback:
                continue
            version = cat.book.plan(h.plan).version(h.price_version)
            recheck.append(
                FinalInvoice(h.invoice_id, h.period, h.plan, version, billed.get(h.invoice_id, []))
            )
        work.append(_Work(sub, todo, recheck))
    return work, skipped


def close(
    settings: Settings,
    cat: Catalog,
    as_of: datetime,
    grace: timedelta,
    lookback: timedelta = timedelta(days=100),
    dry_run: bool = False,
    batch: int = 20_000,
    preview: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[CloseResult, list[Invoice]]:
    t0 = time.perf_counter()
    db = settings.clickhouse_database
    # a dry run or preview writes nothing: the readonly user is enough
    role = "reader" if dry_run or preview else "close"
    ch = connect(settings, db, role=role)
    finals = {h.invoice_id: h for h in ledger.final_invoices(ch, db)}
    # every line billed so far for the final invoices a close re-checks, their own and the
    # adjustments referring to them (which carry the original period)
    billed: dict[str, list[Line]] = defaultdict(list)
    for iid, _, ln in ledger.lines(ch, db, period_end_from=as_of - lookback):
        target = ln.refers_to.split("/")[0] if ln.kind == "adjustment" else iid
        billed[target].append(ln)
    work, skipped = plan_work(cat, finals, billed, as_of, grace, lookback, preview)
    if not work:
        return CloseResult(0, 0, 0, skipped, 0, time.perf_counter() - t0), []

    prior_apps = ledger.applications(ch, db)
    grants_by_customer: dict[str, list[Grant]] = defaultdict(list)
    for g in cat.grants:
        grants_by_customer[g.customer_id].append(g)
    meter_versions = {m.id: m.version for m in cat.meters}

    # One pass over the stored events of the whole span, customer by customer.
    spans = [p for w in work for p in w.to_close] + [f.period for w in work for f in w.recheck]
    start, end = min(p.start for p in spans), max(p.end for p in spans)
    work_by_customer: dict[str, list[_Work]] = defaultdict(list)
    for w in work:
        work_by_customer[w.subscription.customer_id].append(w)

    invoices: list[Invoice] = []
    written = lines = adjustments = events_read = 0

    total_customers, done_customers = len(work_by_customer), 0

    def finish(customer: str, events: list[StoredEvent]) -> None:
        nonlocal adjustments, done_customers
        done_customers += 1
        if progress is not None:
            progress(done_customers, total_customers)
        for w in work_by_customer.pop(customer, []):
            sub = w.subscription
            adj: list[Line] = []
            for f in w.recheck:
                usage = period_usage(cat.meters, _within(events, f.period))
                plan = cat.book.plan(f.plan)
                adj.extend(adjustment_lines(f, usage, meter_versions, plan.currency))
            grants = grants_by_customer.get(customer, [])
            mine = {g.id for g in grants}
            apps = [a for a in prior_apps if a.grant_id in mine]
            for i, p in enumerate(w.to_close):
                plan, version = period_plan(sub, p, cat.book)
                inv = build_invoice(
                    p,
                    plan.id,
                    version,
                    plan.currency,
                    period_usage(cat.meters, _within(events, p)),
                    meter_versions,
                    adj if i == 0 else [],  # corrections go on the next invoice only
                    grants,
                    apps,
                )
                apps = [*apps, *inv.credits]
                adjustments += sum(1 for ln in inv.lines if ln.kind == "adjustment")
                invoices.append(inv)

    def flush() -> None:
        nonlocal written, lines
        if not dry_run and invoices[written:]:
            ledger.write_invoices(ch, db, invoices[written:], datetime.now(UTC))
        lines += sum(len(inv.lines) for inv in invoices[written:])
        written = len(invoices)

    current, bucket = None, []
    wanted = set(work_by_customer)
    for customer, ev in ledger.stored_events(connect(settings, db, role=role), db, start, end):
        if customer not in wanted:
            continue
        events_read += 1
        if customer != current:
            if current is not None:
                finish(current, bucket)
            current, bucket = customer, []
            if len(invoices) - written >= batch:
                flush()
        bucket.append(ev)
    if current is not None:
        finish(current, bucket)
    for customer in list(work_by_customer):  # subscriptions without any usage
        finish(customer, [])
    flush()
    result = CloseResult(
        len(invoices), lines, adjustments, skipped, events_read, time.perf_counter() - t0
    )
    return result, invoices


def _within(events: Sequence[StoredEvent], p: Period) -> list[StoredEvent]:
    lo, hi = int(p.start.timestamp() * 1000), int(p.end.timestamp() * 1000)
    return [e for e in events if lo <= e.timestamp_ms < hi]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_catalog_args(p)
    p.add_argument("--as-of", type=utc_time, default=None, help="UTC time (default: now)")
    p.add_argument("--grace-hours", type=float, default=24.0)
    p.add_argument(
        "--lookback-days",
        type=float,
        default=100.0,
        help="re-check final invoices this recent for late events",
    )
    p.add_argument("--dry-run", action="store_true", help="compute and print, write nothing")
    p.add_argument(
        "--preview",
        action="store_true",
        help="dry run as if today's periods had ended: the invoices the usage so far makes",
    )
    a = p.parse_args(argv)
    cat = load_catalog(a.subscriptions, a.prices, a.meters, a.credits)
    as_of = a.as_of or datetime.now(UTC)
    if a.preview:
        a.dry_run = True
    res, invoices = close(
        Settings(),
        cat,
        as_of,
        timedelta(hours=a.grace_hours),
        timedelta(days=a.lookback_days),
        a.dry_run,
        preview=a.preview,
        progress=Progress("close: customers", 0),
    )
    for inv in invoices[:20]:
        span = f"{inv.period.start:%Y-%m-%d}..{inv.period.end:%Y-%m-%d}"
        print(
            f"{inv.invoice_id}  {inv.customer_id}  {span}  {inv.currency} "
            f"{format_amount(inv.total, currency(inv.currency))}  "
            f"({len(inv.lines)} lines)"
        )
    if len(invoices) > 20:
        print(f"... and {len(invoices) - 20} more")
    verb = "would close" if a.dry_run else "closed"
    print(
        f"{verb} {res.invoices} invoices ({res.lines} lines, {res.adjustment_lines} adjustments), "
        f"{res.already_final} periods already final, {res.events_read} events read, "
        f"{res.seconds:.1f} s{' (dry run: nothing written)' if a.dry_run else ''}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
