"""A window's partial aggregates and the meter quantity they give (pure, Decimal).

The streaming job computes COUNT, SUM, MIN, MAX, COUNT DISTINCT, MAX(latest key) and the sum
of per-event fees per window in Flink SQL: `Partials`. This module turns the partials of one
window, or of several windows merged, into the one number the meter bills on, and defines the
LATEST key that string MAX orders by (time, event id).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from meterflow.events import QUANTUM, WIDE
from meterflow.meters import Aggregation


@dataclass(frozen=True)
class Partials:
    event_count: int
    q_sum: Decimal | None = None
    q_min: Decimal | None = None
    q_max: Decimal | None = None
    unique_count: int | None = None
    latest_key: str | None = None
    # For a charge with per-event bounds: decode computes each event's clamped fee and only
    # their sum travels, because the clamp cannot be applied to an aggregate.
    fee_sum: Decimal | None = None


def latest_key(timestamp_ms: int, event_id: str, quantity: Decimal) -> str:
    # Fixed-width time, then NUL after the id: NUL sorts below every other character, so string
    # order equals the order of (timestamp, event_id) even when one id is a prefix of another
    # ("e1" < "e10"), and SQL's string MAX picks the latest event.
    return f"{timestamp_ms:015d}|{event_id}\x00{quantity}"


def latest_value(key: str) -> Decimal:
    return Decimal(key.rsplit("\x00", 1)[1])


def window_quantity(aggregation: Aggregation, p: Partials) -> Decimal:
    match aggregation:
        case Aggregation.COUNT:
            return Decimal(p.event_count)
        case Aggregation.UNIQUE_COUNT:
            return Decimal(p.unique_count or 0)
        case Aggregation.SUM:
            return _required(p.q_sum, aggregation)
        case Aggregation.MIN:
            return _required(p.q_min, aggregation)
        case Aggregation.MAX:
            return _required(p.q_max, aggregation)
        case Aggregation.AVG:
            # One rounding, half-even to the stored scale (12 places), as the close rounds.
            total = _required(p.q_sum, aggregation)
            mean = WIDE.divide(total, p.event_count)
            return mean.quantize(QUANTUM, rounding=ROUND_HALF_EVEN, context=WIDE)
        case Aggregation.LATEST:
            if p.latest_key is None:
                raise ValueError("LATEST window without a latest key")
            return latest_value(p.latest_key)
    raise ValueError(f"unknown aggregation {aggregation!r}")


def combined_quantity(aggregation: Aggregation, windows: Sequence[Partials]) -> Decimal:
    """The quantity over several windows: COUNT and SUM add up, MIN/MAX take the extreme, AVG
    divides the summed sums by the summed counts, LATEST takes the greatest latest key."""
    if len(windows) == 1:
        return window_quantity(aggregation, windows[0])
    if aggregation is Aggregation.UNIQUE_COUNT or not windows:
        raise ValueError(f"{aggregation.value} cannot be derived from {len(windows)} windows")
    return window_quantity(aggregation, merged(windows))


def merged(windows: Iterable[Partials]) -> Partials:
    """Several windows' partials as one.

    The distinct count is dropped: two windows' distinct keys may overlap, so their counts do
    not add up."""
    n = 0
    q_sum: Decimal | None = None
    q_min: Decimal | None = None
    q_max: Decimal | None = None
    lk: str | None = None
    fee_sum: Decimal | None = None
    for w in windows:
        n += w.event_count
        if w.q_sum is not None:
            q_sum = w.q_sum if q_sum is None else WIDE.add(q_sum, w.q_sum)
        if w.q_min is not None:
            q_min = w.q_min if q_min is None else min(q_min, w.q_min)
        if w.q_max is not None:
            q_max = w.q_max if q_max is None else max(q_max, w.q_max)
        if w.latest_key is not None:
            lk = w.latest_key if lk is None else max(lk, w.latest_key)
        if w.fee_sum is not None:
            fee_sum = w.fee_sum if fee_sum is None else WIDE.add(fee_sum, w.fee_sum)
    return Partials(n, q_sum, q_min, q_max, None, lk, fee_sum)


def _required(v: Decimal | None, aggregation: Aggregation) -> Decimal:
    if v is None:
        raise ValueError(f"{aggregation.value} window without quantities")
    return v
