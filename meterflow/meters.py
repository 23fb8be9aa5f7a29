"""Meter definitions (YAML) and what a meter takes from one event.

Pure domain code: loading validates every field and names file, meter and field in errors; the
per-event functions are shared by the streaming job and the billing recompute.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation, Overflow
from enum import StrEnum
from pathlib import Path
from typing import Any

from meterflow.definitions import (
    ItemContext,
    boolean,
    decimal,
    identifier,
    item_list,
    positive_int,
    read_yaml,
    required_name,
    unique_ids,
    unknown_fields,
)
from meterflow.events import WIDE
from meterflow.identifiers import NAME, PROPERTY
from meterflow.settings import REPO_ROOT

DEFAULT_METERS_FILE = REPO_ROOT / "schemas" / "meters" / "default.yaml"
# Quantities are stored as Decimal(38, 12): at most 26 integer digits.
MAX_QUANTITY = Decimal(10) ** 26


class Aggregation(StrEnum):
    COUNT = "COUNT"
    SUM = "SUM"
    MAX = "MAX"
    MIN = "MIN"
    AVG = "AVG"
    LATEST = "LATEST"
    UNIQUE_COUNT = "UNIQUE_COUNT"

    @property
    def needs_quantity(self) -> bool:
        return self not in (Aggregation.COUNT, Aggregation.UNIQUE_COUNT)


class Window(StrEnum):
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"

    @property
    def seconds(self) -> int:
        return {"minute": 60, "hour": 3600, "day": 86400}[self.value]


class MeterConfigError(ValueError):
    pass


class QuantityError(ValueError):
    """An event cannot be measured by a meter; `reason` is the dead-letter reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Multiplier:
    property: str
    table: Mapping[str, Decimal]
    default: Decimal | None = None


@dataclass(frozen=True)
class QuantitySpec:
    source: str = "value"  # "value" | "property"
    property: str | None = None
    allow_negative: bool = False
    multiply_by: Multiplier | None = None


@dataclass(frozen=True)
class PropertyFilter:
    property: str
    op: str  # "in" | "not_in" | "exists"
    values: frozenset[str] = frozenset()
    exists: bool = True

    def matches(self, props: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return (self.property in props) == self.exists
        present = self.property in props and props[self.property] in self.values
        return present if self.op == "in" else not present


@dataclass(frozen=True)
class Meter:
    id: str
    version: int
    event_name: str
    aggregation: Aggregation
    window: Window = Window.MINUTE
    quantity: QuantitySpec | None = None
    unique_property: str | None = None
    filters: tuple[PropertyFilter, ...] = ()
    group_by: tuple[str, ...] = ()
    source: str = field(default="<inline>", compare=False)

    def selects(self, event_name: str, props: Mapping[str, str]) -> bool:
        return event_name == self.event_name and all(f.matches(props) for f in self.filters)

    def dimensions(self, props: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        return tuple((k, props.get(k, "")) for k in self.group_by)

    def measure(self, value: Decimal | None, props: Mapping[str, str]) -> Decimal | None:
        """The quantity this meter takes from an event it selects (None for COUNT-like meters).

        Raises QuantityError with a dead-letter reason code when the event cannot be measured.
        """
        spec = self.quantity
        if spec is None:
            return None
        if spec.source == "value":
            if value is None:
                raise QuantityError("MISSING_QUANTITY", f"meter {self.id}: event has no value")
            q = value
        else:
            assert spec.property is not None
            if spec.property not in props:
                raise QuantityError(
                    "MISSING_QUANTITY", f"meter {self.id}: property {spec.property!r} absent"
                )
            q = parse_decimal(props[spec.property], f"meter {self.id}: property {spec.property!r}")
        check_finite(q, f"meter {self.id}")
        if q < 0 and not spec.allow_negative:
            raise QuantityError("NEGATIVE_QUANTITY", f"meter {self.id}: {q} < 0")
        if spec.multiply_by is not None:
            m = spec.multiply_by
            key = props.get(m.property)
            factor = m.table.get(key, m.default) if key is not None else m.default
            if factor is None:
                raise QuantityError(
                    "UNKNOWN_MULTIPLIER_KEY",
                    f"meter {self.id}: {m.property}={key!r} not in the multiplier table",
                )
            try:
                q = WIDE.multiply(q, factor)
            except Overflow:
                # past the context's exponent limit (999999): far beyond 1e26
                raise QuantityError(
                    "QUANTITY_OUT_OF_RANGE", f"meter {self.id}: |{q} x {factor}| >= 1e26"
                ) from None
        try:
            # abs() rounds in the default 28-digit context; the JVM function does the same
            too_large = abs(q) >= MAX_QUANTITY
        except Overflow:
            # that context's exponent limit is 999999: anything past it is out of range too
            too_large = True
        if too_large:
            raise QuantityError("QUANTITY_OUT_OF_RANGE", f"meter {self.id}: |{q}| >= 1e26")
        return q

    def unique_key(self, props: Mapping[str, str]) -> str | None:
        if self.unique_property is None:
            return None
        if self.unique_property not in props:
            raise QuantityError(
                "MISSING_QUANTITY", f"meter {self.id}: property {self.unique_property!r} absent"
            )
        return props[self.unique_property]


def parse_decimal(text: str, where: str) -> Decimal:
    try:
        return Decimal(text.strip())
    except (InvalidOperation, AttributeError):
        raise QuantityError("NON_NUMERIC_QUANTITY", f"{where}: {text!r} is not a number") from None


def check_finite(q: Decimal, where: str) -> None:
    if q.is_nan():
        raise QuantityError("NAN_QUANTITY", f"{where}: quantity is NaN")
    if q.is_infinite():
        raise QuantityError("INFINITE_QUANTITY", f"{where}: quantity is infinite")


# ---------------------------------------------------------------------------------- loading


def _file_ctx(source: str) -> ItemContext:
    return ItemContext(source, MeterConfigError, "meters file")


_METER_KEYS = {
    "id",
    "version",
    "event_name",
    "aggregation",
    "window",
    "quantity",
    "unique_property",
    "filters",
    "group_by",
}


def _quantity(ctx: ItemContext, raw: Any) -> QuantitySpec:
    if not isinstance(raw, dict):
        raise ctx.error("quantity", "must be a mapping")
    unknown = set(raw) - {"from", "property", "allow_negative", "multiply_by"}
    if unknown:
        raise ctx.error("quantity", f"unknown keys {sorted(unknown)}")
    src = raw.get("from", "value")
    if src not in ("value", "property"):
        raise ctx.error("quantity.from", f"must be 'value' or 'property', got {src!r}")
    prop = raw.get("property")
    if src == "property":
        prop = identifier(ctx, "quantity.property", prop, PROPERTY)
    elif prop is not None:
        raise ctx.error("quantity.property", "only with from: property")
    allow_negative = boolean(ctx, "quantity.allow_negative", raw.get("allow_negative", False))
    mult = None
    if "multiply_by" in raw:
        m = raw["multiply_by"]
        if not isinstance(m, dict) or set(m) - {"property", "table", "default"}:
            raise ctx.error(
                "quantity.multiply_by", "must have property, table and optional default"
            )
        table = m.get("table")
        if not isinstance(table, dict) or not table:
            raise ctx.error("quantity.multiply_by.table", "must be a non-empty mapping")
        mult = Multiplier(
            property=identifier(ctx, "quantity.multiply_by.property", m.get("property"), PROPERTY),
            # keys are property values, data rather than names: any text
            table={
                str(k): decimal(ctx, f"quantity.multiply_by.table.{k}", v) for k, v in table.items()
            },
            default=(
                decimal(ctx, "quantity.multiply_by.default", m["default"])
                if "default" in m
                else None
            ),
        )
    return QuantitySpec(src, prop, allow_negative, mult)


def _filters(ctx: ItemContext, raw: Any) -> tuple[PropertyFilter, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ctx.error("filters", "must map property names to conditions")
    out = []
    for key, cond in raw.items():
        fld = f"filters.{key}"
        prop = identifier(ctx, fld, key, PROPERTY)
        if not isinstance(cond, dict) or len(cond) != 1:
            raise ctx.error(
                fld, "must be exactly one of {in: [...]}, {not_in: [...]}, {exists: bool}"
            )
        ((op, arg),) = cond.items()
        if op in ("in", "not_in"):
            if not isinstance(arg, list) or not arg:
                raise ctx.error(f"{fld}.{op}", "must be a non-empty list")
            out.append(PropertyFilter(prop, op, frozenset(str(a) for a in arg)))
        elif op == "exists":
            out.append(PropertyFilter(prop, "exists", exists=boolean(ctx, f"{fld}.exists", arg)))
        else:
            raise ctx.error(fld, f"unknown condition {op!r} (in, not_in, exists)")
    return tuple(out)


def _group_by(ctx: ItemContext, raw: Any) -> tuple[str, ...]:
    group_by = raw or []
    if not isinstance(group_by, list) or not all(isinstance(g, str) and g for g in group_by):
        raise ctx.error("group_by", "must be a list of property names")
    if len(set(group_by)) != len(group_by):
        raise ctx.error("group_by", "lists a property twice")
    return tuple(identifier(ctx, f"group_by[{i}]", g, PROPERTY) for i, g in enumerate(group_by))


def parse_meter(raw: Any, source: str) -> Meter:
    if not isinstance(raw, dict):
        raise _file_ctx(source).error("meters", f"each meter must be a mapping, got {raw!r}")
    ctx = _file_ctx(source).item("meter", str(raw.get("id", "?")))
    unknown_fields(ctx, raw, _METER_KEYS)
    mid = identifier(ctx, "id", raw.get("id"), NAME)
    version = positive_int(ctx, "version", raw.get("version"))
    try:
        agg = Aggregation(str(raw.get("aggregation", "")).upper())
    except ValueError:
        raise ctx.error(
            "aggregation",
            f"unknown {raw.get('aggregation')!r} (one of {[a.value for a in Aggregation]})",
        ) from None
    try:
        window = Window(str(raw.get("window", "minute")).lower())
    except ValueError:
        raise ctx.error("window", f"unknown {raw.get('window')!r} (minute, hour, day)") from None
    quantity = _quantity(ctx, raw["quantity"]) if "quantity" in raw else None
    if agg.needs_quantity and quantity is None:
        raise ctx.error("quantity", f"required for {agg.value}")
    if not agg.needs_quantity and quantity is not None:
        raise ctx.error("quantity", f"not used by {agg.value}; remove it")
    unique = raw.get("unique_property")
    if agg is Aggregation.UNIQUE_COUNT:
        unique = identifier(ctx, "unique_property", unique, PROPERTY)
    elif unique is not None:
        raise ctx.error("unique_property", "only for UNIQUE_COUNT")
    return Meter(
        id=mid,
        version=version,
        # matched against events as data, never spliced into SQL unescaped: free-form
        event_name=required_name(ctx, "event_name", raw.get("event_name")),
        aggregation=agg,
        window=window,
        quantity=quantity,
        unique_property=unique,
        filters=_filters(ctx, raw.get("filters")),
        group_by=_group_by(ctx, raw.get("group_by")),
        source=source,
    )


def parse_meters(data: Any, source: str) -> list[Meter]:
    ctx = _file_ctx(source)
    meters = [parse_meter(m, source) for m in item_list(ctx, data, "meters")]
    unique_ids(ctx, "meter", (m.id for m in meters))
    if not meters:
        raise ctx.error("meters", "no meters defined")
    return meters


def load_meters(path: Path | str = DEFAULT_METERS_FILE) -> list[Meter]:
    return parse_meters(read_yaml(path, MeterConfigError), str(Path(path)))
