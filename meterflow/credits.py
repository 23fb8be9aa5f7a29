"""Prepaid credit grants (YAML) and how they pay invoices.

A grant's remaining balance is its amount minus the applications recorded against it. A grant is
usable at `at` when effective_at <= at < expires_at (no expires_at: never expires) and something
remains. Grants are drawn in a fixed order: priority ascending (lower first), then the earliest
expiry (never-expiring last), then effective_at, then id, so the same inputs always give the same
applications.

The ledger keys applications by (grant, invoice) and a redone close rewrites the same keys, so
`apply_credits` leaves out prior applications to the invoice being paid: rerunning it gives the
same applications instead of drawing the grants down a second time.

Amounts are already rounded money and are not rounded here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from meterflow.definitions import (
    ItemContext,
    decimal,
    item_list,
    optional_later_timestamp,
    read_yaml,
    required_name,
    required_timestamp,
    unique_ids,
    unknown_fields,
)
from meterflow.settings import REPO_ROOT
from meterflow.utc import require_utc

DEFAULT_CREDITS_FILE = REPO_ROOT / "schemas" / "customers" / "credits.yaml"
_CURRENCY = re.compile(r"[A-Z]{3}")
ZERO = Decimal(0)


class CreditConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Grant:
    id: str
    customer_id: str
    amount: Decimal
    currency: str
    effective_at: datetime
    expires_at: datetime | None = None
    priority: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.amount, Decimal) or not self.amount.is_finite() or self.amount <= 0:
            raise ValueError(
                f"grant {self.id!r}: amount must be a Decimal > 0, got {self.amount!r}"
            )
        effective = require_utc(self.effective_at, f"grant {self.id!r}: effective_at")
        object.__setattr__(self, "effective_at", effective)
        if self.expires_at is not None:
            expires = require_utc(self.expires_at, f"grant {self.id!r}: expires_at")
            if expires <= effective:
                raise ValueError(f"grant {self.id!r}: expires_at is not after effective_at")
            object.__setattr__(self, "expires_at", expires)

    def in_effect(self, at: datetime) -> bool:
        return self.effective_at <= at and (self.expires_at is None or at < self.expires_at)


@dataclass(frozen=True)
class Application:
    grant_id: str
    invoice_id: str
    amount: Decimal


@dataclass(frozen=True)
class Balance:
    """What is left of a grant at some instant.

    `remaining` is the unconsumed amount whether or not the grant can be used; `usable` says
    whether it can pay an invoice at that instant (in effect and something left), and `expired`
    tells an expired grant apart from one not yet in effect.
    """

    grant_id: str
    remaining: Decimal
    usable: bool
    expired: bool

    @property
    def usable_amount(self) -> Decimal:
        return self.remaining if self.usable else ZERO


def _applied(grants: list[Grant], applications: Iterable[Application]) -> dict[str, Decimal]:
    applied = {g.id: ZERO for g in grants}
    if len(applied) != len(grants):
        raise ValueError("grant ids are not unique")
    for a in applications:
        # Applications to other customers' grants may be passed along; they change nothing here.
        if a.grant_id in applied:
            applied[a.grant_id] += a.amount
    for g in grants:
        if not ZERO <= applied[g.id] <= g.amount:
            raise ValueError(f"grant {g.id!r}: applications total {applied[g.id]} of {g.amount}")
    return applied


def _draw_order(g: Grant) -> tuple[int, bool, datetime, datetime, str]:
    return (g.priority, g.expires_at is None, g.expires_at or g.effective_at, g.effective_at, g.id)


def apply_credits(
    grants: Iterable[Grant],
    prior_applications: Iterable[Application],
    amount_due: Decimal,
    at: datetime,
    invoice_id: str,
    currency: str,
    *,
    customer_id: str | None = None,
) -> list[Application]:
    """The applications paying as much of `amount_due` as the customer's usable grants allow.

    `grants` must be one customer's, or `customer_id` picks that customer's out of a larger list.
    `prior_applications` are every recorded application; those to `invoice_id` are ignored (see
    the module docstring). The result never exceeds `amount_due` nor any grant's balance.
    """
    at = require_utc(at, "at")
    if not isinstance(amount_due, Decimal) or not amount_due.is_finite():
        raise ValueError(f"amount_due must be a finite Decimal, got {amount_due!r}")
    mine = [g for g in grants if customer_id is None or g.customer_id == customer_id]
    customers = {g.customer_id for g in mine}
    if len(customers) > 1:
        raise ValueError(f"grants of several customers {sorted(customers)}: pass customer_id")
    if amount_due <= 0:
        return []
    applied = _applied(mine, (a for a in prior_applications if a.invoice_id != invoice_id))
    eligible = sorted(
        (g for g in mine if g.currency == currency and g.in_effect(at)), key=_draw_order
    )
    out: list[Application] = []
    left = amount_due
    for g in eligible:
        take = min(g.amount - applied[g.id], left)
        if take > 0:
            out.append(Application(g.id, invoice_id, take))
            left -= take
        if left == 0:
            break
    return out


def balances(
    grants: Iterable[Grant], applications: Iterable[Application], at: datetime
) -> dict[str, Balance]:
    """Each grant's Balance at `at`, keyed by grant id, in the order the grants were given."""
    at = require_utc(at, "at")
    grants = list(grants)
    applied = _applied(grants, applications)
    out = {}
    for g in grants:
        remaining = g.amount - applied[g.id]
        out[g.id] = Balance(
            grant_id=g.id,
            remaining=remaining,
            usable=g.in_effect(at) and remaining > 0,
            expired=g.expires_at is not None and at >= g.expires_at,
        )
    return out


# ---------------------------------------------------------------------------------- loading


def _file_ctx(source: str) -> ItemContext:
    return ItemContext(source, CreditConfigError, "credits file")


_GRANT_KEYS = {"id", "customer_id", "amount", "currency", "effective_at", "expires_at", "priority"}


def parse_grant(raw: Any, source: str) -> Grant:
    if not isinstance(raw, dict):
        raise _file_ctx(source).error("grants", f"each grant must be a mapping, got {raw!r}")
    ctx = _file_ctx(source).item("grant", str(raw.get("id", "?")))
    unknown_fields(ctx, raw, _GRANT_KEYS)
    # Grant and customer ids are data (`grant-cust-000-welcome`), not names: free-form.
    gid = required_name(ctx, "id", raw.get("id"))
    currency = required_name(ctx, "currency", raw.get("currency"))
    if not _CURRENCY.fullmatch(currency):
        raise ctx.error("currency", f"must be an upper-case ISO 4217 code, got {currency!r}")
    priority = raw.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ctx.error("priority", f"must be an integer, got {priority!r}")
    effective = required_timestamp(ctx, "effective_at", raw.get("effective_at"))
    expires = optional_later_timestamp(ctx, raw, "expires_at", "effective_at", effective)
    return Grant(
        id=gid,
        customer_id=required_name(ctx, "customer_id", raw.get("customer_id")),
        amount=decimal(ctx, "amount", raw.get("amount"), positive=True),
        currency=currency,
        effective_at=effective,
        expires_at=expires,
        priority=priority,
    )


def parse_grants(data: Any, source: str) -> list[Grant]:
    ctx = _file_ctx(source)
    grants = [parse_grant(g, source) for g in item_list(ctx, data, "grants")]
    unique_ids(ctx, "grant", (g.id for g in grants))
    return grants


def load_grants(path: Path | str = DEFAULT_CREDITS_FILE) -> list[Grant]:
    return parse_grants(read_yaml(path, CreditConfigError), str(Path(path)))
