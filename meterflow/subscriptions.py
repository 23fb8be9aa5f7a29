"""Customers' subscriptions (YAML) and their billing periods.

Periods are half-open [start, end) in UTC, numbered from 0. Their boundaries come from the anchor:

- calendar: the 1st of a month at 00:00 UTC, every `period_months` months counted from January
  (quarterly: Jan/Apr/Jul/Oct 1st). A subscription starting between two boundaries has a partial
  first period from its start to the next boundary.
- anniversary: the start's day of month at 00:00 UTC, every `period_months` months from the
  start's month. In a shorter month the boundary is that month's last day, and every boundary is
  derived from the original day so it never drifts: a Jan 31 start gives Feb 28 (29 in leap
  years), Mar 31, Apr 30, ...

The first period always begins at `start`; the last ends at `end` when the subscription ends
mid-period. Nothing is prorated here.

Plan changes take effect at a period boundary: a change requested at time t applies from the first
period that starts at or after t. A change requested exactly on a boundary therefore applies to
the period starting there, and one requested mid-period applies from the next period on. When
several changes apply to a period, the latest requested wins.

Period lookups are pure month arithmetic, with no walk from the start and no caches, because the
streaming job calls `period_at` per usage window and a close run visits every subscription.
"""

from __future__ import annotations

from calendar import monthrange
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from itertools import pairwise
from pathlib import Path
from typing import Any

from meterflow.definitions import (
    ItemContext,
    identifier,
    item_list,
    optional_later_timestamp,
    read_yaml,
    required_name,
    required_timestamp,
    unique_ids,
    unknown_fields,
)
from meterflow.identifiers import NAME
from meterflow.settings import REPO_ROOT
from meterflow.utc import require_utc

DEFAULT_SUBSCRIPTIONS_FILE = REPO_ROOT / "schemas" / "customers" / "default.yaml"
PERIOD_MONTHS = (1, 3, 6, 12)


class Anchor(StrEnum):
    CALENDAR = "calendar"
    ANNIVERSARY = "anniversary"


class SubscriptionConfigError(ValueError):
    pass


@dataclass(frozen=True)
class PlanChange:
    plan: str
    requested_at: datetime

    def __post_init__(self) -> None:
        at = require_utc(self.requested_at, "PlanChange.requested_at")
        object.__setattr__(self, "requested_at", at)


@dataclass(frozen=True)
class Period:
    subscription_id: str
    customer_id: str
    start: datetime
    end: datetime
    index: int


@dataclass(frozen=True)
class Subscription:
    id: str
    customer_id: str
    plan: str
    start: datetime
    anchor: Anchor = Anchor.CALENDAR
    period_months: int = 1
    end: datetime | None = None
    plan_changes: tuple[PlanChange, ...] = ()

    def __post_init__(self) -> None:
        # Normalised once so that day-of-month arithmetic below is always done in UTC.
        start = require_utc(self.start, f"subscription {self.id!r}: start")
        object.__setattr__(self, "start", start)
        if self.end is not None:
            end = require_utc(self.end, f"subscription {self.id!r}: end")
            if end <= start:
                raise ValueError(f"subscription {self.id!r}: end {end} is not after start {start}")
            object.__setattr__(self, "end", end)
        months = self.period_months
        if isinstance(months, bool) or not isinstance(months, int) or months not in PERIOD_MONTHS:
            raise ValueError(
                f"subscription {self.id!r}: period_months {self.period_months!r} "
                f"not in {PERIOD_MONTHS}"
            )
        object.__setattr__(self, "anchor", Anchor(self.anchor))
        object.__setattr__(self, "plan_changes", tuple(self.plan_changes))
        for change in self.plan_changes:
            if change.requested_at < start:
                raise ValueError(f"subscription {self.id!r}: plan change before start: {change}")

    def plan_for(self, period: Period) -> str:
        """The plan billed for `period` (see the module docstring for when changes apply)."""
        if period.subscription_id != self.id:
            raise ValueError(f"period of {period.subscription_id!r} given to {self.id!r}")
        plan, since = self.plan, None
        for change in self.plan_changes:
            at = change.requested_at
            if at <= period.start and (since is None or at >= since):
                plan, since = change.plan, at
        return plan


# ---------------------------------------------------------------------------------- periods


def _month_index(at: datetime) -> int:
    return at.year * 12 + at.month - 1


def _origin(sub: Subscription) -> int:
    """Month index of boundary 0, the last boundary at or before `start`."""
    m = _month_index(sub.start)
    # 12 is a multiple of every allowed period length, so this grid is aligned to January.
    return m - m % sub.period_months if sub.anchor is Anchor.CALENDAR else m


def _boundary(sub: Subscription, origin: int, k: int) -> datetime:
    year, month0 = divmod(origin + k * sub.period_months, 12)
    if sub.anchor is Anchor.CALENDAR:
        day = 1
    else:
        day = min(sub.start.day, monthrange(year, month0 + 1)[1])
    return datetime(year, month0 + 1, day, tzinfo=UTC)


def _period(sub: Subscription, origin: int, k: int) -> Period | None:
    lo = sub.start if k == 0 else _boundary(sub, origin, k)
    if sub.end is not None and lo >= sub.end:
        return None
    hi = _boundary(sub, origin, k + 1)
    if sub.end is not None and sub.end < hi:
        hi = sub.end
    return Period(sub.id, sub.customer_id, lo, hi, k)


def period_at(sub: Subscription, at: datetime) -> Period | None:
    """The period containing `at`; None before the start or at/after the end."""
    at = require_utc(at, "at")
    if at < sub.start or (sub.end is not None and at >= sub.end):
        return None
    origin = _origin(sub)
    k = (_month_index(at) - origin) // sub.period_months
    # An anniversary boundary can fall later in the same month as `at`.
    if k > 0 and _boundary(sub, origin, k) > at:
        k -= 1
    return _period(sub, origin, k)


def periods(sub: Subscription, until: datetime) -> Iterator[Period]:
    """All periods starting before `until`, in order."""
    until = require_utc(until, "until")
    return _periods(sub, until)


def _periods(sub: Subscription, until: datetime) -> Iterator[Period]:
    origin, k = _origin(sub), 0
    while (p := _period(sub, origin, k)) is not None and p.start < until:
        yield p
        k += 1


def closable_periods(sub: Subscription, as_of: datetime, grace: timedelta) -> list[Period]:
    """Periods whose end + grace <= as_of: late usage can no longer change them."""
    if grace < timedelta(0):
        raise ValueError(f"grace must not be negative, got {grace}")
    as_of = require_utc(as_of, "as_of")
    out = []
    for p in _periods(sub, as_of):
        if p.end + grace > as_of:
            break
        out.append(p)
    return out


# -------------------------------------------------------------------------------- customers


def subscriptions_by_customer(subs: Iterable[Subscription]) -> dict[str, list[Subscription]]:
    """Subscriptions grouped by customer, each group ordered by start."""
    out: dict[str, list[Subscription]] = {}
    for s in subs:
        out.setdefault(s.customer_id, []).append(s)
    for group in out.values():
        group.sort(key=lambda s: (s.start, s.id))
    return out


def active_subscription(
    subs_of_customer: Iterable[Subscription], at: datetime
) -> Subscription | None:
    """The subscription running at `at`, if any; raises if several do (they must not overlap)."""
    at = require_utc(at, "at")
    found = [s for s in subs_of_customer if s.start <= at and (s.end is None or at < s.end)]
    if len(found) > 1:
        raise ValueError(f"overlapping subscriptions at {at}: {sorted(s.id for s in found)}")
    return found[0] if found else None


def _overlap(group: list[Subscription]) -> tuple[Subscription, Subscription] | None:
    for prev, nxt in pairwise(group):
        if prev.end is None or prev.end > nxt.start:
            return prev, nxt
    return None


# ---------------------------------------------------------------------------------- loading


def _file_ctx(source: str) -> ItemContext:
    return ItemContext(source, SubscriptionConfigError, "subscriptions file")


_SUB_KEYS = {
    "id",
    "customer_id",
    "plan",
    "start",
    "anchor",
    "period_months",
    "end",
    "plan_changes",
}


def _plan_changes(ctx: ItemContext, raw: Any, start: datetime) -> tuple[PlanChange, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ctx.error("plan_changes", "must be a list of {plan, requested_at}")
    out = []
    for i, item in enumerate(raw):
        fld = f"plan_changes[{i}]"
        if not isinstance(item, dict) or set(item) != {"plan", "requested_at"}:
            raise ctx.error(fld, f"must be exactly {{plan, requested_at}}, got {item!r}")
        at = required_timestamp(ctx, f"{fld}.requested_at", item["requested_at"])
        if at < start:
            raise ctx.error(f"{fld}.requested_at", f"{at.isoformat()} is before start")
        out.append(PlanChange(identifier(ctx, f"{fld}.plan", item["plan"], NAME), at))
    return tuple(out)


def parse_subscription(raw: Any, source: str) -> Subscription:
    if not isinstance(raw, dict):
        raise _file_ctx(source).error("subscriptions", f"each entry must be a mapping, got {raw!r}")
    ctx = _file_ctx(source).item("subscription", str(raw.get("id", "?")))
    unknown_fields(ctx, raw, _SUB_KEYS)
    # Subscription and customer ids are data (`sub-cust-042`), not names: free-form.
    sid = required_name(ctx, "id", raw.get("id"))
    try:
        anchor = Anchor(str(raw.get("anchor", "calendar")).lower())
    except ValueError:
        raise ctx.error(
            "anchor", f"unknown {raw.get('anchor')!r} (one of {[a.value for a in Anchor]})"
        ) from None
    months = raw.get("period_months", 1)
    if isinstance(months, bool) or not isinstance(months, int) or months not in PERIOD_MONTHS:
        raise ctx.error("period_months", f"must be one of {list(PERIOD_MONTHS)}, got {months!r}")
    start = required_timestamp(ctx, "start", raw.get("start"))
    end = optional_later_timestamp(ctx, raw, "end", "start", start)
    return Subscription(
        id=sid,
        customer_id=required_name(ctx, "customer_id", raw.get("customer_id")),
        plan=identifier(ctx, "plan", raw.get("plan"), NAME),
        start=start,
        anchor=anchor,
        period_months=months,
        end=end,
        plan_changes=_plan_changes(ctx, raw.get("plan_changes"), start),
    )


def parse_subscriptions(data: Any, source: str) -> list[Subscription]:
    ctx = _file_ctx(source)
    subs = [parse_subscription(s, source) for s in item_list(ctx, data, "subscriptions")]
    unique_ids(ctx, "subscription", (s.id for s in subs))
    for customer, group in subscriptions_by_customer(subs).items():
        clash = _overlap(group)
        if clash:
            prev, nxt = clash
            raise ctx.item("subscription", nxt.id).error(
                "start", f"overlaps subscription {prev.id!r} of customer {customer!r}"
            )
    return subs


def load_subscriptions(path: Path | str = DEFAULT_SUBSCRIPTIONS_FILE) -> list[Subscription]:
    return parse_subscriptions(read_yaml(path, SubscriptionConfigError), str(Path(path)))
