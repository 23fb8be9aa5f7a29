"""The proof of jobs/pricing_sql.py: the SQL of random price models, evaluated by a real PyFlink
mini-cluster (batch mode, in-process, no services), equals meterflow's exact pricing.

Seeded random models of every kind (FreeUnits over each unbounded kind, nested once, and a
percentage with per-event bounds), each with edge and random quantities: 0, 1e-12, tier bounds
exactly and 1e-12 either side, package multiples and 1e-12 either side, fractional package
sizes, free units larger than the quantity, the largest quantity of the domain, and quantities
outside it (which must give NULL). All rows go through one Flink job, one UNION ALL branch per
model kind, each a `price_book_sql` CASE over that kind's models. Quantities travel as strings
and are cast to DECIMAL(38, 12) in SQL; amounts come back as strings: no float or driver
conversion stands between the two exact sides.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from decimal import Context, Decimal, localcontext

import pytest

from jobs.pricing_sql import (
    AMOUNT_LIMIT,
    QMAX,
    QUANTITY_LIMIT,
    SqlDomainError,
    price_book_sql,
    price_sql,
)
from jobs.streaming.environment import LOOPBACK
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
from meterflow.rating import period_price

pytestmark = pytest.mark.integration

SEED = 11_0011
MODELS_PER_KIND = 14
RANDOM_QUANTITIES = 40
TINY = Decimal("1e-12")
# The largest value of the job's DECIMAL(38, 12) quantity column.
COLUMN_MAX = Decimal("99999999999999999999999999.999999999999")


# ------------------------------------------------------------------------- random parameters


def _dec(rng: random.Random, max_int_digits: int, max_scale: int) -> Decimal:
    digits = rng.randint(0, max_int_digits)
    scale = rng.randint(0, max_scale)
    return Decimal(rng.randrange(10 ** (digits + scale))).scaleb(-scale)


def _price(rng: random.Random) -> Decimal:
    # Mostly small prices (the usual per-unit case), sometimes the domain's largest.
    if rng.random() < 0.05:
        return Decimal("99999.99999999")
    if rng.random() < 0.1:
        return Decimal(0)
    return _dec(rng, rng.choice([0, 0, 1, 2, 5]), 8)


def _fee(rng: random.Random) -> Decimal:
    return Decimal(0) if rng.random() < 0.4 else _dec(rng, rng.choice([1, 3, 6, 12]), 8)


def _qty(rng: random.Random, max_int_digits: int = 12) -> Decimal:
    return _dec(rng, max_int_digits, 12)


def _bounds(rng: random.Random, n: int) -> list[Decimal]:
    out: list[Decimal] = []
    while len(out) < n:
        b = _qty(rng, rng.choice([1, 3, 6, 11]))
        if rng.random() < 0.05:
            b = Decimal(10) ** 15  # beyond the domain: clamped, later tiers unreachable
        if b > 0 and b not in out:
            out.append(b)
    return sorted(out)


def _tiers(rng: random.Random) -> list[Tier]:
    bounds = _bounds(rng, rng.randint(0, 4))
    return [Tier(b, _price(rng), _fee(rng)) for b in [*bounds, None]]


def _package(rng: random.Random) -> Package:
    size = rng.choice(
        [
            Decimal(1),
            Decimal("0.3"),
            Decimal("2.5"),
            Decimal("0.000001"),
            Decimal(1_000_000),
            Decimal("1e15"),  # larger than any quantity of the domain
            _qty(rng, 4) or Decimal("0.7"),
        ]
    )
    return Package(size, _price(rng))


def _percentage(rng: random.Random) -> Percentage:
    return Percentage(_dec(rng, 0, 8) if rng.random() < 0.9 else Decimal(1))


def _unbounded(rng: random.Random) -> PriceModel:
    return KINDS[rng.choice(UNBOUNDED)](rng)


def _free(rng: random.Random) -> FreeUnits:
    free = _qty(rng, rng.choice([0, 2, 6, 12])) if rng.random() < 0.9 else Decimal(10) ** 20
    inner = _unbounded(rng)
    if rng.random() < 0.15:
        inner = FreeUnits(_qty(rng, 3), inner)
    return FreeUnits(free, inner)


def _bounded(rng: random.Random) -> Percentage:
    lo = _dec(rng, 2, 8) if rng.random() < 0.7 else None
    hi = _dec(rng, 4, 8) if rng.random() < 0.7 or lo is None else None
    if lo is not None and hi is not None and lo > hi:
        lo, hi = hi, lo
    return Percentage(_dec(rng, 0, 8), lo, hi)


KINDS: dict[str, Callable[[random.Random], PriceModel]] = {
    "per_unit": lambda r: PerUnit(_price(r)),
    "graduated": lambda r: Graduated(_tiers(r)),
    "volume": lambda r: Volume(_tiers(r)),
    "package": _package,
    "flat_fee": lambda r: FlatFee(_fee(r), _qty(r, r.choice([0, 3, 9])), _price(r)),
    "percentage": _percentage,
    "free_units": _free,
    "bounded_percentage": _bounded,
}
UNBOUNDED = ["per_unit", "graduated", "volume", "package", "flat_fee", "percentage"]


# ------------------------------------------------------------------------- quantities


def _near(x: Decimal) -> list[Decimal]:
    return [x - TINY, x, x + TINY]


def _edges(m: PriceModel) -> Iterator[Decimal]:
    """Quantities where the model changes shape: bounds, multiples, free units."""
    if isinstance(m, Graduated | Volume):
        for t in m.tiers:
            if t.up_to is not None:
                yield from _near(t.up_to)
    if isinstance(m, Package):
        for k in (1, 2, 7, 1000):
            yield from _near(m.package_size * k)
        yield m.package_size / 2
    if isinstance(m, FlatFee):
        yield from _near(m.included_units)
    if isinstance(m, FreeUnits):
        yield from _near(m.free_units)
        yield m.free_units / 3  # free units larger than the quantity
        for inner_q in _edges(m.inner):
            yield from _near(m.free_units + inner_q)


def _quantities(rng: random.Random, m: PriceModel) -> list[Decimal]:
    if isinstance(m, Percentage) and m.needs_events:
        # A fee sum: the job's FEE column is DECIMAL(38, 18); the domain ends at 10^17.
        fees = [_dec(rng, rng.choice([0, 3, 9, 16]), 18) for _ in range(RANDOM_QUANTITIES)]
        return [Decimal(0), AMOUNT_LIMIT - Decimal("1e-18"), AMOUNT_LIMIT, *fees]
    qs = [Decimal(0), TINY, QMAX, QUANTITY_LIMIT, COLUMN_MAX, *_edges(m)]
    qs += [_qty(rng, rng.choice([0, 2, 4, 8, 12])) for _ in range(RANDOM_QUANTITIES)]
    # Only what the column can hold, >= 0, with at most 12 decimals (the job's quantity type).
    return sorted(
        {q for q in qs if 0 <= q <= COLUMN_MAX and q == q.quantize(TINY) and q.is_finite()}
    )


def _expected(m: PriceModel, q: Decimal) -> Decimal | None:
    if isinstance(m, Percentage) and m.needs_events:
        return m.price(q) if q < AMOUNT_LIMIT else None  # the fee sum, priced as the identity
    return period_price(m, q) if q < QUANTITY_LIMIT else None


# ------------------------------------------------------------------------- Flink


@pytest.fixture(scope="module")
def t_env():
    from pyflink.table import EnvironmentSettings, TableEnvironment

    env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    config = env.get_config()
    for k, v in {
        **LOOPBACK,
        "parallelism.default": "1",
        "table.local-time-zone": "UTC",
    }.items():
        config.set(k, v)
    return env


def _generate() -> tuple[dict[str, list[tuple[str, int, str, PriceModel]]], list[tuple]]:
    # Edge quantities like free_units + a tier bound need more than the default 28 digits.
    with localcontext(Context(prec=100)):
        return _generate_exact()


def _generate_exact() -> tuple[dict[str, list[tuple[str, int, str, PriceModel]]], list[tuple]]:
    rng = random.Random(SEED)
    charges: dict[str, list[tuple[str, int, str, PriceModel]]] = {}
    rows: list[tuple] = []
    refused = 0
    for kind, make in KINDS.items():
        plan = f"p_{kind}"
        charges[plan] = []
        while len(charges[plan]) < MODELS_PER_KIND:
            model = make(rng)
            try:
                price_sql(model, "q")
            except SqlDomainError:
                refused += 1  # e.g. a tiny package size whose count overflows 10^17
                continue
            version = len(charges[plan]) + 1
            charges[plan].append((plan, version, "m", model))
            for q in _quantities(rng, model):
                rows.append((len(rows), plan, version, "m", plain(q)))
    # Most random models are inside the domain, or the proof would prove little.
    assert refused < MODELS_PER_KIND, refused
    return charges, rows


def test_sql_prices_equal_python_pricing(t_env) -> None:
    from pyflink.table import DataTypes

    started = time.monotonic()
    charges, rows = _generate()
    src = t_env.from_elements(
        rows,
        DataTypes.ROW(
            [
                DataTypes.FIELD("id", DataTypes.BIGINT()),
                DataTypes.FIELD("plan", DataTypes.STRING()),
                DataTypes.FIELD("price_version", DataTypes.INT()),
                DataTypes.FIELD("meter", DataTypes.STRING()),
                DataTypes.FIELD("q", DataTypes.STRING()),
            ]
        ),
    )
    t_env.create_temporary_view(
        "priced_in",
        t_env.sql_query(
            "SELECT id, plan, price_version, meter, CAST(q AS DECIMAL(38, 12)) AS quantity, "
            f"CAST(q AS DECIMAL(38, 18)) AS fee_sum FROM {src}"
        ),
    )
    branches = [
        f"SELECT id, {price_book_sql(ch)} AS amount FROM priced_in WHERE plan = '{plan}'"
        for plan, ch in charges.items()
    ]
    priced = t_env.sql_query(" UNION ALL ".join(branches))
    # The declared result type, whatever the branch: what the job's sink column must be.
    typ = priced.get_schema().get_field_data_type("amount")
    assert (type(typ).__name__, typ.precision, typ.scale, typ._nullable) == (
        "DecimalType",
        38,
        20,
        True,
    )
    out = t_env.sql_query(f"SELECT id, CAST(amount AS STRING) FROM {priced}")
    with out.execute().collect() as results:
        actual = {r[0]: r[1] for r in results}

    models = {(p, v): m for ch in charges.values() for p, v, _, m in ch}
    mismatches = []
    for i, plan, version, _, q in rows:
        model = models[(plan, version)]
        want = _expected(model, Decimal(q))
        got = actual[i]
        if (None if got is None else Decimal(got)) != want:
            mismatches.append(f"{model!r} q={q}: sql {got}, python {want}")
    assert len(actual) == len(rows)
    assert not mismatches, f"{len(mismatches)} of {len(rows)}:\n" + "\n".join(mismatches[:20])
    in_domain = sum(1 for i in actual if actual[i] is not None)
    print(
        f"{len(rows)} rows ({in_domain} priced, {len(rows) - in_domain} NULL), "
        f"{sum(map(len, charges.values()))} models, {time.monotonic() - started:.1f}s"
    )
