"""Reading definition files (meters, price books, subscriptions, credits): the one set of field
readers, with errors that name file, item and field on one line:

    FILE: meter 'm': field 'group_by[0]': why
    FILE: plan 'x' version 2: charge 'calls': field 'tiers[0].up_to': why
    FILE: meters file: field 'meters': why          (the file as a whole)

Numbers: one policy for every file. A decimal field takes a quoted decimal string ("0.002") or
a YAML integer (1000000); a bare YAML float (0.002) is refused. YAML turns 0.002 into a binary
float before a loader sees it, and reading it back with str() only recovers the written digits
for short literals: 12345678901234567.89 comes back as 1.2345678901234568e+16, a different
price, with no error. Refusing floats makes the author write the exact number, at the cost of
quotes the shipped files already used as their house style. A decimal has at most 100 digits and
a magnitude between 1e-100 and 1e100 (or is zero).

Names that reach generated SQL (meter and plan ids, property names) must match the patterns of
meterflow.identifiers; see `identifier`.

Times: `meterflow.utc.parse_utc` is the one parser (naive means UTC).

This module imports no loader module, so that all four can import it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from meterflow.identifiers import IdentifierKind, shown
from meterflow.utc import parse_utc


@dataclass(frozen=True)
class ItemContext:
    """Where a value comes from: the file, then the items around it, outermost first.

    `file_word` names the file as a whole in errors outside any item ("meters file"); without
    it such errors name the file only.
    """

    source: str
    error_type: type[ValueError]
    file_word: str | None = None
    where: tuple[str, ...] = ()

    def item(self, kind: str, name: str) -> ItemContext:
        """Inside item `name` of `kind`: `meter 'm'`, `charge 'calls'`."""
        return replace(self, where=(*self.where, f"{kind} {name!r}"))

    def detail(self, word: str, value: object) -> ItemContext:
        """The innermost item, qualified: `plan 'x'` becomes `plan 'x' version 2`."""
        *outer, last = self.where
        return replace(self, where=(*outer, f"{last} {word} {value}"))

    def error(self, fld: str, why: str) -> ValueError:
        who = self.where or ((self.file_word,) if self.file_word else ())
        return self.error_type(": ".join([self.source, *who, f"field {fld!r}", why]))


def read_yaml(path: Path | str, error_type: type[ValueError]) -> Any:
    p = Path(path)
    try:
        # bytes, not read_text(): PyYAML decodes them itself (UTF-8, or UTF-16 with a BOM) and
        # says where a byte is not valid text, instead of a UnicodeDecodeError in the locale's
        # encoding (found by fuzzing, tests/fuzz)
        return yaml.safe_load(p.read_bytes())
    except yaml.YAMLError as exc:
        raise error_type(f"{p}: not valid YAML: {exc}") from None
    except (ValueError, ArithmeticError, LookupError, TypeError, AttributeError) as exc:
        # PyYAML's constructors let these through for scalars that match a tag's pattern but
        # not its range: `2026-01-01 25:00:00` (found by fuzzing, tests/fuzz), `2026-13-01`,
        # an int past Python's 4300-digit limit, an explicit `!!timestamp` that is no timestamp
        raise error_type(f"{p}: not valid YAML: {type(exc).__name__}: {exc}") from None
    except RecursionError:
        # the composer recurses once per nesting level
        raise error_type(f"{p}: not valid YAML: nested too deeply") from None


def unknown_fields(
    ctx: ItemContext, raw: Mapping[Any, Any], allowed: Iterable[str], what: str | None = None
) -> None:
    """Refuses keys outside `allowed`, naming the first in sorted order (a typo is usually one)."""
    allowed = set(allowed)
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        kind = f"unknown {what} field" if what else "unknown field"
        raise ctx.error(unknown[0], f"{kind} (allowed: {sorted(allowed)})")


def item_list(ctx: ItemContext, data: Any, key: str) -> list[Any]:
    """`data[key]`: the list of items a definition file is made of; refuses any other file."""
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise ctx.error(key, f"the file must contain `{key}: [ ... ]`")
    return data[key]


def unique_ids(ctx: ItemContext, kind: str, ids: Iterable[str]) -> None:
    """Refuses an id defined twice; `ctx` is the file's context."""
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ctx.item(kind, i).error("id", "defined twice")
        seen.add(i)


def required_name(ctx: ItemContext, fld: str, v: Any) -> str:
    """A non-empty free-form string (customer ids, event names)."""
    if v is None:
        raise ctx.error(fld, "missing")
    if not isinstance(v, str) or not v.strip():
        raise ctx.error(fld, f"must be a non-empty string, got {shown(v)}")
    return v


def identifier(ctx: ItemContext, fld: str, v: Any, kind: IdentifierKind) -> str:
    """A name that reaches generated SQL: a non-empty string matching `kind`'s pattern."""
    name = required_name(ctx, fld, v)
    problem = kind.problem(name)
    if problem is not None:
        raise ctx.error(fld, problem)
    return name


# Far beyond any price, quantity or amount, and small enough that every operation on them and
# every message showing them stays cheap.
MAX_DECIMAL_DIGITS = 100
MAX_DECIMAL_EXPONENT = 100


def decimal(ctx: ItemContext, fld: str, v: Any, *, positive: bool = False) -> Decimal:
    """A finite decimal from a quoted string or an integer (see the module docstring for why a
    bare float is refused); with `positive`, one > 0."""
    if v is None:
        raise ctx.error(fld, "missing")
    if isinstance(v, float):
        why = f'must be a quoted decimal string like "1.5" or an integer, not the YAML float {v!r}'
        raise ctx.error(fld, why)
    if isinstance(v, bool) or not isinstance(v, str | int | Decimal):
        raise ctx.error(fld, f'must be a quoted decimal string like "1.5" or an integer, got {v!r}')
    try:
        d = Decimal(v.strip() if isinstance(v, str) else v)
    except InvalidOperation:
        raise ctx.error(fld, f"{shown(v)} is not a decimal") from None
    if positive and not (d.is_finite() and d > 0):
        raise ctx.error(fld, f"must be > 0, got {shown(v)}")
    if not d.is_finite():
        raise ctx.error(fld, f"{shown(v)} is not finite")
    if not -MAX_DECIMAL_EXPONENT <= d.adjusted() <= MAX_DECIMAL_EXPONENT or (
        len(d.as_tuple().digits) > MAX_DECIMAL_DIGITS
    ):
        # "1e9999999999" is a valid Decimal, but rounding it as money failed (InvalidOperation)
        # and writing it out in an error or an invoice took minutes (found by tests/fuzz)
        raise ctx.error(
            fld,
            f"{shown(v)} is out of range: at most {MAX_DECIMAL_DIGITS} digits, between "
            f"1e-{MAX_DECIMAL_EXPONENT} and 1e{MAX_DECIMAL_EXPONENT}",
        )
    return d


def optional_decimal(ctx: ItemContext, raw: Mapping[str, Any], fld: str) -> Decimal | None:
    """`raw[fld]` as a decimal; None when absent or null."""
    return None if raw.get(fld) is None else decimal(ctx, fld, raw[fld])


def positive_int(ctx: ItemContext, fld: str, v: Any) -> int:
    # bool is an int in Python, but `version: true` is a mistake, not 1.
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ctx.error(fld, f"must be an integer >= 1, got {shown(v)}")
    return v


def boolean(ctx: ItemContext, fld: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ctx.error(fld, "must be true or false")
    return v


def required_timestamp(ctx: ItemContext, fld: str, v: Any) -> datetime:
    """A UTC instant from a YAML timestamp, a date (midnight UTC) or ISO-8601 text."""
    if v is None:
        raise ctx.error(fld, "missing")
    try:
        return parse_utc(v)
    except ValueError as exc:
        raise ctx.error(fld, str(exc)) from None
    except OverflowError:
        # in range where written, not in UTC: 0001-01-01T00:00+01:00 is before year 1 there
        raise ctx.error(fld, f"{shown(v)} is outside years 1..9999 in UTC") from None


def optional_later_timestamp(
    ctx: ItemContext, raw: Mapping[str, Any], fld: str, after_fld: str, after: datetime
) -> datetime | None:
    """`raw[fld]` as a timestamp strictly after `after` (the value of `after_fld`): the end of
    a span that may be open. None when absent or null."""
    if raw.get(fld) is None:
        return None
    value = required_timestamp(ctx, fld, raw[fld])
    if value <= after:
        raise ctx.error(fld, f"{value.isoformat()} is not after {after_fld} {after.isoformat()}")
    return value
