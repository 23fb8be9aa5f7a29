"""Price models and price books (YAML) that turn a meter quantity into an amount.

Pure domain code. Every model returns the *unrounded* amount in currency units: rounding happens
once per invoice line (meterflow.money.round_amount), and the minimum commitment true-up is
applied by the invoice code after that (`true_up`).

Tier convention, shared by Graduated and Volume: `up_to` is an inclusive upper bound, so a
quantity equal to `up_to` belongs to that tier and the next tier starts just above it. The last
tier is open (`up_to` None).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time
from decimal import (
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from meterflow.alerts import Quota
from meterflow.config import REPO_ROOT
from meterflow.money import Currency, currency, round_amount

PRICES_DIR = REPO_ROOT / "schemas" / "prices"
DEFAULT_PRICES_FILE = PRICES_DIR / "default.yaml"

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


class PriceConfigError(ValueError):
    pass


class PriceLookupError(KeyError):
    """An unknown plan or version, or no version in force at a given time."""

    def __str__(self) -> str:
        # KeyError would show the repr of the message, quotes and escapes included.
        return str(self.args[0]) if self.args else ""


def _fmt(d: Decimal) -> str:
    # Positional notation: a price given as "1e3" reads 1000 in an invoice explanation.
    return f"{d:f}"


def _check_amount(fld: str, v: Any, *, positive: bool = False) -> None:
    if isinstance(v, bool) or not isinstance(v, Decimal) or not v.is_finite():
        raise PriceModelError(fld, f"must be a finite Decimal, got {v!r}")
    if positive and v <= 0:
        raise PriceModelError(fld, f"must be > 0, got {_fmt(v)}")
    if v < 0:
        raise PriceModelError(fld, f"must be >= 0, got {_fmt(v)}")


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
                f"must be greater than the previous bound {_fmt(lower)}, got {_fmt(t.up_to)}",
            )
        lower = t.up_to
    return out


def _describe_tiers(tiers: Sequence[Tier]) -> str:
    parts, lower = [], ZERO
    for t in tiers:
        span = f">{_fmt(lower)}" if t.up_to is None else f"{_fmt(lower)}-{_fmt(t.up_to)}"
        fee = f" + {_fmt(t.flat_fee)} flat" if t.flat_fee else ""
        parts.append(f"{span} @ {_fmt(t.unit_price)}{fee}")
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
        return f"per unit @ {_fmt(self.unit_price)}"


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
            f"package: {_fmt(self.package_price)} per {_fmt(self.package_size)} units "
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
        text = f"flat fee {_fmt(self.fee)}"
        if self.included_units:
            text += f" including {_fmt(self.included_units)} units"
        if self.overage_unit_price:
            text += f", then {_fmt(self.overage_unit_price)} per unit"
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
            raise PriceModelError("rate", f"must be between 0 and 1, got {_fmt(self.rate)}")
        if self.per_event_min is not None:
            _check_amount("per_event_min", self.per_event_min)
        if self.per_event_max is not None:
            _check_amount("per_event_max", self.per_event_max)
        lo, hi = self.per_event_min, self.per_event_max
        if lo is not None and hi is not None and lo > hi:
            raise PriceModelError(
                "per_event_min", f"{_fmt(lo)} is greater than per_event_max {_fmt(hi)}"
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
        text = f"percentage: {_fmt((self.rate * 100).normalize())}% of each event's value"
        if self.per_event_min is not None:
            text += f", min {_fmt(self.per_event_min)}"
        if self.per_event_max is not None:
            text += f", max {_fmt(self.per_event_max)}"
        return text + (" per event" if self.needs_events else "")


@dataclass(frozen=True)
class FreeUnits(PriceModel):
    """The first `free_units` of the period's quantity cost nothing; the rest go to `inner`."""

    free_units: Decimal
    inner: PriceModel

    def __post_init__(self) -> None:
        _check_amount("free_units", self.free_units)
        if not isinstance(self.inner, PriceModel):
            raise PriceModelError("inner", f"must be a PriceModel, got {self.inner!r}")

    @property
    def needs_events(self) -> bool:
        return self.inner.needs_events

    def _price(self, q: Decimal) -> Decimal:
        return self.inner.price(max(ZERO, q - self.free_units))

    def _event_quantity(self, value: Decimal) -> Decimal:
        return self.inner.event_quantity(value)

    def describe(self) -> str:
        return f"first {_fmt(self.free_units)} units free, then {self.inner.describe()}"


def has_per_event_bounds(model: PriceModel) -> bool:
    """True when the amount needs the individual event values, not just the meter quantity."""
    return model.needs_events


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


# ------------------------------------------------------------------------------ price books


@dataclass(frozen=True)
class Charge:
    meter: str
    model: PriceModel
    spec: dict[str, Any] = field(compare=False)  # as written in the price book

    def describe(self) -> str:
        return self.model.describe()


@dataclass(frozen=True)
class PlanVersion:
    version: int
    effective_from: datetime  # UTC, aware
    minimum: Decimal | None
    charges: Mapping[str, Charge]  # by meter id
    quotas: Mapping[str, Quota] = field(default_factory=dict)  # by meter id (usage alerts)


@dataclass(frozen=True)
class Plan:
    id: str
    currency: Currency
    versions: tuple[PlanVersion, ...]  # increasing version and effective_from
    source: str = field(default="<inline>", compare=False)

    def version(self, n: int) -> PlanVersion:
        for v in self.versions:
            if v.version == n:
                return v
        known = [v.version for v in self.versions]
        raise PriceLookupError(f"{self.source}: plan {self.id!r} has no version {n} ({known})")

    def version_in_force(self, at: datetime) -> PlanVersion:
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(f"plan {self.id!r}: time must be timezone-aware, got {at!r}")
        for v in reversed(self.versions):
            if v.effective_from <= at:
                return v
        raise PriceLookupError(
            f"{self.source}: plan {self.id!r} has no version in force at {at.isoformat()} "
            f"(the first is effective from {self.versions[0].effective_from.isoformat()})"
        )


@dataclass(frozen=True)
class PriceBook:
    plans: Mapping[str, Plan]
    source: str = field(default="<inline>", compare=False)

    def plan(self, plan_id: str) -> Plan:
        if plan_id not in self.plans:
            raise PriceLookupError(
                f"{self.source}: unknown plan {plan_id!r} (plans: {sorted(self.plans)})"
            )
        return self.plans[plan_id]


# ----------------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class _Ctx:
    source: str
    plan: str | None = None
    version: str | None = None
    charge: str | None = None

    def at(self, **where: str) -> _Ctx:
        return replace(self, **where)

    def error(self, fld: str, why: str) -> PriceConfigError:
        parts = [self.source]
        if self.plan is not None:
            version = f" version {self.version}" if self.version is not None else ""
            parts.append(f"plan {self.plan!r}{version}")
        if self.charge is not None:
            parts.append(f"charge {self.charge!r}")
        return PriceConfigError(": ".join([*parts, f"field {fld!r}", why]))


def _unknown_fields(ctx: _Ctx, raw: Mapping[Any, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(str(k) for k in set(raw) - allowed)
    if unknown:
        raise ctx.error(unknown[0], f"unknown {what} field (allowed: {sorted(allowed)})")


def _name(ctx: _Ctx, fld: str, v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ctx.error(fld, f"must be a non-empty string, got {v!r}")
    return v


def _decimal(ctx: _Ctx, fld: str, v: Any) -> Decimal:
    # str() first: a YAML float 0.1 becomes Decimal("0.1"), not the binary 0.1000000000000000055.
    if isinstance(v, bool) or not isinstance(v, str | int | float | Decimal):
        raise ctx.error(fld, f'must be a number or a decimal string like "1.5", got {v!r}')
    try:
        d = Decimal(str(v))
    except InvalidOperation:
        raise ctx.error(fld, f"{v!r} is not a decimal") from None
    if not d.is_finite():
        raise ctx.error(fld, f"{v!r} is not finite")
    return d


def _opt_decimal(ctx: _Ctx, raw: Mapping[str, Any], fld: str) -> Decimal | None:
    return None if raw.get(fld) is None else _decimal(ctx, fld, raw[fld])


def _instant(ctx: _Ctx, fld: str, v: Any) -> datetime:
    if isinstance(v, str):
        try:
            v = datetime.fromisoformat(v.strip())
        except ValueError:
            raise ctx.error(fld, f"{v!r} is not an ISO date or datetime") from None
    if isinstance(v, datetime):
        # YAML timestamps without an offset are UTC (YAML 1.1 timestamp type).
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)
    if isinstance(v, date):
        return datetime.combine(v, time(), UTC)
    raise ctx.error(fld, f"must be a date like 2026-01-01 or a datetime, got {v!r}")


def _tiers(ctx: _Ctx, raw: Any) -> list[Tier]:
    if not isinstance(raw, list) or not raw:
        raise ctx.error("tiers", "must be a non-empty list of {up_to, unit_price, flat_fee}")
    tiers = []
    for i, t in enumerate(raw):
        fld = f"tiers[{i}]"
        if not isinstance(t, dict):
            raise ctx.error(fld, f"must be a mapping, got {t!r}")
        extra = sorted(str(k) for k in set(t) - {"up_to", "unit_price", "flat_fee"})
        if extra:
            raise ctx.error(f"{fld}.{extra[0]}", "unknown tier field (up_to, unit_price, flat_fee)")
        if "unit_price" not in t:
            raise ctx.error(f"{fld}.unit_price", "required")
        up_to = None if t.get("up_to") is None else _decimal(ctx, f"{fld}.up_to", t["up_to"])
        tiers.append(
            Tier(
                up_to=up_to,
                unit_price=_decimal(ctx, f"{fld}.unit_price", t["unit_price"]),
                flat_fee=_decimal(ctx, f"{fld}.flat_fee", t.get("flat_fee", 0)),
            )
        )
    return tiers


_Builder = Callable[[_Ctx, Mapping[str, Any]], PriceModel]

# model name -> (required fields, optional fields, builder)
_MODELS: dict[str, tuple[set[str], set[str], _Builder]] = {
    "per_unit": (
        {"unit_price"},
        set(),
        lambda c, r: PerUnit(_decimal(c, "unit_price", r["unit_price"])),
    ),
    "graduated": ({"tiers"}, set(), lambda c, r: Graduated(_tiers(c, r["tiers"]))),
    "volume": ({"tiers"}, set(), lambda c, r: Volume(_tiers(c, r["tiers"]))),
    "package": (
        {"package_size", "package_price"},
        set(),
        lambda c, r: Package(
            _decimal(c, "package_size", r["package_size"]),
            _decimal(c, "package_price", r["package_price"]),
        ),
    ),
    "flat_fee": (
        {"fee"},
        {"included_units", "overage_unit_price"},
        lambda c, r: FlatFee(
            _decimal(c, "fee", r["fee"]),
            _opt_decimal(c, r, "included_units") or ZERO,
            _opt_decimal(c, r, "overage_unit_price") or ZERO,
        ),
    ),
    "percentage": (
        {"rate"},
        {"per_event_min", "per_event_max"},
        lambda c, r: Percentage(
            _decimal(c, "rate", r["rate"]),
            _opt_decimal(c, r, "per_event_min"),
            _opt_decimal(c, r, "per_event_max"),
        ),
    ),
}


def _charge(ctx: _Ctx, raw: Any) -> PriceModel:
    if not isinstance(raw, dict):
        raise ctx.error("model", f"a charge must be a mapping with a model, got {raw!r}")
    name = raw.get("model")
    if name not in _MODELS:
        raise ctx.error("model", f"unknown model {name!r} (one of {sorted(_MODELS)})")
    required, optional, build = _MODELS[name]
    missing = sorted(required - set(raw))
    if missing:
        raise ctx.error(missing[0], f"required by model {name!r}")
    allowed = {"model", "free_units"} | required | optional
    extra = sorted(str(k) for k in set(raw) - allowed)
    if extra:
        raise ctx.error(extra[0], f"not a field of model {name!r} (allowed: {sorted(allowed)})")
    try:
        model = build(ctx, raw)
        free = _opt_decimal(ctx, raw, "free_units")
        return model if free is None else FreeUnits(free, model)
    except PriceModelError as exc:
        raise ctx.error(exc.field, exc.reason) from None


def _version(ctx: _Ctx, raw: Any, cur: Currency) -> PlanVersion:
    if not isinstance(raw, dict):
        raise ctx.error("versions", f"each version must be a mapping, got {raw!r}")
    ctx = ctx.at(version=str(raw.get("version", "?")))
    _unknown_fields(
        ctx, raw, {"version", "effective_from", "minimum", "charges", "quotas"}, "version"
    )
    n = raw.get("version")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ctx.error("version", f"must be an integer >= 1, got {n!r}")
    if "effective_from" not in raw:
        raise ctx.error("effective_from", "required")
    effective_from = _instant(ctx, "effective_from", raw["effective_from"])
    minimum = _opt_decimal(ctx, raw, "minimum")
    if minimum is not None:
        if minimum < 0:
            raise ctx.error("minimum", f"must be >= 0, got {_fmt(minimum)}")
        # The true-up line is not rounded again, so the minimum must already be a valid amount.
        if round_amount(minimum, cur) != minimum:
            raise ctx.error(
                "minimum", f"{_fmt(minimum)} has more than {cur.minor_units} decimals ({cur.code})"
            )
    charges = raw.get("charges")
    if not isinstance(charges, dict) or not charges:
        raise ctx.error("charges", "must map meter ids to charges, at least one")
    out: dict[str, Charge] = {}
    for meter, spec in charges.items():
        meter_id = _name(ctx, "charges", meter)
        model = _charge(ctx.at(charge=meter_id), spec)
        out[meter_id] = Charge(meter_id, model, dict(spec))
    return PlanVersion(n, effective_from, minimum, MappingProxyType(out), _quotas(ctx, raw, out))


def _quotas(ctx: _Ctx, raw: Mapping[str, Any], charges: Mapping[str, Charge]) -> Mapping:
    quotas = raw.get("quotas") or {}
    if not isinstance(quotas, dict):
        raise ctx.error("quotas", "must map meter ids to {limit, hard_cap}")
    out = {}
    for meter, spec in quotas.items():
        fld = f"quotas.{meter}"
        if meter not in charges:
            # alerts come from the rating of charged meters
            raise ctx.error(fld, "a quota needs a charge for the same meter")
        if not isinstance(spec, dict) or "limit" not in spec or set(spec) - {"limit", "hard_cap"}:
            raise ctx.error(fld, "must be {limit: N, hard_cap: true|false}")
        limit = _decimal(ctx, f"{fld}.limit", spec["limit"])
        if limit <= 0:
            raise ctx.error(f"{fld}.limit", f"must be > 0, got {_fmt(limit)}")
        hard_cap = spec.get("hard_cap", False)
        if not isinstance(hard_cap, bool):
            raise ctx.error(f"{fld}.hard_cap", "must be true or false")
        out[meter] = Quota(limit, hard_cap)
    return MappingProxyType(out)


def _plan(ctx: _Ctx, raw: Any) -> Plan:
    if not isinstance(raw, dict):
        raise ctx.error("plans", f"each plan must be a mapping, got {raw!r}")
    ctx = ctx.at(plan=str(raw.get("id", "?")))
    _unknown_fields(ctx, raw, {"id", "currency", "versions"}, "plan")
    plan_id = _name(ctx, "id", raw.get("id"))
    code = raw.get("currency")
    if not isinstance(code, str):
        raise ctx.error("currency", f"must be an ISO 4217 code like USD, got {code!r}")
    try:
        cur = currency(code)
    except ValueError as exc:
        raise ctx.error("currency", str(exc)) from None
    raw_versions = raw.get("versions")
    if not isinstance(raw_versions, list) or not raw_versions:
        raise ctx.error("versions", "must be a non-empty list")
    versions: list[PlanVersion] = []
    for rv in raw_versions:
        v = _version(ctx, rv, cur)
        if versions and v.version <= versions[-1].version:
            raise ctx.at(version=str(v.version)).error(
                "version", f"must be greater than the previous version {versions[-1].version}"
            )
        if versions and v.effective_from <= versions[-1].effective_from:
            raise ctx.at(version=str(v.version)).error(
                "effective_from",
                f"{v.effective_from.isoformat()} must be later than version "
                f"{versions[-1].version}'s {versions[-1].effective_from.isoformat()}",
            )
        versions.append(v)
    return Plan(plan_id, cur, tuple(versions), ctx.source)


def parse_price_book(data: Any, source: str) -> PriceBook:
    ctx = _Ctx(source)
    if not isinstance(data, dict) or not isinstance(data.get("plans"), list):
        raise ctx.error("plans", "the file must contain `plans: [ ... ]`")
    _unknown_fields(ctx, data, {"plans"}, "top-level")
    plans: dict[str, Plan] = {}
    for raw in data["plans"]:
        plan = _plan(ctx, raw)
        if plan.id in plans:
            raise ctx.at(plan=plan.id).error("id", "defined twice")
        plans[plan.id] = plan
    if not plans:
        raise ctx.error("plans", "no plans defined")
    return PriceBook(MappingProxyType(plans), source)


def load_price_book(path: Path | str = DEFAULT_PRICES_FILE) -> PriceBook:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise PriceConfigError(f"{p}: not valid YAML: {exc}") from None
    return parse_price_book(data, str(p))
