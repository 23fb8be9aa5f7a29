"""Price models compiled to Flink SQL expressions, exact within a stated domain (decision 0011).

Pure string building, importable without pyflink. `price_sql(model, q)` is the SQL twin of
`meterflow.rating.period_price(model, q)` (for a percentage with per-event bounds, of
`model.price(fee_sum)`, the identity); `price_book_sql` chooses among the charges of a price book
by (plan, price version, meter).

Flink's DECIMAL arithmetic is exact only while a result type stays within 38 digits: a product
of DECIMAL(p1, s1) and DECIMAL(p2, s2) is typed DECIMAL(p1 + p2 + 1, s1 + s2), a sum
DECIMAL(max(p1 - s1, p2 - s2) + max(s1, s2) + 1, max(s1, s2)), and a type wider than 38 digits
has its scale cut (HALF_UP, silently). Every operand below is therefore cast to a type chosen so
that no result type exceeds 38 digits, and the values are bounded so that no cast overflows:

- quantity    Q   = DECIMAL(24, 12): 0 <= q < 10^12 (QUANTITY_LIMIT), 12 decimals
- unit prices P   = DECIMAL(13, 8):  < 10^5, at most 8 decimals (unit prices, overage, rates,
                                     package prices: everything multiplied by a quantity)
- amounts     A   = DECIMAL(37, 20): < 10^17 (fees, products, partial sums)
- result          = DECIMAL(38, 20), NULL outside the domain

Q x P is DECIMAL(38, 20), A + A is DECIMAL(38, 20): exact, no scale is ever cut. The 25 digits
left by the 12 quantity decimals and Flink's extra product digit are split as 12 quantity digits
+ 5 unit-price digits + 8 price decimals. A quantity outside [0, 10^12) gives NULL (the caller
rates that line at close, from the events); a charge whose parameters or largest amount do not
fit is refused when the SQL is built (`SqlDomainError`), never silently rounded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from decimal import Decimal

from meterflow.identifiers import NAME
from meterflow.price_book import PriceBook
from meterflow.pricing import (
    FlatFee,
    FreeUnits,
    Graduated,
    Package,
    Percentage,
    PerUnit,
    PriceModel,
    Tier,
    Volume,
    plain,
)

QUANTITY_SCALE = 12  # the meters' quantity type is DECIMAL(38, 12)
QUANTITY_DIGITS = 12  # integral digits of a quantity in the domain
PRICE_SCALE = 8  # decimals of any price parameter
PRICE_DIGITS = 5  # integral digits of a parameter multiplied by a quantity
AMOUNT_SCALE = QUANTITY_SCALE + PRICE_SCALE  # 20: a quantity times a price, exactly
AMOUNT_DIGITS = 37 - AMOUNT_SCALE  # 17: two amounts still add within 38 digits

QUANTITY_LIMIT = Decimal(10) ** QUANTITY_DIGITS
AMOUNT_LIMIT = Decimal(10) ** AMOUNT_DIGITS
# The largest quantity in the domain. Quantity parameters above it are clamped to it: for every
# q <= QMAX, min(q, x), max(0, q - x) and divmod(q, x) give the same price for x and for QMAX.
QMAX = QUANTITY_LIMIT - Decimal(1).scaleb(-QUANTITY_SCALE)

Q_TYPE = f"DECIMAL({QUANTITY_DIGITS + QUANTITY_SCALE}, {QUANTITY_SCALE})"
P_TYPE = f"DECIMAL({PRICE_DIGITS + PRICE_SCALE}, {PRICE_SCALE})"
A_TYPE = f"DECIMAL({AMOUNT_DIGITS + AMOUNT_SCALE}, {AMOUNT_SCALE})"
# A package count is at most QMAX / 10^-12 < 10^24; times P it is DECIMAL(38, 8).
COUNT_TYPE = f"DECIMAL({QUANTITY_DIGITS + QUANTITY_SCALE}, 0)"
RESULT_TYPE = f"DECIMAL(38, {AMOUNT_SCALE})"

_A_ZERO = f"CAST(0 AS {A_TYPE})"
_Q_ZERO = f"CAST(0 AS {Q_TYPE})"
_SIMPLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*|`[^`]+`")


class SqlDomainError(ValueError):
    """A charge cannot be rated exactly in SQL; `field` names the parameter, as in the book."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


# ----------------------------------------------------------------------------------- literals


def _decimals(d: Decimal) -> int:
    """Decimals of the value, trailing zeros not counted ("1.50" has 1)."""
    _sign, digits, exp = d.as_tuple()
    assert isinstance(exp, int)  # finite: the models refuse NaN and infinities
    n = len(digits)
    while exp < 0 and n > 1 and digits[n - 1] == 0:
        n, exp = n - 1, exp + 1
    if n == 1 and digits[0] == 0:
        return 0
    return max(0, -exp)


def _lit(d: Decimal, typ: str) -> str:
    # An exact numeric literal (Calcite reads 0.0005 as DECIMAL(4, 4), never as a double) cast
    # to the operand type: CAST('0.0005' AS ...) is as exact but doubled the planning time
    # (measured). Calcite refuses a numeric literal whose unscaled value exceeds a long, so a
    # value of more than 18 digits is written as a string.
    text = plain(d)
    if len(text.replace(".", "").lstrip("0")) > 18:
        text = f"'{text}'"
    return f"CAST({text} AS {typ})"


def _unit_price(d: Decimal, fld: str) -> str:
    if _decimals(d) > PRICE_SCALE:
        raise SqlDomainError(fld, f"{plain(d)} has more than {PRICE_SCALE} decimals")
    if d >= Decimal(10) ** PRICE_DIGITS:
        raise SqlDomainError(fld, f"{plain(d)} is not below 10^{PRICE_DIGITS}")
    return _lit(d, P_TYPE)


def _fee(d: Decimal, fld: str) -> str:
    if _decimals(d) > PRICE_SCALE:
        raise SqlDomainError(fld, f"{plain(d)} has more than {PRICE_SCALE} decimals")
    if d >= AMOUNT_LIMIT:
        raise SqlDomainError(fld, f"{plain(d)} is not below 10^{AMOUNT_DIGITS}")
    return _lit(d, A_TYPE)


def _quantity(d: Decimal, fld: str) -> str:
    if d >= QMAX:
        return _lit(QMAX, Q_TYPE)
    if _decimals(d) > QUANTITY_SCALE:
        raise SqlDomainError(fld, f"{plain(d)} has more than {QUANTITY_SCALE} decimals")
    return _lit(d, Q_TYPE)


# ----------------------------------------------------------------------------------- building


def _sum(terms: Sequence[str]) -> str:
    """A + A + ...: each partial sum cast back to A, so the next addition is DECIMAL(38, 20)
    again instead of growing past 38 digits (which would cut a decimal). Exact because every
    term is >= 0 and the total is below 10^17 (checked by `_check_bound`)."""
    if not terms:
        return _A_ZERO
    out = terms[0]
    for t in terms[1:]:
        out = f"CAST({out} + {t} AS {A_TYPE})"
    return out


def _times(qd: str, price: Decimal, fld: str) -> list[str]:
    """[Q x P as an amount], or [] when the price is 0 (nothing to add)."""
    if price == 0:
        return []
    return [f"CAST({qd} * {_unit_price(price, fld)} AS {A_TYPE})"]


def _fees(fee: Decimal, fld: str) -> list[str]:
    return [] if fee == 0 else [_fee(fee, fld)]


def _above(qd: str, x: Decimal, fld: str) -> str:
    """max(0, q - x) as Q (q - x is DECIMAL(25, 12); in [0, QMAX] it fits Q again)."""
    if x == 0:
        return qd
    lit = _quantity(x, fld)
    return f"CASE WHEN {qd} > {lit} THEN CAST({qd} - {lit} AS {Q_TYPE}) ELSE {_Q_ZERO} END"


def _reachable(tiers: Sequence[Tier]) -> list[tuple[int, Tier, Decimal | None]]:
    """(index, tier, bound) up to the first tier whose bound covers QMAX; that one is treated as
    open, since no quantity of the domain can go beyond it."""
    out: list[tuple[int, Tier, Decimal | None]] = []
    for i, t in enumerate(tiers):
        if t.up_to is None or t.up_to >= QMAX:
            out.append((i, t, None))
            break
        out.append((i, t, t.up_to))
    return out


def _graduated(m: Graduated, qd: str) -> str:
    terms: list[str] = []
    low = _Q_ZERO  # the previous tier's bound, as Q
    for i, t, bound in _reachable(m.tiers):
        # The units of this tier: min(q, up_to) - lower; only summed when q > lower, which is
        # the loop's `if q <= lower: break` (bounds increase, so later tiers are skipped too).
        upper = qd
        b = ""
        if bound is not None:
            b = _quantity(bound, f"tiers[{i}].up_to")
            upper = f"CASE WHEN {qd} < {b} THEN {qd} ELSE {b} END"
        # (upper - lower) is DECIMAL(25, 12); in [0, QMAX] it fits Q again.
        span = upper if i == 0 else f"CAST({upper} - {low} AS {Q_TYPE})"
        inner = _times(span, t.unit_price, f"tiers[{i}].unit_price")
        inner += _fees(t.flat_fee, f"tiers[{i}].flat_fee")
        if inner:
            terms.append(f"CASE WHEN {qd} > {low} THEN {_sum(inner)} ELSE {_A_ZERO} END")
        if bound is not None:
            low = b
    return _sum(terms)


def _volume(m: Volume, qd: str) -> str:
    # Every branch is A, so the CASE is A too (mixed decimal branches would be widened).
    parts = [f"CASE WHEN {qd} = 0 THEN {_A_ZERO}"]
    for i, t, bound in _reachable(m.tiers):
        amount = _sum(
            _times(qd, t.unit_price, f"tiers[{i}].unit_price")
            + _fees(t.flat_fee, f"tiers[{i}].flat_fee")
        )
        if bound is None:
            parts.append(f"ELSE {amount} END")
        else:
            parts.append(f"WHEN {qd} <= {_quantity(bound, f'tiers[{i}].up_to')} THEN {amount}")
    return " ".join(parts)


def _package(m: Package, qd: str) -> str:
    if m.package_price == 0:
        return _A_ZERO
    size = _quantity(m.package_size, "package_size")
    # Not CEIL(q / size): the quotient is rounded to the division's scale, so a quotient just
    # above an integer can round down onto it and lose the partial package. MOD is exact, and
    # (q - rest) / size is an exact integer (DECIMAL(38, 13) holds up to 10^25).
    rest = f"MOD({qd}, {size})"
    whole = f"CAST(({qd} - {rest}) / {size} AS {COUNT_TYPE})"
    count = f"CAST({whole} + CASE WHEN {rest} > 0 THEN 1 ELSE 0 END AS {COUNT_TYPE})"
    return f"CAST({count} * {_unit_price(m.package_price, 'package_price')} AS {A_TYPE})"


def _flat_fee(m: FlatFee, qd: str) -> str:
    over = _above(qd, m.included_units, "included_units")
    return _sum(_fees(m.fee, "fee") + _times(over, m.overage_unit_price, "overage_unit_price"))


def _amount(m: PriceModel, qd: str) -> str:
    """`m.price(m.event_quantity(q))` as an A expression, for a Q expression `qd` in [0, QMAX]."""
    if isinstance(m, PerUnit):
        return _sum(_times(qd, m.unit_price, "unit_price"))
    if isinstance(m, Graduated):
        return _graduated(m, qd)
    if isinstance(m, Volume):
        return _volume(m, qd)
    if isinstance(m, Package):
        return _package(m, qd)
    if isinstance(m, FlatFee):
        return _flat_fee(m, qd)
    if isinstance(m, Percentage):
        # Without bounds the fee is linear: price(event_quantity(q)) == rate x q. A rate is
        # <= 1, so P holds it.
        return _sum(_times(qd, m.rate, "rate"))
    if isinstance(m, FreeUnits):
        # FreeUnits.price: inner.price(inner.event_quantity(max(0, q - free))); FreeUnits'
        # own event_quantity is the identity.
        return _amount(m.inner, _above(qd, m.free_units, "free_units"))
    raise SqlDomainError("model", f"no SQL form for {type(m).__name__}")


def _max_amount(m: PriceModel) -> Decimal:
    """The largest amount over quantities in [0, QMAX]: a bound on every partial sum, since
    all terms are >= 0. Every model but Volume is non-decreasing; Volume peaks at a tier's
    upper end."""
    if isinstance(m, FreeUnits):
        return _max_amount(m.inner)
    points = [QMAX]
    if isinstance(m, Volume):
        points += [t.up_to for t in m.tiers if t.up_to is not None and t.up_to < QMAX]
    # price() computes in its own exact context.
    return max(m.price(m.event_quantity(p)) for p in points)


def _check_bound(m: PriceModel) -> None:
    top = _max_amount(m)
    if top >= AMOUNT_LIMIT:
        raise SqlDomainError(
            "model",
            f"amounts up to {plain(top)} for quantities below 10^{QUANTITY_DIGITS} do not fit "
            f"below 10^{AMOUNT_DIGITS}",
        )


def _operand(q: str) -> str:
    return q if _SIMPLE.fullmatch(q) else f"({q})"


def price_sql(model: PriceModel, q: str) -> str:
    """The period amount of `model` for the quantity expression `q`, as DECIMAL(38, 20).

    `q` is the period quantity (DECIMAL(38, 12), >= 0); the result equals
    `period_price(model, q)` exactly for 0 <= q < 10^12 and is NULL otherwise. For a percentage
    with per-event bounds `q` is the period's sum of clamped fees (scale <= 20) and the result
    is that sum (`model.price(fees) == fees`) for 0 <= q < 10^17, NULL otherwise.

    Raises SqlDomainError when a parameter, or the largest amount of the charge, is outside the
    domain (module docstring)."""
    q = _operand(q)
    if isinstance(model, Percentage) and model.needs_events:
        # The fees were computed per event (rate x value, clamped): with a rate and bounds of
        # <= 8 decimals and values of 12, a fee has <= 20 decimals, so the cast is exact.
        _unit_price(model.rate, "rate")
        for fld, bound in (
            ("per_event_min", model.per_event_min),
            ("per_event_max", model.per_event_max),
        ):
            if bound is not None:
                _fee(bound, fld)
        limit = plain(AMOUNT_LIMIT)
        return f"CASE WHEN {q} >= 0 AND {q} < {limit} THEN CAST({q} AS {RESULT_TYPE}) ELSE NULL END"
    amount = _amount(model, f"CAST({q} AS {Q_TYPE})")
    _check_bound(model)
    limit = plain(QUANTITY_LIMIT)
    return (
        f"CASE WHEN {q} >= 0 AND {q} < {limit} THEN CAST({amount} AS {RESULT_TYPE}) ELSE NULL END"
    )


# ----------------------------------------------------------------------------------- price book


def _string(s: str) -> str:
    # Ids are validated identifiers (no quote can occur); escape anyway, the standard way.
    return "'" + s.replace("'", "''") + "'"


def _id(kind: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{kind} id must be a string, got {value!r}")
    problem = NAME.problem(value)
    if problem is not None:
        raise ValueError(f"{kind} id {problem}")
    return value


def price_book_sql(
    charges: Iterable[tuple[str, int, str, PriceModel]],
    *,
    plan: str = "plan",
    version: str = "price_version",
    meter: str = "meter",
    quantity: str = "quantity",
    fee_sum: str | None = "fee_sum",
) -> str:
    """A CASE over the (plan, version, meter) columns giving the charge's `price_sql`, NULL for a
    meter without a charge (or a quantity outside the domain), as DECIMAL(38, 20).

    `charges` are (plan id, version number, meter id, model); a percentage with per-event bounds
    prices the `fee_sum` column, every other model the `quantity` column. Raises SqlDomainError
    naming plan, version and charge when one cannot be rated exactly in SQL."""
    # plan -> version -> meter -> expression, in the order given
    tree: dict[str, dict[int, dict[str, str]]] = {}
    for plan_id, number, meter_id, model in charges:
        _id("plan", plan_id)
        _id("meter", meter_id)
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise ValueError(f"plan {plan_id!r}: version must be a positive int, got {number!r}")
        where = f"plan {plan_id!r} version {number} charge {meter_id!r}"
        meters = tree.setdefault(plan_id, {}).setdefault(number, {})
        if meter_id in meters:
            raise ValueError(f"{where}: given twice")
        column = quantity
        if isinstance(model, Percentage) and model.needs_events:
            if fee_sum is None:
                raise ValueError(f"{where}: per-event bounds need a fee_sum column")
            column = fee_sum
        try:
            meters[meter_id] = price_sql(model, column)
        except SqlDomainError as exc:
            raise SqlDomainError(f"{where}: {exc.field}", exc.reason) from None
    # Nested by plan, then version, then meter rather than one branch per charge with a
    # three-way AND: the planner simplifies each branch under the negation of all earlier
    # ones, which made a flat CASE of 40 charges plan about twice as slowly (measured).
    return _case(
        plan,
        {
            _string(p): _case(
                version,
                {
                    str(v): _case(meter, {_string(m): e for m, e in ms.items()})
                    for v, ms in vs.items()
                },
            )
            for p, vs in tree.items()
        },
    )


def _case(column: str, branches: dict[str, str]) -> str:
    """CASE WHEN column = key THEN value ... ELSE NULL END; every branch is DECIMAL(38, 20)."""
    null = f"CAST(NULL AS {RESULT_TYPE})"
    if not branches:
        return null
    col = _operand(column)
    whens = " ".join(f"WHEN {col} = {k} THEN {v}" for k, v in branches.items())
    return f"CASE {whens} ELSE {null} END"


def book_charges(book: PriceBook) -> list[tuple[str, int, str, PriceModel]]:
    """Every charge of a price book, as `price_book_sql` takes them."""
    return [
        (p.id, v.version, c.meter, c.model)
        for p in book.plans.values()
        for v in p.versions
        for c in v.charges.values()
    ]
