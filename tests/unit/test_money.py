from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterflow.money import Currency, currency, format_amount, round_amount

USD, JPY, BHD = currency("USD"), currency("JPY"), currency("BHD")


def test_minor_units_table():
    assert currency("USD") == Currency("USD", 2)
    assert currency("JPY") == Currency("JPY", 0)
    assert currency("BHD") == Currency("BHD", 3)
    assert currency("KWD").minor_units == 3
    assert currency("KRW").minor_units == 0
    assert currency("EUR").quantum == Decimal("0.01")


@pytest.mark.parametrize("code", ["XYZ", "usd", "", "US"])
def test_unknown_currency_names_the_code(code):
    with pytest.raises(ValueError, match=repr(code)):
        currency(code)


@pytest.mark.parametrize(("code", "minor"), [("usd", 2), ("USD", -1), ("USD", 7), ("USD", True)])
def test_currency_rejects_bad_definitions(code, minor):
    with pytest.raises(ValueError):
        Currency(code, minor)


@pytest.mark.parametrize(
    ("amount", "code", "expected"),
    [
        ("1.005", "USD", "1.01"),  # half goes up
        ("1.0049999", "USD", "1.00"),
        ("2.675", "USD", "2.68"),  # exact in Decimal; the float 2.675 would round down
        ("0.125", "EUR", "0.13"),  # half up, not half even (0.12)
        ("-0.005", "USD", "-0.01"),  # half away from zero for negatives too
        ("-1.015", "USD", "-1.02"),
        ("-1.0149", "USD", "-1.01"),
        ("5", "USD", "5.00"),
        ("2.5", "JPY", "3"),
        ("3.5", "JPY", "4"),  # half even would give 4 here but 2 for 2.5
        ("-2.5", "JPY", "-3"),
        ("1234.4999", "JPY", "1234"),
        ("0.0005", "BHD", "0.001"),
        ("1.2344", "BHD", "1.234"),
        ("-0.0005", "KWD", "-0.001"),
        ("123456789012345678901234567.125", "USD", "123456789012345678901234567.13"),
    ],
)
def test_round_half_up(amount, code, expected):
    got = round_amount(Decimal(amount), currency(code))
    assert got == Decimal(expected)
    assert str(got) == expected  # also the number of decimals shown on the invoice


def test_rounding_to_zero_is_never_negative_zero():
    assert str(round_amount(Decimal("-0.004"), USD)) == "0.00"
    assert str(round_amount(Decimal("-0.4"), JPY)) == "0"


@pytest.mark.parametrize("bad", [Decimal("NaN"), Decimal("Infinity"), 1.5, 2])
def test_round_amount_rejects_non_decimals(bad):
    with pytest.raises(ValueError):
        round_amount(bad, USD)


AMOUNTS = st.decimals(
    min_value=-(10**12), max_value=10**12, places=8, allow_nan=False, allow_infinity=False
)


@settings(deadline=None)
@given(AMOUNTS, st.sampled_from([USD, JPY, BHD]))
def test_rounding_is_nearest_and_idempotent(amount, cur):
    r = round_amount(amount, cur)
    assert abs(r - amount) <= cur.quantum / 2
    assert round_amount(r, cur) == r
    assert r.as_tuple().exponent == -cur.minor_units


@settings(deadline=None)
@given(AMOUNTS, st.sampled_from([USD, JPY, BHD]))
def test_rounding_is_symmetric(amount, cur):
    assert round_amount(-amount, cur) == -round_amount(amount, cur)


@pytest.mark.parametrize(
    ("amount", "code", "shown"),
    [
        ("1.8", "USD", "1.80"),  # the reconcile line that printed "closed 1.8"
        ("1.800000000000", "USD", "1.80"),  # as read back from Decimal(38, 12)
        ("0", "USD", "0.00"),
        ("-0.00", "USD", "0.00"),  # never a negative zero
        ("-12.5", "EUR", "-12.50"),
        ("1800", "JPY", "1800"),  # no minor units
        ("2.5", "KWD", "2.500"),  # three minor units
        ("1E+3", "USD", "1000.00"),  # positional, never exponent notation
    ],
)
def test_format_amount_shows_the_currency_minor_units(amount, code, shown):
    assert format_amount(Decimal(amount), currency(code)) == shown


def test_format_amount_never_rounds_an_unrounded_amount():
    # a per-window streamed amount such as 0.0145 USD keeps its digits: display is not billing
    assert format_amount(Decimal("0.0145"), currency("USD")) == "0.0145"
