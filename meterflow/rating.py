"""Real-time rating of usage windows (pure; the streaming job keeps `LineState` in keyed state).

A window firing carries its partial aggregates (`aggregation.Partials`). Per (customer, meter,
meter version) and billing period -- a charge prices the meter's total over all dimensions --
`LineState` keeps every (window, dimensions) group's partials with the amount rated to it so
far (`RatedWindow`), derives the period quantity after the firing
(`aggregation.combined_quantity`) and gives the window the telescoping amount
price(after) - price(before). A window that fires again (late but allowed) adds its own new
delta, so whatever the order of firings, a period's window amounts sum to price(period
quantity): the amount the close job bills from raw events. Windows that can no longer fire are
folded into one accumulator per period.

UNIQUE_COUNT cannot be derived from per-window distinct counts; those meters are priced at
close only (`rateable` says so). `Rater` finds the subscription, period, plan version and price
model that rate a customer's window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from meterflow.aggregation import Partials, combined_quantity, merged
from meterflow.alerts import Quota, crossed
from meterflow.meters import Aggregation
from meterflow.price_book import Plan, PlanVersion, PriceBook
from meterflow.pricing import PriceModel
from meterflow.subscriptions import (
    Period,
    Subscription,
    active_subscription,
    period_at,
    periods,
)


def rateable(aggregation: Aggregation) -> bool:
    return aggregation is not Aggregation.UNIQUE_COUNT


@dataclass
class RatedWindow:
    """One (window, dimensions) group's latest partials and the amount rated to it so far."""

    partials: Partials
    amount: Decimal = Decimal(0)


def period_price(model: PriceModel, quantity: Decimal) -> Decimal:
    """price() of a period quantity; for an unclamped percentage the fee base is linear in the
    quantity, so the per-event mapping can be applied to the aggregate."""
    return model.price(model.event_quantity(quantity))


def period_charge(
    model: PriceModel, aggregation: Aggregation, windows: Sequence[Partials]
) -> Decimal:
    """What the period costs so far: a charge with per-event bounds prices the sum of its
    events' fees (as the close does), any other the period quantity."""
    if model.needs_events:
        fees = merged(windows).fee_sum
        return model.price(Decimal(0) if fees is None else fees)
    return period_price(model, combined_quantity(aggregation, windows))


@dataclass
class LineState:
    """One key's open periods: period start (epoch s) -> (window start (epoch s), dimensions)
    -> partials and amount of windows that may still fire again, plus one accumulator per
    period of the windows that no longer can (`fold`). Folding keeps the state -- and the work
    per firing -- small however long the period: a month of minute windows would otherwise be
    43,200 entries per key, re-read at every firing."""

    periods: dict[int, dict[tuple[int, str], RatedWindow]] = field(default_factory=dict)
    closed: dict[int, Partials] = field(default_factory=dict)
    # period start -> windows starting before this were folded into `closed`
    folded_before: dict[int, int] = field(default_factory=dict)
    # period start -> quota thresholds (percent) already alerted
    alerted: dict[int, set[int]] = field(default_factory=dict)

    def fire(
        self,
        period_start_s: int,
        window: tuple[int, str],
        partials: Partials,
        aggregation: Aggregation,
        model: PriceModel,
    ) -> tuple[Decimal, Decimal]:
        """Record a window firing; return (the window's total amount, period quantity after).

        Raises FoldedWindow for a window already folded (it cannot fire again unless the
        watermark went backwards, i.e. after a restore; see decision 0006)."""
        if window[0] < self.folded_before.get(period_start_s, -(2**62)):
            raise FoldedWindow(window)
        windows = self.periods.setdefault(period_start_s, {})
        # The first firing of a period is measured from nothing, not from price(0): a flat fee
        # that is due at zero usage belongs to the period's first rated window.
        seen = self.all_windows(period_start_s)
        before = period_charge(model, aggregation, seen) if seen else None
        previous = windows.get(window)
        rated = RatedWindow(partials, previous.amount if previous is not None else Decimal(0))
        windows[window] = rated
        after_all = self.all_windows(period_start_s)
        after = period_charge(model, aggregation, after_all)
        rated.amount += after - (before if before is not None else Decimal(0))
        return rated.amount, combined_quantity(aggregation, after_all)

    def all_windows(self, period_start_s: int) -> list[Partials]:
        out = [w.partials for w in self.periods.get(period_start_s, {}).values()]
        if period_start_s in self.closed:
            out.append(self.closed[period_start_s])
        return out

    def fold(self, before_window_start_s: int) -> int:
        """Fold every window starting before the given time into its period's accumulator;
        return how many were folded."""
        n = 0
        for p, windows in self.periods.items():
            old = [w for w in windows if w[0] < before_window_start_s]
            if not old:
                continue
            acc = self.closed.get(p)
            folding = [windows.pop(w).partials for w in old]
            # amounts are not carried over: folded windows never change again
            self.closed[p] = merged(folding if acc is None else [acc, *folding])
            n += len(old)
            self.folded_before[p] = max(
                self.folded_before.get(p, before_window_start_s), before_window_start_s
            )
        return n

    def period_total_events(self, period_start_s: int) -> int:
        return sum(w.event_count for w in self.all_windows(period_start_s))

    def forget_before(self, period_start_s: int) -> None:
        for p in [p for p in self.periods if p < period_start_s]:
            del self.periods[p]
            self.closed.pop(p, None)
            self.folded_before.pop(p, None)
        for p in [p for p in self.alerted if p < period_start_s]:
            del self.alerted[p]

    def alerts_due(self, period_start_s: int, quantity: Decimal, quota: Quota) -> list[int]:
        """Thresholds reached now and not alerted before in this period; marks them alerted."""
        fired = self.alerted.setdefault(period_start_s, set())
        due = crossed(quantity, quota, fired)
        fired.update(due)
        return due


class FoldedWindow(Exception):
    pass


@dataclass(frozen=True)
class RatingContext:
    subscription: Subscription
    period: Period
    plan: str
    price_version: int
    currency: str
    model: PriceModel
    quota: Quota | None = None


class Rater:
    """Which subscription, period, plan version and price model rate a customer's window."""

    def __init__(self, subscriptions: Sequence[Subscription], book: PriceBook) -> None:
        self._subs: dict[str, list[Subscription]] = {}
        for s in subscriptions:
            self._subs.setdefault(s.customer_id, []).append(s)
        self._book = book

    def context(self, customer_id: str, meter: str, at: datetime) -> RatingContext | None:
        """None when the customer has no subscription at `at` or its plan has no charge for
        the meter: that usage is metered but not billed."""
        sub = active_subscription(self._subs.get(customer_id, []), at)
        if sub is None:
            return None
        period = period_at(sub, at)
        if period is None:
            return None
        plan, version = period_plan(sub, period, self._book)
        charge = version.charges.get(meter)
        if charge is None:
            return None
        return RatingContext(
            sub,
            period,
            plan.id,
            version.version,
            plan.currency.code,
            charge.model,
            version.quotas.get(meter),
        )


def period_plan(sub: Subscription, period: Period, book: PriceBook) -> tuple[Plan, PlanVersion]:
    """The plan billed for a period and the version that prices it: the one in force when the
    period starts prices the whole period."""
    plan = book.plan(sub.plan_for(period))
    return plan, plan.version_in_force(period.start)


@dataclass(frozen=True)
class PricedPeriod:
    """One billing period of a subscription with what prices it: the rows of the streaming
    job's period table (jobs/streaming/rating.py). Usage at an instant in [start, end) of the
    customer is rated by `plan` version `price_version` in `currency`."""

    customer_id: str
    start: datetime
    end: datetime
    subscription_id: str
    plan: str
    price_version: int
    currency: str


def priced_periods(
    subscriptions: Sequence[Subscription], book: PriceBook, until: datetime
) -> list[PricedPeriod]:
    """Every period starting before `until`, sorted by (customer, start): the same answer as
    `Rater.context` gives for any instant before `until`, as a table a lookup can search."""
    out = []
    for sub in subscriptions:
        for period in periods(sub, until):
            plan, version = period_plan(sub, period, book)
            out.append(
                PricedPeriod(
                    sub.customer_id,
                    period.start,
                    period.end,
                    sub.id,
                    plan.id,
                    version.version,
                    plan.currency.code,
                )
            )
    out.sort(key=lambda p: (p.customer_id, p.start))
    return out
