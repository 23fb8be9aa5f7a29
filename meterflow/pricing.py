"""Price models: one small class per model behind `price(quantity) -> amount`.

Pure domain code. Every model returns the *unrounded* amount in currency units: rounding happens
once per invoice line (meterflow.money.round_amount), and the minimum commitment true-up is
applied by the invoice code after that (`true_up`).

Tier convention, shared by Graduated and Volume: `up_to` is an inclusive upper bound, so a
quantity equal to `up_to` belongs to that tier and the next tier starts just above it. The last
tier is open (`up_to` None).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import (
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from typing import Any

ZERO = Decimal(0)

# Meter quantities are Decimal(38, 12) and prices have few digits, so exact products fit in 100
# digits. Inexact is trapped: a price that silently lost digits would be a billing error.
_EXACT = Context(prec=100, traps=[InvalidOperation, DivisionByZero, Overflow, Inexact])


class PriceModelError(ValueError):
    """A price model's parameter is invalid; `field` names the parameter (e.g. tiers[1].up_to)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def plain(d: Decimal) -> str:
    """A price parameter as written, never in exponent notation."""
    # Positional notation: a price given as "1e3" reads 1000 in an invoice explanation.
    return f"{d:f}"


def _check_amount(fld: str, v: Any, *, positive: bool = False) -> None:
    if isinstance(v, bool) or not isinstance(v, Decimal) or not v.is_finite():
        raise PriceModelError(fld, f"must be a finite Decimal, got {v!r}")
    if positive and v <= 0:
        raise PriceModelError(fld, f"must be > 0, got {plain(v)}")
    if v < 0:
        raise PriceModelError(fld, f"must be >= 0, got {plain(v)}")


def _check_input(name: str, v: Any) -> Decimal:
    if isinstance(v, bool) or not isinstance(v, Decimal):
        raise TypeError(f"{name} must be a Decimal, got {type(v).__name__}")
    if not v.is_finite():
        raise ValueError(f"{name} must be finite, got {v}")
    return v


# ----------------------------------------------------------------------------------- models


class PriceModel(ABC):
    """How a charge turns a quantity into an unrounded amount.

    The quantity a model prices is the sum of `event_quantity` over the meter's events. That is
    the identity for every model except Percentage; when `needs_events` is False the mapping is
    linear, so `price(event_quantity(meter_total))` gives the same result from an aggregated
    meter quantity.
    """

    def price(self, quantity: Decimal) -> Decimal:
        q = _check_input("quantity", quantity)
        if q < 0:
            raise ValueError(f"quantity must be >= 0, got {q}")
        # -0 passes the check above; it must not turn into a -0.00 amount.
        q = q.copy_abs()
        with localcontext(_EXACT):
            return self._price(q)

    def event_quantity(self, value: Decimal) -> Decimal:
        v = _check_input("value", value)
        with localcontext(_EXACT):
            return self._event_quantity(v)

    @property
    def needs_events(self) -> bool:
        return False

    @abstractmethod
    def describe(self) -> str: ...

    @abstractmethod
    def _price(self, q: Decimal) -> Decimal: ...

    def _event_quantity(self, value: Decimal) -> Decimal:
        return value


@dataclass(frozen=True)
class Tier:
    up_to: Decimal | None  # inclusive; None for the last, open tier
    unit_price: Decimal
    flat_fee: Decimal = ZERO


def _check_tiers(tiers: Sequence[Tier]) -> tuple[Tier, ...]:
    out = tuple(tiers)
    if not out:
        raise PriceModelError("tiers", "needs at least one tier")
    lower = ZERO
    for i, t in enumerate(out):
        if not isinstance(t, Tier):
            raise PriceModelError(f"tiers[{i}]", f"must be a Tier, got {t!r}")
        _check_amount(f"tiers[{i}].unit_price", t.unit_price)
        _check_amount(f"tiers[{i}].flat_fee", t.flat_fee)
        last = i == len(out) - 1
        if t.up_to is None:
            if not last:
                raise PriceModelError(f"tiers[{i}].up_to", "only the last tier may be open")
            continue
        if last:
            raise PriceModelError(f"tiers[{i}].up_to", "the last tier must be open (no up_to)")
        _check_amount(f"tiers[{i}].up_to", t.up_to, positive=True)
        if t.up_to <= lower:
            raise PriceModelError(
                f"tiers[{i}].up_to",
                f"must be greater than the previous bound {plain(lower)}, got {plain(t.up_to)}",
            )
        lower = t.up_to
    return out


def _describe_tiers(tiers: Sequence[Tier]) -> str:
    parts, lower = [], ZERO
    for t in tiers:
        span = f">{plain(lower)}" if t.up_to is None else f"{plain(lower)}-{plain(t.up_to)}"
        fee = f" + {plain(t.flat_fee)} flat" if t.flat_fee else ""
        parts.append(f"{span} @ {plain(t.unit_price)}{fee}")
        lower = t.up_to if t.up_to is not None else lower
    return ", ".join(parts)


@dataclass(frozen=True)
class PerUnit(PriceModel):
    unit_price: Decimal

    def __post_init__(self) -> None:
        _check_amount("unit_price", self.unit_price)

    def _price(self, q: Decimal) -> Decimal:
        return q * self.unit_price

    def describe(self) -> str:
        return f"per unit @ {plain(self.unit_price)}"


@dataclass(frozen=True)
class Graduated(PriceModel):
    """Each unit at the price of the tier it falls in; a tier's flat fee once the tier is entered.

    A tier is entered when the quantity exceeds the previous tier's bound (the first tier when the
    quantity is > 0), so price(0) == 0.
    """

    tiers: Sequence[Tier]

    def __post_init__(self) -> None:
        object.__setattr__(self, "tiers", _check_tiers(self.tiers))

    def _price(self, q: Decimal) -> Decimal:
        total, lower = ZERO, ZERO
        for t in self.tiers:
            if q <= lower:
                break
            upper = q if t.up_to is None else min(q, t.up_to)
            total += (upper - lower) * t.unit_price + t.flat_fee
            if t.up_to is None:
                break
            lower = t.up_to
        return total

    def describe(self) -> str:
        return f"graduated: {_describe_tiers(self.tiers)}"


@dataclass(frozen=True)
class Volume(PriceModel):
    """All units at the price of the one tier the total falls in, plus that tier's flat fee.

    Not monotonic: crossing into a cheaper tier can lower the amount. price(0) == 0.
    """

    tiers: Sequence[Tier]

    def __post_init__(self) -> None:
        object.__setattr__(self, "tiers", _check_tiers(self.tiers))

    def _price(self, q: Decimal) -> Decimal:
        if q == 0:
            return ZERO
        for t in self.tiers:
            if t.up_to is None or q <= t.up_to:
                return q * t.unit_price + t.flat_fee
        raise AssertionError("the last tier is open")  # guaranteed by _check_tiers

    def describe(self) -> str:
        return f"volume (all units at one tier's price): {_describe_tiers(self.tiers)}"


@dataclass(frozen=True)
class Package(PriceModel):
    """Whole packages: a partial package costs a full one (fractional quantities too)."""

    package_size: Decimal
    package_price: Decimal

    def __post_init__(self) -> None:
        _check_amount("package_size", self.package_size, positive=True)
        _check_amount("package_price", self.package_price)

    def _price(self, q: Decimal) -> Decimal:
        # divmod is exact, unlike q / size which could round a near-integer quotient.
        packages, rest = divmod(q, self.package_size)
        return (packages + (1 if rest else 0)) * self.package_price

    def describe(self) -> str:
        return (
            f"package: {plain(self.package_price)} per {plain(self.package_size)} units "
            "(a partial package counts as a full one)"
        )


@dataclass(frozen=True)
class FlatFee(PriceModel):
    """A fee due every period even without usage, covering some units; overage per unit above."""

    fee: Decimal
    included_units: Decimal = ZERO
    overage_unit_price: Decimal = ZERO

    def __post_init__(self) -> None:
        _check_amount("fee", self.fee)
        _check_amount("included_units", self.included_units)
        _check_amount("overage_unit_price", self.overage_unit_price)

    def _price(self, q: Decimal) -> Decimal:
        return self.fee + max(ZERO, q - self.included_units) * self.overage_unit_price

    def describe(self) -> str:
        text = f"flat fee {plain(self.fee)}"
        if self.included_units:
            text += f" including {plain(self.included_units)} units"
        if self.overage_unit_price:
            text += f", then {plain(self.overage_unit_price)} per unit"
        return text


@dataclass(frozen=True)
class Percentage(PriceModel):
    """A share of each event's value (e.g. a payment amount), optionally clamped per event.

    The meter quantity for this charge is the sum of per-event fees, so price(q) == q. The clamp
    applies to each event's fee, not to the total: with per_event_min or per_event_max set
    (`needs_events`), callers must sum `event_quantity` over the individual events; a meter
    total cannot be clamped after the fact. Without a clamp the fee is linear in the value.
    """

    rate: Decimal
    per_event_min: Decimal | None = None
    per_event_max: Decimal | None = None

    def __post_init__(self) -> None:
        _check_amount("rate", self.rate)
        if self.rate > 1:
            raise PriceModelError("rate", f"must be between 0 and 1, got {plain(self.rate)}")
        if self.per_event_min is not None:
            _check_amount("per_event_min", self.per_event_min)
        if self.per_event_max is not None:
            _check_amount("per_event_max", self.per_event_max)
        lo, hi = self.per_event_min, self.per_event_max
        if lo is not None and hi is not None and lo > hi:
            raise PriceModelError(
                "per_event_min", f"{plain(lo)} is greater than per_event_max {plain(hi)}"
            )

    @property
    def needs_events(self) -> bool:
        return self.per_event_min is not None or self.per_event_max is not None

    def _event_quantity(self, value: Decimal) -> Decimal:
        if value < 0:
            raise ValueError(f"percentage charge: event value must be >= 0, got {value}")
        fee = self.rate * value
        if self.per_event_min is not None:
            fee = max(fee, self.per_event_min)
        if self.per_event_max is not None:
            fee = min(fee, self.per_event_max)
        return fee

    def _price(self, q: Decimal) -> Decimal:
        return q

    def describe(self) -> str:
        text = f"percentage: {plain((self.rate * 100).normalize())}% of each event's value"
        if self.per_event_min is not None:
            text += f", min {plain(self.per_event_min)}"
        if self.per_event_max is not None:
            text += f", max {plain(self.per_event_max)}"
        return text + (" per event" if self.needs_events else "")


@dataclass(frozen=True)
class FreeUnits(PriceModel):
    """The first `free_units` of the period's meter quantity cost nothing; `inner` prices the rest.

    The units come off the quantity before the inner model sees it, so on a percentage charge
    free units are units of the metered value (e.g. the first 1,000 USD of payments carry no
    fee), not an amount taken off the fee. A percentage with per-event bounds is refused: its
    fee is clamped event by event, and which events the free units cover would depend on their
    order, which neither a window nor a close can decide the same way (decision 0008).
    """

    free_units: Decimal
    inner: PriceModel

    def __post_init__(self) -> None:
        _check_amount("free_units", self.free_units)
        if not isinstance(self.inner, PriceModel):
            raise PriceModelError("inner", f"must be a PriceModel, got {self.inner!r}")
        if self.inner.needs_events:
            raise PriceModelError(
                "free_units",
                "cannot be combined with per_event_min / per_event_max: the free units would "
                "have to be assigned to individual events",
            )

    def _price(self, q: Decimal) -> Decimal:
        rest = max(ZERO, q - self.free_units)
        return self.inner.price(self.inner.event_quantity(rest))

    def describe(self) -> str:
        return f"first {plain(self.free_units)} units free, then {self.inner.describe()}"


def charge_amount(model: PriceModel, quantity: Decimal, values: Sequence[Decimal]) -> Decimal:
    """The unrounded amount of one invoice line.

    `quantity` is the meter's period quantity and `values` the measured values of its events.
    A model with per-event bounds is priced from the values (the clamp applies per event); any
    other model from the quantity, through `event_quantity` so an unclamped percentage takes its
    rate of the aggregated value.
    """
    if model.needs_events:
        return model.price(sum((model.event_quantity(v) for v in values), ZERO))
    return model.price(model.event_quantity(quantity))


def true_up(usage_total: Decimal, minimum: Decimal | None) -> Decimal:
    """The minimum-commitment line: what the period's rounded usage lines fall short of it."""
    if minimum is None:
        return ZERO
    return max(ZERO, minimum - usage_total)
