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
from meterflow.pricing import PriceBook, PriceModel, has_per_event_bounds
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
    -> partials."""

    periods: dict[int, dict[tuple[int, str], WindowPartials]] = field(default_factory=dict)
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
        """Record a window firing; return (the window's total amount, period quantity after)."""
        windows = self.periods.setdefault(period_start_s, {})
        # The first firing of a period is measured from nothing, not from price(0): a flat fee
        # that is due at zero usage belongs to the period's first rated window.
        before = period_charge(model, aggregation, list(windows.values())) if windows else None
        previous = windows.get(window)
        partials.amount = previous.amount if previous is not None else Decimal(0)
        windows[window] = partials
        after = period_charge(model, aggregation, list(windows.values()))
        partials.amount += after - (before if before is not None else Decimal(0))
        return partials.amount, period_quantity(aggregation, list(windows.values()))

    def forget_before(self, period_start_s: int) -> None:
        for p in [p for p in self.periods if p < period_start_s]:
            del self.periods[p]
        for p in [p for p in self.alerted if p < period_start_s]:
            del self.alerted[p]

    def alerts_due(self, period_start_s: int, quantity: Decimal, quota: Quota) -> list[int]:
        """Thresholds reached now and not alerted before in this period; marks them alerted."""
        fired = self.alerted.setdefault(period_start_s, set())
        due = crossed(quantity, quota, fired)
        fired.update(due)
        return due


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
