"""Real-time rating of usage windows (pure; the streaming job keeps `LineState` in keyed state).

A window firing carries its partial aggregates. Per (customer, meter, meter version) and
billing period -- a charge prices the meter's total over all dimensions -- we keep every
(window, dimensions) group's partials, derive the period quantity after the firing,
and give the window the telescoping amount price(after) - price(before). A window that fires
again (late but allowed) adds its own new delta, so whatever the order of firings, a period's
window amounts sum to price(period quantity): the amount the close job bills from raw events.

Period quantity from windows: COUNT and SUM add up, MIN/MAX take the extreme, AVG divides the
summed sums by the summed counts (rounded once, like the close), LATEST takes the greatest
latest-key. UNIQUE_COUNT cannot be derived from per-window distinct counts; those meters are
priced at close only (`rateable` says so).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

from meterflow.alerts import Quota, crossed
from meterflow.decoding import latest_value
from meterflow.events import QUANTUM, WIDE
from meterflow.meters import Aggregation, Meter
from meterflow.price_book import PriceBook
from meterflow.pricing import PriceModel, has_per_event_bounds
from meterflow.subscriptions import Period, Subscription, active_subscription, period_at


def rateable(aggregation: Aggregation, model: PriceModel) -> bool:
    return aggregation is not Aggregation.UNIQUE_COUNT


@dataclass
class WindowPartials:
    n: int
    q_sum: Decimal | None
    q_min: Decimal | None
    q_max: Decimal | None
    latest_key: str | None
    amount: Decimal = Decimal(0)
    # sum of the window's per-event fees, for a charge with per-event bounds (decode computes
    # each event's clamped fee; only the sum travels)
    fee_sum: Decimal | None = None


def period_quantity(aggregation: Aggregation, windows: Sequence[WindowPartials]) -> Decimal:
    match aggregation:
        case Aggregation.COUNT:
            return Decimal(sum(w.n for w in windows))
        case Aggregation.SUM:
            return _sum(w.q_sum for w in windows)
        case Aggregation.MIN:
            return min(w.q_min for w in windows if w.q_min is not None)
        case Aggregation.MAX:
            return max(w.q_max for w in windows if w.q_max is not None)
        case Aggregation.AVG:
            mean = WIDE.divide(_sum(w.q_sum for w in windows), sum(w.n for w in windows))
            return mean.quantize(QUANTUM, rounding=ROUND_HALF_EVEN, context=WIDE)
        case Aggregation.LATEST:
            return latest_value(max(w.latest_key for w in windows if w.latest_key is not None))
    raise ValueError(f"{aggregation.value} cannot be derived from windows")


def period_price(model: PriceModel, quantity: Decimal) -> Decimal:
    """price() of a period quantity; for an unclamped percentage the fee base is linear in the
    quantity, so the per-event mapping can be applied to the aggregate."""
    return model.price(model.event_quantity(quantity))


def period_charge(
    model: PriceModel, aggregation: Aggregation, windows: Sequence[WindowPartials]
) -> Decimal:
    """What the period costs so far: a charge with per-event bounds prices the sum of its
    events' fees (as the close does), any other the period quantity."""
    if has_per_event_bounds(model):
        return model.price(_sum(w.fee_sum for w in windows))
    return period_price(model, period_quantity(aggregation, windows))


def _sum(values: Iterable[Decimal | None]) -> Decimal:
    total = Decimal(0)
    for v in values:
        if v is not None:
            total = WIDE.add(total, v)
    return total


@dataclass
class LineState:
    """One key's open periods: period start (epoch s) -> (window start (epoch s), dimensions)
    -> partials of windows that may still fire again, plus one accumulator per period of the
    windows that no longer can (`fold`). Folding keeps the state -- and the work per firing --
    small however long the period: a month of minute windows would otherwise be 43,200
    entries per key, re-read at every firing."""

    periods: dict[int, dict[tuple[int, str], WindowPartials]] = field(default_factory=dict)
    closed: dict[int, WindowPartials] = field(default_factory=dict)
    # period start -> windows starting before this were folded into `closed`
    folded_before: dict[int, int] = field(default_factory=dict)
    # period start -> quota thresholds (percent) already alerted
    alerted: dict[int, set[int]] = field(default_factory=dict)

    def fire(
        self,
        period_start_s: int,
        window: tuple[int, str],
        partials: WindowPartials,
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
        partials.amount = previous.amount if previous is not None else Decimal(0)
        windows[window] = partials
        after_all = self.all_windows(period_start_s)
        after = period_charge(model, aggregation, after_all)
        partials.amount += after - (before if before is not None else Decimal(0))
        return partials.amount, period_quantity(aggregation, after_all)

    def all_windows(self, period_start_s: int) -> list[WindowPartials]:
        out = list(self.periods.get(period_start_s, {}).values())
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
            for w in old:
                acc = windows.pop(w) if acc is None else _combine(acc, windows.pop(w))
                n += 1
            assert acc is not None
            self.closed[p] = acc
            self.folded_before[p] = max(
                self.folded_before.get(p, before_window_start_s), before_window_start_s
            )
        return n

    def period_total_events(self, period_start_s: int) -> int:
        return sum(w.n for w in self.all_windows(period_start_s))

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


def _combine(a: WindowPartials, b: WindowPartials) -> WindowPartials:
    """Two windows' partials as one (amounts are not combined: folded windows never change)."""

    def pick(x, y, f):
        return y if x is None else x if y is None else f(x, y)

    return WindowPartials(
        a.n + b.n,
        pick(a.q_sum, b.q_sum, WIDE.add),
        pick(a.q_min, b.q_min, min),
        pick(a.q_max, b.q_max, max),
        pick(a.latest_key, b.latest_key, max),
        Decimal(0),
        pick(a.fee_sum, b.fee_sum, WIDE.add),
    )


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
        plan_id = sub.plan_for(period)
        plan = self._book.plan(plan_id)
        # The version in force when the period starts prices the whole period.
        version = plan.version_in_force(period.start)
        charge = version.charges.get(meter)
        if charge is None:
            return None
        return RatingContext(
            sub,
            period,
            plan_id,
            version.version,
            plan.currency.code,
            charge.model,
            version.quotas.get(meter),
        )


def meter_index(meters: Sequence[Meter]) -> Mapping[str, Meter]:
    return {m.id: m for m in meters}
