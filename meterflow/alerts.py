"""Usage alerts (pure): quota thresholds crossed by a customer's running period usage.

A plan version may give a meter a quota (`quotas:` in the price book): a limit in the meter's
units and a hard-cap flag. When the period quantity reaches 75, 90 or 100 % of the limit an alert
fires -- once per (customer, meter, period, threshold): the streaming job keeps the fired
thresholds in checkpointed state, and the ClickHouse table is keyed the same way, so replays and
restarts never fire twice. A hard-cap alert at 100 % tells the product to stop serving; the
pipeline itself never drops usage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

THRESHOLDS = (75, 90, 100)


@dataclass(frozen=True)
class Quota:
    limit: Decimal
    hard_cap: bool = False


def crossed(quantity: Decimal, quota: Quota, fired: Iterable[int]) -> list[int]:
    """Thresholds (percent) reached by `quantity` and not fired yet, lowest first."""
    done = set(fired)
    return [t for t in THRESHOLDS if t not in done and quantity * 100 >= quota.limit * t]


@dataclass(frozen=True)
class Alert:
    customer_id: str
    subscription_id: str
    meter: str
    period_start: datetime
    period_end: datetime
    threshold_pct: int
    quantity: Decimal
    limit: Decimal
    hard_cap: bool

    @property
    def alert_id(self) -> str:
        return (
            f"{self.customer_id}/{self.meter}/{self.period_start:%Y%m%dT%H%M}/{self.threshold_pct}"
        )

    @property
    def capped(self) -> bool:
        """The customer hit a hard cap: the product should stop serving this meter."""
        return self.hard_cap and self.threshold_pct >= 100
