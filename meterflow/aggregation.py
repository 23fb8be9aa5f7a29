"""From a window's partial aggregates to the meter's quantity (pure, Decimal).

The streaming job computes COUNT, SUM, MIN, MAX, COUNT DISTINCT and MAX(latest key) per window
in Flink SQL; this turns them into the one number the meter bills on.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from meterflow.decoding import latest_value
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
            # One rounding, half-even to the stored scale (12 places).
            total = _required(p.q_sum, aggregation)
            mean = WIDE.divide(total, p.event_count)
            return mean.quantize(QUANTUM, rounding=ROUND_HALF_EVEN, context=WIDE)
        case Aggregation.LATEST:
            if p.latest_key is None:
                raise ValueError("LATEST window without a latest key")
            return latest_value(p.latest_key)
    raise ValueError(f"unknown aggregation {aggregation!r}")


def _required(v: Decimal | None, aggregation: Aggregation) -> Decimal:
    if v is None:
        raise ValueError(f"{aggregation.value} window without quantities")
    return v
