from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal as D
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from meterflow.meters import DEFAULT_METERS_FILE, load_meters
from meterflow.money import currency
from meterflow.price_book import (
    DEFAULT_PRICES_FILE,
    PRICES_DIR,
    PriceConfigError,
    PriceLookupError,
    load_price_book,
    parse_price_book,
)
from meterflow.pricing import (
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
    charge_amount,
    true_up,
)
from meterflow.testing.scenario import SCENARIO_METERS

# ------------------------------------------------------------------------------ strategies


def _decimals(lo: Any, hi: Any, places: int) -> st.SearchStrategy[D]:
    return st.decimals(
        min_value=lo, max_value=hi, places=places, allow_nan=False, allow_infinity=False
    )


QTY = _decimals(0, 10**9, 6)
PART = _decimals(0, 10**8, 6)
PRICE = _decimals(0, 1000, 4)
FEE = _decimals(0, 100, 2)
BOUND = _decimals(D("0.000001"), 10**6, 6)


@st.composite
def tiers(draw: st.DrawFn) -> list[Tier]:
    bounds = sorted(draw(st.lists(BOUND, unique=True, max_size=4)))
    closed = [Tier(b, draw(PRICE), draw(FEE)) for b in bounds]
    return [*closed, Tier(None, draw(PRICE), draw(FEE))]


@st.composite
def percentages(draw: st.DrawFn) -> Percentage:
    lo = draw(st.none() | FEE)
    hi = draw(st.none() | FEE)
    if lo is not None and hi is not None and lo > hi:
        lo, hi = hi, lo
    return Percentage(draw(_decimals(0, 1, 4)), lo, hi)


PER_UNIT = st.builds(PerUnit, PRICE)
GRADUATED = st.builds(Graduated, tiers())
VOLUME = st.builds(Volume, tiers())
PACKAGE = st.builds(Package, _decimals(D("0.001"), 10**6, 3), PRICE)
FLAT_FEE = st.builds(FlatFee, FEE, _decimals(0, 10**6, 2), PRICE)
PERCENTAGE = percentages()
MONOTONIC_BASE = st.one_of(PER_UNIT, GRADUATED, PACKAGE, FLAT_FEE, PERCENTAGE)
# free units cannot wrap a percentage clamped per event (see test_free_units_refuse_...)
FREE_INNER = st.one_of(
    PER_UNIT, GRADUATED, PACKAGE, FLAT_FEE, st.builds(Percentage, _decimals(0, 1, 4))
)
MONOTONIC = MONOTONIC_BASE | st.builds(FreeUnits, _decimals(0, 10**6, 3), FREE_INNER)
ANY_MODEL = MONOTONIC | VOLUME | st.builds(FreeUnits, _decimals(0, 10**6, 3), VOLUME)


# -------------------------------------------------------------------------- properties


@settings(deadline=None)
@given(ANY_MODEL, st.lists(PART, max_size=8))
def test_telescoping_over_any_split(model: PriceModel, parts: list[D]):
    # Pricing a period incrementally (e.g. per window) must sum to pricing it at once: exact
    # Decimal arithmetic, no rounding anywhere inside a model.
    running, increments = D(0), []
    for part in parts:
        increments.append(model.price(running + part) - model.price(running))
        running += part
    assert sum(increments, D(0)) == model.price(running) - model.price(D(0))


@settings(deadline=None)
@given(MONOTONIC, QTY, QTY)
def test_more_usage_never_costs_less(model: PriceModel, a: D, b: D):
    lo, hi = sorted((a, b))
    assert model.price(lo) <= model.price(hi)


@settings(deadline=None)
@given(ANY_MODEL, QTY)
def test_amounts_are_non_negative(model: PriceModel, q: D):
    assert model.price(q) >= 0


@settings(deadline=None)
@given(PRICE, st.lists(PART, max_size=8))
def test_per_unit_is_additive(unit_price: D, parts: list[D]):
    model = PerUnit(unit_price)
    assert sum((model.price(p) for p in parts), D(0)) == model.price(sum(parts, D(0)))


@settings(deadline=None)
@given(PRICE, FEE, QTY)
def test_a_single_open_tier_is_per_unit_plus_its_fee(unit_price: D, fee: D, q: D):
    one = [Tier(None, unit_price, fee)]
    expected = q * unit_price + (fee if q > 0 else 0)
    assert Graduated(one).price(q) == expected
    assert Volume(one).price(q) == expected


@settings(deadline=None)
@given(PACKAGE, QTY)
def test_package_buys_the_fewest_whole_packages(model: Package, q: D):
    amount = model.price(q)
    if model.package_price == 0:
        assert amount == 0
        return
    n = amount / model.package_price
    assert n == n.to_integral_value()
    assert (n - 1) * model.package_size < q <= n * model.package_size or q == n == 0


@settings(deadline=None)
@given(FREE_INNER | VOLUME, _decimals(0, 10**6, 3), QTY)
def test_free_units_shift_the_inner_price(inner: PriceModel, free: D, q: D):
    # the free units come off the meter quantity, before the inner model maps it
    rest = max(D(0), q - free)
    assert FreeUnits(free, inner).price(q) == inner.price(inner.event_quantity(rest))


@settings(deadline=None)
@given(PERCENTAGE, st.lists(_decimals(0, 10**6, 2), min_size=1, max_size=8))
def test_percentage_fees_are_clamped_per_event(model: Percentage, values: list[D]):
    fees = [model.event_quantity(v) for v in values]
    for fee in fees:
        assert model.per_event_min is None or fee >= model.per_event_min
        assert model.per_event_max is None or fee <= model.per_event_max
    total = sum(fees, D(0))
    assert model.price(total) == total
    if not model.needs_events:
        # Linear without a clamp: the fee of the summed values is the sum of the fees.
        assert model.event_quantity(sum(values, D(0))) == total


def test_volume_is_not_monotonic():
    model = Volume([Tier(D(100), D(1)), Tier(None, D("0.5"))])
    assert model.price(D(100)) == D(100)  # 100 * 1
    assert model.price(D(101)) == D("50.5")  # 101 * 0.5: one more unit, half the amount


# ----------------------------------------------------------------------- tier boundaries

TIERS = [
    Tier(D(1000), D("0.01")),
    Tier(D(5000), D("0.008"), flat_fee=D(2)),
    Tier(None, D("0.005"), flat_fee=D(5)),
]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("0", "0"),
        ("1000", "10.00"),  # 1000 * 0.01; up_to is inclusive, tier 2 not entered
        ("1000.000001", "12.000000008"),  # 10 + 0.000001 * 0.008 + 2
        ("5000", "44.000"),  # 10 + 4000 * 0.008 + 2
        ("5000.000001", "49.000000005"),  # 44 + 0.000001 * 0.005 + 5
        ("6000", "54.000"),  # 44 + 1000 * 0.005 + 5
    ],
)
def test_graduated_tier_boundaries(q, expected):
    assert Graduated(TIERS).price(D(q)) == D(expected)


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("0", "0"),
        ("1000", "10.00"),  # 1000 * 0.01
        ("1000.000001", "10.000000008"),  # 1000.000001 * 0.008 + 2
        ("5000", "42.000"),  # 5000 * 0.008 + 2
        ("5000.000001", "30.000000005"),  # 5000.000001 * 0.005 + 5
    ],
)
def test_volume_tier_boundaries(q, expected):
    assert Volume(TIERS).price(D(q)) == D(expected)


def test_first_tier_fee_is_due_as_soon_as_there_is_usage():
    model = Graduated([Tier(D(10), D(1), flat_fee=D(3)), Tier(None, D(0))])
    assert model.price(D(0)) == 0
    assert model.price(D("0.000001")) == D("3.000001")  # 3 + 0.000001 * 1
    assert model.price(D(10)) == D(13)  # 3 + 10 * 1
    assert model.price(D(11)) == D(13)  # the free open tier has no fee


# ------------------------------------------------------------------------- exact amounts


def test_per_unit_amount():
    assert PerUnit(D("0.002")).price(D(12345)) == D("24.690")  # 12345 * 0.002


def test_graduated_amount():
    model = Graduated([Tier(D(1000), D("0.01")), Tier(None, D("0.005"))])
    assert model.price(D(1500)) == D("12.50")  # 1000 * 0.01 + 500 * 0.005 = 10 + 2.5


def test_volume_amount():
    model = Volume([Tier(D(1000), D("0.01")), Tier(None, D("0.005"))])
    assert model.price(D(800)) == D("8.00")  # 800 * 0.01
    assert model.price(D(1500)) == D("7.500")  # all 1500 * 0.005


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("0", "0"),
        ("0.5", "5"),  # ceil(0.005) = 1 package
        ("200", "10"),  # 2 packages * 5
        ("200.000001", "15"),  # ceil(2.00000001) = 3 packages * 5
        ("250", "15"),  # ceil(2.5) = 3 packages * 5
    ],
)
def test_package_amount(q, expected):
    assert Package(D(100), D(5)).price(D(q)) == D(expected)


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("0", "49"),  # the fee is due without usage
        ("10", "49"),  # all included
        ("10.5", "51.0"),  # 49 + 0.5 * 4
        ("13", "61"),  # 49 + 3 * 4
    ],
)
def test_flat_fee_amount(q, expected):
    assert FlatFee(D(49), D(10), D(4)).price(D(q)) == D(expected)


def test_percentage_amount_clamps_each_event():
    model = Percentage(D("0.029"), D("0.30"), D(5))
    assert model.event_quantity(D(100)) == D("2.900")  # 100 * 0.029
    assert model.event_quantity(D(5)) == D("0.30")  # 5 * 0.029 = 0.145, raised to the minimum
    assert model.event_quantity(D(1000)) == D(5)  # 1000 * 0.029 = 29, capped at the maximum
    total = sum((model.event_quantity(D(v)) for v in (100, 5, 1000)), D(0))
    assert total == D("8.200")  # 2.9 + 0.30 + 5
    assert model.price(total) == D("8.200")
    # The clamp is per event: 1105 * 0.029 = 32.045 capped once would be 5, not 8.20.
    assert model.needs_events
    assert model.event_quantity(D(1105)) == D(5)


def test_percentage_without_clamp_is_linear():
    model = Percentage(D("0.1"))
    assert not model.needs_events
    assert model.event_quantity(D("12.5")) == D("1.25")  # 12.5 * 0.1


def test_free_units_amount():
    assert FreeUnits(D(100), PerUnit(D(1))).price(D(250)) == D(150)  # (250 - 100) * 1
    assert FreeUnits(D(100), PerUnit(D(1))).price(D(50)) == 0
    assert FreeUnits(D(10), FlatFee(D(49))).price(D(5)) == D(49)  # the inner fee stays due


def test_free_units_on_a_percentage_come_off_the_value_before_the_rate():
    # "the first 1,000 units of the period are free": units of the metered value (payments)
    model = FreeUnits(D(1000), Percentage(D("0.029")))
    assert not model.needs_events
    assert model.price(D(1500)) == D("14.500")  # (1500 - 1000) * 0.029, not 1500 * 0.029 - 1000
    assert model.price(D(800)) == 0  # all 800 units within the free 1,000
    assert charge_amount(model, D(1500), [D(700), D(800)]) == D("14.500")  # same from the total


def test_free_units_refuse_a_percentage_with_per_event_bounds():
    # which events the free units would cover depends on their order: refused, not guessed
    with pytest.raises(PriceModelError, match=r"free_units: .* per_event_min"):
        FreeUnits(D(2), Percentage(D("0.5"), per_event_min=D(1)))


def test_charge_amount_uses_event_values_only_for_per_event_bounds():
    bounded = Percentage(D("0.029"), D("0.30"), D(5))
    values = [D(100), D(5), D(1000)]
    assert bounded.needs_events
    assert charge_amount(bounded, D(1105), values) == D("8.200")  # 2.9 + 0.30 + 5
    assert charge_amount(bounded, D(0), []) == 0
    unbounded = Percentage(D("0.1"))
    assert not unbounded.needs_events
    assert charge_amount(unbounded, D("6.5"), [D(2), D("4.5")]) == D("0.65")  # 6.5 * 0.1
    assert charge_amount(PerUnit(D(2)), D(3), []) == D(6)  # 3 * 2


@pytest.mark.parametrize(
    ("usage", "minimum", "expected"),
    [
        ("12.34", "20.00", "7.66"),  # 20.00 - 12.34
        ("20.00", "20.00", "0"),
        ("25.00", "20.00", "0"),
        ("0", "20.00", "20.00"),
        ("12.34", None, "0"),
    ],
)
def test_true_up(usage, minimum, expected):
    assert true_up(D(usage), None if minimum is None else D(minimum)) == D(expected)


# ---------------------------------------------------------------------------- validation

ALL_MODELS = [
    PerUnit(D(1)),
    Graduated([Tier(None, D(1))]),
    Volume([Tier(None, D(1))]),
    Package(D(1), D(1)),
    FlatFee(D(1)),
    Percentage(D("0.1")),
    FreeUnits(D(1), PerUnit(D(1))),
]


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: type(m).__name__)
def test_quantity_must_be_a_finite_non_negative_decimal(model):
    with pytest.raises(ValueError, match=">= 0"):
        model.price(D("-0.000001"))
    with pytest.raises(ValueError, match="finite"):
        model.price(D("NaN"))
    with pytest.raises(TypeError):
        model.price(1.5)
    assert not str(model.price(D("-0"))).startswith("-")


def test_percentage_rejects_negative_event_values():
    with pytest.raises(ValueError, match="event value"):
        Percentage(D("0.1")).event_quantity(D(-1))
    assert PerUnit(D(1)).event_quantity(D(-1)) == D(-1)  # identity: corrections pass through


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: PerUnit(D(-1)), "unit_price"),
        (lambda: PerUnit(1), "unit_price"),
        (lambda: Graduated([]), "tiers"),
        (lambda: Graduated([Tier(None, D(1)), Tier(None, D(1))]), "tiers[0].up_to"),
        (lambda: Graduated([Tier(D(10), D(1))]), "tiers[0].up_to"),
        (lambda: Graduated([Tier(D(0), D(1)), Tier(None, D(1))]), "tiers[0].up_to"),
        (
            lambda: Volume([Tier(D(10), D(1)), Tier(D(10), D(1)), Tier(None, D(1))]),
            "tiers[1].up_to",
        ),
        (lambda: Volume([Tier(None, D(1), flat_fee=D(-1))]), "tiers[0].flat_fee"),
        (lambda: Package(D(0), D(1)), "package_size"),
        (lambda: FlatFee(D(1), D(-1)), "included_units"),
        (lambda: Percentage(D("1.01")), "rate"),
        (lambda: Percentage(D("0.1"), D(2), D(1)), "per_event_min"),
        (lambda: FreeUnits(D(-1), PerUnit(D(1))), "free_units"),
    ],
)
def test_model_parameters_are_validated(make, field):
    with pytest.raises(PriceModelError) as err:
        make()
    assert err.value.field == field


# ------------------------------------------------------------------------------- loading


def test_shipped_default_book_prices_the_default_meters():
    book = load_price_book(DEFAULT_PRICES_FILE)
    assert set(book.plans) == {"starter", "growth", "tokyo"}
    assert book.plan("tokyo").currency == currency("JPY")
    meters = {m.id for m in load_meters(DEFAULT_METERS_FILE)}
    charged = {c for p in book.plans.values() for v in p.versions for c in v.charges}
    assert charged == meters
    growth = book.plan("growth")
    assert [v.version for v in growth.versions] == [1, 2]
    assert growth.version(2).effective_from == datetime(2026, 7, 1, tzinfo=UTC)


def _model_types(model: PriceModel) -> set[type]:
    inner = _model_types(model.inner) if isinstance(model, FreeUnits) else set()
    return {type(model)} | inner


def test_shipped_scenario_book_uses_every_model():
    book = load_price_book(PRICES_DIR / "scenario.yaml")
    meters = {m.id for m in load_meters(SCENARIO_METERS)}
    scenario, high = book.plan("scenario").version(1), book.plan("scenario_min").version(1)
    assert set(scenario.charges) == set(high.charges) == meters
    # the same charges, except tokens: a percentage with per-event bounds in scenario_min
    assert {m: c.model for m, c in scenario.charges.items() if m != "tokens"} == {
        m: c.model for m, c in high.charges.items() if m != "tokens"
    }
    assert high.charges["tokens"].model == Percentage(D("0.001"), D("0.50"), D("2.00"))
    assert (scenario.minimum, high.minimum) == (D("5.00"), D("100000.00"))
    used = set().union(*(_model_types(c.model) for c in scenario.charges.values()))
    assert used == {PerUnit, Graduated, Volume, Package, FlatFee, Percentage, FreeUnits}
    assert not any(c.model.needs_events for c in scenario.charges.values())


def test_charges_describe_themselves():
    starter = load_price_book().plan("starter").version(1)
    assert starter.charges["llm_tokens"].describe() == (
        "graduated: 0-1000000 @ 0.000002, >1000000 @ 0.0000015"
    )
    assert starter.charges["api_calls"].describe() == (
        "first 10000 units free, then per unit @ 0.0005"
    )
    assert Percentage(D("0.029"), D("0.30"), D(5)).describe() == (
        "percentage: 2.9% of each event's value, min 0.30, max 5 per event"
    )


def test_version_in_force():
    growth = load_price_book().plan("growth")
    assert growth.version_in_force(datetime(2026, 1, 1, tzinfo=UTC)).version == 1
    assert growth.version_in_force(datetime(2026, 6, 30, 23, 59, 59, tzinfo=UTC)).version == 1
    assert growth.version_in_force(datetime(2026, 7, 1, tzinfo=UTC)).version == 2
    # 2026-07-01 01:00 in UTC+2 is still June 30 in UTC.
    tz = timezone(timedelta(hours=2))
    assert growth.version_in_force(datetime(2026, 7, 1, 1, tzinfo=tz)).version == 1
    with pytest.raises(PriceLookupError, match="no version in force"):
        growth.version_in_force(datetime(2025, 12, 31, tzinfo=UTC))
    with pytest.raises(ValueError, match="timezone-aware"):
        growth.version_in_force(datetime(2026, 7, 1))


def test_unknown_plan_and_version_are_clear_lookup_errors():
    book = load_price_book()
    with pytest.raises(KeyError) as err:
        book.plan("enterprise")
    assert str(err.value).endswith(
        "unknown plan 'enterprise' (plans: ['growth', 'starter', 'tokyo'])"
    )
    with pytest.raises(PriceLookupError, match="has no version 3"):
        book.plan("growth").version(3)


def _book(charge: Any = None, **version: Any) -> dict[str, Any]:
    v = {
        "version": 1,
        "effective_from": "2026-01-01",
        "charges": {"m": {"model": "per_unit", "unit_price": "1"} if charge is None else charge},
    }
    v.update(version)
    return {"plans": [{"id": "p", "currency": "USD", "versions": [v]}]}


def _load(tmp_path, data: Any):
    path = tmp_path / "prices.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path, load_price_book(path)


def test_numbers_may_be_strings_or_ints(tmp_path):
    text = """
plans:
  - id: p
    currency: USD
    versions:
      - version: 1
        effective_from: 2026-01-01
        charges:
          m: {model: flat_fee, fee: "49", included_units: 10, overage_unit_price: "0.1"}
"""
    _, book = _load(tmp_path, text)
    model = book.plan("p").version(1).charges["m"].model
    assert model == FlatFee(D(49), D(10), D("0.1"))  # 0.1 exactly, not the binary float


def test_bare_yaml_floats_are_refused(tmp_path):
    # str() of the float would give 1.2345678901234568e+16 here: a silently different price
    text = yaml.safe_dump(_book()).replace("'1'", "12345678901234567.89")
    with pytest.raises(PriceConfigError) as err:
        _load(tmp_path, text)
    assert str(err.value) == (
        f"{tmp_path / 'prices.yaml'}: plan 'p' version 1: charge 'm': field 'unit_price': "
        'must be a quoted decimal string like "1.5" or an integer, '
        "not the YAML float 1.2345678901234568e+16"
    )


def test_effective_from_accepts_datetimes_as_utc(tmp_path):
    text = yaml.safe_dump(_book()).replace("'2026-01-01'", "2026-01-01T02:00:00+02:00")
    _, book = _load(tmp_path, text)
    assert book.plan("p").version(1).effective_from == datetime(2026, 1, 1, tzinfo=UTC)
    text = yaml.safe_dump(_book()).replace("'2026-01-01'", "2026-01-01 06:00:00")
    _, book = _load(tmp_path, text)
    assert book.plan("p").version(1).effective_from == datetime(2026, 1, 1, 6, tzinfo=UTC)


TIERS_OK = [{"up_to": 100, "unit_price": "1"}, {"unit_price": "0.5"}]


@pytest.mark.parametrize(
    ("charge", "field"),
    [
        ({"model": "tiered"}, "model"),
        ("per_unit", "model"),
        ({"model": "per_unit"}, "unit_price"),
        ({"model": "per_unit", "unit_price": "1", "colour": "red"}, "colour"),
        ({"model": "per_unit", "unit_price": "-1"}, "unit_price"),
        ({"model": "per_unit", "unit_price": "abc"}, "unit_price"),
        ({"model": "per_unit", "unit_price": True}, "unit_price"),
        ({"model": "per_unit", "unit_price": "NaN"}, "unit_price"),
        ({"model": "graduated", "tiers": []}, "tiers"),
        (
            {"model": "graduated", "tiers": [TIERS_OK[0], TIERS_OK[0], TIERS_OK[1]]},
            "tiers[1].up_to",
        ),
        ({"model": "graduated", "tiers": [TIERS_OK[1], TIERS_OK[1]]}, "tiers[0].up_to"),
        ({"model": "graduated", "tiers": [TIERS_OK[0]]}, "tiers[0].up_to"),
        ({"model": "graduated", "tiers": [{"up_to": 5}, TIERS_OK[1]]}, "tiers[0].unit_price"),
        ({"model": "volume", "tiers": [{"unit_price": "1", "price": "2"}]}, "tiers[0].price"),
        (
            {"model": "volume", "tiers": [{"unit_price": "1", "flat_fee": "-2"}]},
            "tiers[0].flat_fee",
        ),
        (
            {"model": "volume", "tiers": [{"up_to": -1, "unit_price": "1"}, TIERS_OK[1]]},
            "tiers[0].up_to",
        ),
        ({"model": "package", "package_size": 0, "package_price": "5"}, "package_size"),
        ({"model": "package", "package_size": 10}, "package_price"),
        ({"model": "flat_fee", "fee": "49", "included_units": -1}, "included_units"),
        ({"model": "flat_fee", "fee": "-49"}, "fee"),
        ({"model": "percentage", "rate": "1.5"}, "rate"),
        (
            {"model": "percentage", "rate": "0.1", "per_event_min": 2, "per_event_max": 1},
            "per_event_min",
        ),
        ({"model": "percentage", "rate": "0.1", "unit_price": "1"}, "unit_price"),
        ({"model": "per_unit", "unit_price": "1", "free_units": "-1"}, "free_units"),
    ],
)
def test_charge_errors_name_file_plan_version_charge_and_field(tmp_path, charge, field):
    path = tmp_path / "prices.yaml"
    with pytest.raises(PriceConfigError) as err:
        _load(tmp_path, _book(charge))
    assert str(err.value).startswith(f"{path}: plan 'p' version 1: charge 'm': field '{field}': ")


@pytest.mark.parametrize(
    ("version", "field"),
    [
        ({"effective_from": None}, "effective_from"),
        ({"effective_from": "soon"}, "effective_from"),
        ({"minimum": "-1"}, "minimum"),
        ({"minimum": "20.001"}, "minimum"),  # more decimals than USD has
        ({"charges": {}}, "charges"),
        ({"notes": "hi"}, "notes"),
    ],
)
def test_version_errors_name_file_plan_version_and_field(tmp_path, version, field):
    path = tmp_path / "prices.yaml"
    with pytest.raises(PriceConfigError) as err:
        _load(tmp_path, _book(**version))
    assert str(err.value).startswith(f"{path}: plan 'p' version 1: field '{field}': ")


def test_version_number_must_be_a_positive_integer(tmp_path):
    with pytest.raises(PriceConfigError, match="plan 'p' version 0: field 'version': "):
        _load(tmp_path, _book(version=0))


def _two_versions(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    data = _book()
    v1 = data["plans"][0]["versions"][0]
    data["plans"][0]["versions"] = [{**v1, **first}, {**v1, **second}]
    return data


@pytest.mark.parametrize(
    ("first", "second", "label", "field"),
    [
        ({"version": 2}, {"version": 1}, "version 1", "version"),
        ({"version": 1}, {"version": 1}, "version 1", "version"),
        ({"effective_from": "2026-07-01"}, {"version": 2}, "version 2", "effective_from"),
    ],
)
def test_versions_and_dates_must_increase(tmp_path, first, second, label, field):
    with pytest.raises(PriceConfigError) as err:
        _load(tmp_path, _two_versions(first, second))
    assert f"plan 'p' {label}: field '{field}': " in str(err.value)


@pytest.mark.parametrize(
    ("plan", "field"),
    [
        ({"currency": "XYZ"}, "currency"),
        ({"currency": None}, "currency"),
        ({"versions": []}, "versions"),
        ({"id": ""}, "id"),
        ({"tier": "gold"}, "tier"),
    ],
)
def test_plan_errors_name_file_plan_and_field(tmp_path, plan, field):
    data = _book()
    data["plans"][0].update(plan)
    path = tmp_path / "prices.yaml"
    with pytest.raises(PriceConfigError) as err:
        _load(tmp_path, data)
    assert str(err.value).startswith(f"{path}: plan '{data['plans'][0]['id']}': field '{field}': ")


def test_duplicate_plan_ids_are_rejected(tmp_path):
    data = _book()
    data["plans"].append(data["plans"][0])
    with pytest.raises(PriceConfigError, match="plan 'p': field 'id': defined twice"):
        _load(tmp_path, data)


@pytest.mark.parametrize("text", ["", "plans: []", "plans: {}", "prices: []"])
def test_a_file_without_plans_is_rejected(tmp_path, text):
    with pytest.raises(PriceConfigError, match="field 'plans'"):
        _load(tmp_path, text)


def test_invalid_yaml_names_the_file(tmp_path):
    with pytest.raises(PriceConfigError, match=r"prices\.yaml: not valid YAML"):
        _load(tmp_path, "plans: [")


def test_parse_price_book_names_its_source():
    with pytest.raises(PriceConfigError, match=r"^inline\.yaml: plan 'p' version 1: charge 'm'"):
        parse_price_book(_book({"model": "per_unit", "unit_price": "-1"}), "inline.yaml")
