"""Entitlements (pure): may a customer still use a metered feature this period?

The quota is the price book's (`quotas:` on a plan version, meterflow.alerts.Quota); `used` is
the period quantity the stream has rated so far. A hard-capped quota is used up when the
quantity reaches the limit -- the same instant the 100 % alert fires (alerts.crossed) -- and
from then on `allowed` is false. A soft quota and a meter without a quota never refuse: the
pipeline bills all usage; only the product can stop serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from meterflow.alerts import THRESHOLDS, Quota

ZERO = Decimal(0)


@dataclass(frozen=True)
class Entitlement:
    meter: str
    used: Decimal
    limit: Decimal | None  # None: no quota on this meter
    hard_cap: bool
    remaining: Decimal | None  # limit - used, never below zero; None without a quota
    allowed: bool
    # the highest alert threshold (percent) reached, 0 when none: the state the alerts show
    threshold_pct: int


def entitlement(meter: str, quota: Quota | None, used: Decimal) -> Entitlement:
    if quota is None:
        return Entitlement(meter, used, None, False, None, True, 0)
    remaining = max(quota.limit - used, ZERO)
    reached = [t for t in THRESHOLDS if used * 100 >= quota.limit * t]
    pct = reached[-1] if reached else 0
    allowed = not (quota.hard_cap and used >= quota.limit)
    return Entitlement(meter, used, quota.limit, quota.hard_cap, remaining, allowed, pct)
