"""Price books (YAML): plans with a currency, versions in force from a date, one charge per
meter and optional quotas; the loader names file, plan, version, charge and field in errors."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

from meterflow.alerts import Quota
from meterflow.definitions import (
    ItemContext,
    boolean,
    decimal,
    identifier,
    item_list,
    optional_decimal,
    positive_int,
    read_yaml,
    required_timestamp,
    unique_ids,
    unknown_fields,
)
from meterflow.identifiers import NAME
from meterflow.money import Currency, currency, round_amount
from meterflow.pricing import (
    ZERO,
    FlatFee,
    FreeUnits,
    Graduated,
    Package,
    Percentage,
    PerUnit,
    PriceModel,
    PriceModelError,
    Tier,
    Volume,
    plain,
)
from meterflow.settings import REPO_ROOT

PRICES_DIR = REPO_ROOT / "schemas" / "prices"
DEFAULT_PRICES_FILE = PRICES_DIR / "default.yaml"


class PriceConfigError(ValueError):
    pass


class PriceLookupError(KeyError):
    """An unknown plan or version, or no version in force at a given time."""

    def __str__(self) -> str:
        # KeyError would show the repr of the message, quotes and escapes included.
        return str(self.args[0]) if self.args else ""


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


def _tiers(ctx: ItemContext, raw: Any) -> list[Tier]:
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
        up_to = None if t.get("up_to") is None else decimal(ctx, f"{fld}.up_to", t["up_to"])
        tiers.append(
            Tier(
                up_to=up_to,
                unit_price=decimal(ctx, f"{fld}.unit_price", t["unit_price"]),
                flat_fee=decimal(ctx, f"{fld}.flat_fee", t.get("flat_fee", 0)),
            )
        )
    return tiers


_Builder = Callable[[ItemContext, Mapping[str, Any]], PriceModel]

# model name -> (required fields, optional fields, builder)
_MODELS: dict[str, tuple[set[str], set[str], _Builder]] = {
    "per_unit": (
        {"unit_price"},
        set(),
        lambda c, r: PerUnit(decimal(c, "unit_price", r["unit_price"])),
    ),
    "graduated": ({"tiers"}, set(), lambda c, r: Graduated(_tiers(c, r["tiers"]))),
    "volume": ({"tiers"}, set(), lambda c, r: Volume(_tiers(c, r["tiers"]))),
    "package": (
        {"package_size", "package_price"},
        set(),
        lambda c, r: Package(
            decimal(c, "package_size", r["package_size"]),
            decimal(c, "package_price", r["package_price"]),
        ),
    ),
    "flat_fee": (
        {"fee"},
        {"included_units", "overage_unit_price"},
        lambda c, r: FlatFee(
            decimal(c, "fee", r["fee"]),
            optional_decimal(c, r, "included_units") or ZERO,
            optional_decimal(c, r, "overage_unit_price") or ZERO,
        ),
    ),
    "percentage": (
        {"rate"},
        {"per_event_min", "per_event_max"},
        lambda c, r: Percentage(
            decimal(c, "rate", r["rate"]),
            optional_decimal(c, r, "per_event_min"),
            optional_decimal(c, r, "per_event_max"),
        ),
    ),
}


def _charge(ctx: ItemContext, raw: Any) -> PriceModel:
    if not isinstance(raw, dict):
        raise ctx.error("model", f"a charge must be a mapping with a model, got {raw!r}")
    name = raw.get("model")
    # a list or mapping here is unhashable: `in` would raise TypeError
    if not isinstance(name, str) or name not in _MODELS:
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
        free = optional_decimal(ctx, raw, "free_units")
        return model if free is None else FreeUnits(free, model)
    except PriceModelError as exc:
        raise ctx.error(exc.field, exc.reason) from None


def _version(ctx: ItemContext, raw: Any, cur: Currency) -> PlanVersion:
    if not isinstance(raw, dict):
        raise ctx.error("versions", f"each version must be a mapping, got {raw!r}")
    ctx = ctx.detail("version", raw.get("version", "?"))
    unknown_fields(
        ctx, raw, {"version", "effective_from", "minimum", "charges", "quotas"}, "version"
    )
    n = positive_int(ctx, "version", raw.get("version"))
    effective_from = required_timestamp(ctx, "effective_from", raw.get("effective_from"))
    minimum = optional_decimal(ctx, raw, "minimum")
    if minimum is not None:
        if minimum < 0:
            raise ctx.error("minimum", f"must be >= 0, got {plain(minimum)}")
        # The true-up line is not rounded again, so the minimum must already be a valid amount.
        if round_amount(minimum, cur) != minimum:
            raise ctx.error(
                "minimum",
                f"{plain(minimum)} has more than {cur.minor_units} decimals ({cur.code})",
            )
    charges = raw.get("charges")
    if not isinstance(charges, dict) or not charges:
        raise ctx.error("charges", "must map meter ids to charges, at least one")
    out: dict[str, Charge] = {}
    for meter, spec in charges.items():
        meter_id = identifier(ctx, "charges", meter, NAME)
        model = _charge(ctx.item("charge", meter_id), spec)
        out[meter_id] = Charge(meter_id, model, dict(spec))
    return PlanVersion(n, effective_from, minimum, MappingProxyType(out), _quotas(ctx, raw, out))


def _quotas(ctx: ItemContext, raw: Mapping[str, Any], charges: Mapping[str, Charge]) -> Mapping:
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
        limit = decimal(ctx, f"{fld}.limit", spec["limit"])
        if limit <= 0:
            raise ctx.error(f"{fld}.limit", f"must be > 0, got {plain(limit)}")
        out[meter] = Quota(limit, boolean(ctx, f"{fld}.hard_cap", spec.get("hard_cap", False)))
    return MappingProxyType(out)


def _plan(ctx: ItemContext, raw: Any) -> Plan:
    if not isinstance(raw, dict):
        raise ctx.error("plans", f"each plan must be a mapping, got {raw!r}")
    ctx = ctx.item("plan", str(raw.get("id", "?")))
    unknown_fields(ctx, raw, {"id", "currency", "versions"}, "plan")
    plan_id = identifier(ctx, "id", raw.get("id"), NAME)
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
            raise ctx.detail("version", v.version).error(
                "version", f"must be greater than the previous version {versions[-1].version}"
            )
        if versions and v.effective_from <= versions[-1].effective_from:
            raise ctx.detail("version", v.version).error(
                "effective_from",
                f"{v.effective_from.isoformat()} must be later than version "
                f"{versions[-1].version}'s {versions[-1].effective_from.isoformat()}",
            )
        versions.append(v)
    return Plan(plan_id, cur, tuple(versions), ctx.source)


def parse_price_book(data: Any, source: str) -> PriceBook:
    ctx = ItemContext(source, PriceConfigError)
    items = item_list(ctx, data, "plans")
    unknown_fields(ctx, data, {"plans"}, "top-level")
    parsed = [_plan(ctx, raw) for raw in items]
    unique_ids(ctx, "plan", (p.id for p in parsed))
    plans = {p.id: p for p in parsed}
    if not plans:
        raise ctx.error("plans", "no plans defined")
    return PriceBook(MappingProxyType(plans), source)


def load_price_book(path: Path | str = DEFAULT_PRICES_FILE) -> PriceBook:
    return parse_price_book(read_yaml(path, PriceConfigError), str(Path(path)))
