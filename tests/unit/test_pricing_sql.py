"""jobs/pricing_sql.py as strings: the exact SQL per model, the refusals outside the domain and
the price-book CASE. That the SQL computes the same numbers as meterflow.pricing is proven by
tests/integration/test_pricing_sql.py on a real Flink mini-cluster."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal as D

import pytest

from jobs.pricing_sql import QMAX, SqlDomainError, book_charges, price_book_sql, price_sql
from meterflow.price_book import load_price_book
from meterflow.pricing import (
    FlatFee,
    FreeUnits,
    Graduated,
    Package,
    Percentage,
    PerUnit,
    Tier,
    Volume,
)
from meterflow.settings import REPO_ROOT

Q = "CAST(q AS DECIMAL(24, 12))"
Z = "CAST(0 AS DECIMAL(37, 20))"


def guarded(amount: str, q: str = "q") -> str:
    return (
        f"CASE WHEN {q} >= 0 AND {q} < 1000000000000 "
        f"THEN CAST({amount} AS DECIMAL(38, 20)) ELSE NULL END"
    )


def test_per_unit():
    assert price_sql(PerUnit(D("0.0005")), "q") == guarded(
        f"CAST({Q} * CAST(0.0005 AS DECIMAL(13, 8)) AS DECIMAL(37, 20))"
    )


def test_a_zero_price_adds_nothing():
    assert price_sql(PerUnit(D(0)), "q") == guarded(Z)


def test_an_expression_is_parenthesised():
    sql = price_sql(PerUnit(D(1)), "a + b")
    assert sql.startswith("CASE WHEN (a + b) >= 0 AND (a + b) < 1000000000000 ")
    assert "CAST((a + b) AS DECIMAL(24, 12))" in sql


def test_graduated_tiers_are_inclusive_and_fees_added_on_entry():
    sql = price_sql(Graduated([Tier(D(10), D(1)), Tier(None, D("0.5"), D(3))]), "q")
    ten = "CAST(10 AS DECIMAL(24, 12))"
    first = (
        f"CASE WHEN {Q} > CAST(0 AS DECIMAL(24, 12)) THEN "
        f"CAST(CASE WHEN {Q} < {ten} THEN {Q} ELSE {ten} END * CAST(1 AS DECIMAL(13, 8)) "
        f"AS DECIMAL(37, 20)) ELSE {Z} END"
    )
    second = (
        f"CASE WHEN {Q} > {ten} THEN CAST(CAST(CAST({Q} - {ten} AS DECIMAL(24, 12)) "
        "* CAST(0.5 AS DECIMAL(13, 8)) AS DECIMAL(37, 20)) + CAST(3 AS DECIMAL(37, 20)) "
        f"AS DECIMAL(37, 20)) ELSE {Z} END"
    )
    assert sql == guarded(f"CAST({first} + {second} AS DECIMAL(37, 20))")


def test_volume_prices_all_units_at_the_tier_of_the_total():
    sql = price_sql(Volume([Tier(D(10), D(1)), Tier(None, D("0.5"), D(3))]), "q")
    assert sql == guarded(
        f"CASE WHEN {Q} = 0 THEN {Z} "
        f"WHEN {Q} <= CAST(10 AS DECIMAL(24, 12)) "
        f"THEN CAST({Q} * CAST(1 AS DECIMAL(13, 8)) AS DECIMAL(37, 20)) "
        f"ELSE CAST(CAST({Q} * CAST(0.5 AS DECIMAL(13, 8)) AS DECIMAL(37, 20)) "
        "+ CAST(3 AS DECIMAL(37, 20)) AS DECIMAL(37, 20)) END"
    )


def test_package_counts_partial_packages_with_an_exact_remainder():
    sql = price_sql(Package(D("2.5"), D(3)), "q")
    size = "CAST(2.5 AS DECIMAL(24, 12))"
    rest = f"MOD({Q}, {size})"
    count = (
        f"CAST(CAST(({Q} - {rest}) / {size} AS DECIMAL(24, 0)) "
        f"+ CASE WHEN {rest} > 0 THEN 1 ELSE 0 END AS DECIMAL(24, 0))"
    )
    assert sql == guarded(f"CAST({count} * CAST(3 AS DECIMAL(13, 8)) AS DECIMAL(37, 20))")
    assert "CEIL" not in sql and "FLOOR" not in sql  # a rounded quotient could lose a package


def test_flat_fee_with_overage():
    sql = price_sql(FlatFee(D(5), D(100), D("0.06")), "q")
    hundred = "CAST(100 AS DECIMAL(24, 12))"
    over = (
        f"CASE WHEN {Q} > {hundred} THEN CAST({Q} - {hundred} AS DECIMAL(24, 12)) "
        "ELSE CAST(0 AS DECIMAL(24, 12)) END"
    )
    assert sql == guarded(
        f"CAST(CAST(5 AS DECIMAL(37, 20)) + CAST({over} * CAST(0.06 AS DECIMAL(13, 8)) "
        "AS DECIMAL(37, 20)) AS DECIMAL(37, 20))"
    )


def test_flat_fee_alone():
    assert price_sql(FlatFee(D("49.99")), "q") == guarded("CAST(49.99 AS DECIMAL(37, 20))")


def test_percentage_without_bounds_is_the_rate_of_the_quantity():
    assert price_sql(Percentage(D("0.029")), "q") == guarded(
        f"CAST({Q} * CAST(0.029 AS DECIMAL(13, 8)) AS DECIMAL(37, 20))"
    )


def test_percentage_with_bounds_prices_the_fee_sum_as_is():
    assert price_sql(Percentage(D("0.029"), D("0.3"), D(10)), "fees") == (
        "CASE WHEN fees >= 0 AND fees < 100000000000000000 "
        "THEN CAST(fees AS DECIMAL(38, 20)) ELSE NULL END"
    )


def test_free_units_come_off_before_the_inner_model():
    sql = price_sql(FreeUnits(D(10), Percentage(D("0.5"))), "q")
    ten = "CAST(10 AS DECIMAL(24, 12))"
    rest = (
        f"CASE WHEN {Q} > {ten} THEN CAST({Q} - {ten} AS DECIMAL(24, 12)) "
        "ELSE CAST(0 AS DECIMAL(24, 12)) END"
    )
    assert sql == guarded(f"CAST({rest} * CAST(0.5 AS DECIMAL(13, 8)) AS DECIMAL(37, 20))")


def test_long_values_are_string_literals():
    # Calcite refuses a numeric literal of more than 18 digits ("out of range").
    sql = price_sql(PerUnit(D("99999.99999999")), "q")
    assert "CAST(99999.99999999 AS DECIMAL(13, 8))" in sql
    sql = price_sql(FlatFee(D("12345678901.12345678")), "q")
    assert "CAST('12345678901.12345678' AS DECIMAL(37, 20))" in sql


# ----------------------------------------------------------------------------- the domain


def test_quantity_parameters_beyond_the_domain_are_clamped():
    # No quantity of the domain exceeds QMAX, so the included units might as well be QMAX.
    sql = price_sql(FlatFee(D(1), D(10) ** 15, D(1)), "q")
    assert "CAST('999999999999.999999999999' AS DECIMAL(24, 12))" in sql
    assert D("999999999999.999999999999") == QMAX


def test_tiers_beyond_the_domain_are_unreachable():
    beyond = Graduated([Tier(D(10) ** 15, D(1)), Tier(None, D(2))])
    assert price_sql(beyond, "q") == price_sql(Graduated([Tier(None, D(1))]), "q")
    vol = Volume([Tier(D(5), D(3)), Tier(D(10) ** 13, D(1)), Tier(None, D(2))])
    assert "CAST(2 AS" not in price_sql(vol, "q")


@pytest.mark.parametrize(
    ("model", "field"),
    [
        (PerUnit(D("0.000000001")), "unit_price"),  # 9 decimals
        (PerUnit(D(100_000)), "unit_price"),  # not below 10^5
        (Graduated([Tier(D("0.0000000000001"), D(1)), Tier(None, D(1))]), "tiers[0].up_to"),
        (Volume([Tier(D(1), D(1)), Tier(None, D(1), D("0.123456789"))]), "tiers[1].flat_fee"),
        (FlatFee(D(10) ** 17), "fee"),
        (FlatFee(D(0), D("0.5"), D("1.123456789")), "overage_unit_price"),
        (Package(D("0.0000000000001"), D(1)), "package_size"),
        (Package(D(1), D("0.000000001")), "package_price"),
        (Percentage(D("0.000000001")), "rate"),
        (Percentage(D("0.01"), per_event_max=D("0.000000001")), "per_event_max"),
        (FreeUnits(D("0.0000000000001"), PerUnit(D(1))), "free_units"),
        # amounts of 10^24 packages at 1 each: beyond 10^17
        (Package(D("0.000000000001"), D(1)), "model"),
        # fees within bounds one by one, 10^17 together
        (Graduated([Tier(D(1), D(0), D(10) ** 16), Tier(None, D(0), D(9) * 10**16)]), "model"),
    ],
)
def test_a_charge_outside_the_domain_is_refused(model, field):
    with pytest.raises(SqlDomainError) as exc:
        price_sql(model, "q")
    assert exc.value.field == field


def test_quantities_outside_the_domain_give_null():
    # The guard is the outermost CASE: negative or >= 10^12 falls to ELSE NULL, never a cast
    # that could overflow (which Flink turns into NULL in a column typed NOT NULL).
    sql = price_sql(Package(D(3), D(1)), "q")
    assert sql.startswith("CASE WHEN q >= 0 AND q < 1000000000000 THEN ")
    assert sql.endswith(" ELSE NULL END")


# ----------------------------------------------------------------------------- price book


def test_price_book_case_by_plan_version_and_meter():
    sql = price_book_sql(
        [
            ("a", 1, "x", PerUnit(D(1))),
            ("a", 2, "x", PerUnit(D(2))),
            ("b", 1, "y", Percentage(D("0.1"), None, D(1))),
        ]
    )
    null = "CAST(NULL AS DECIMAL(38, 20))"
    a1 = price_sql(PerUnit(D(1)), "quantity")
    a2 = price_sql(PerUnit(D(2)), "quantity")
    b1 = price_sql(Percentage(D("0.1"), None, D(1)), "fee_sum")
    assert sql == (
        "CASE WHEN plan = 'a' THEN CASE "
        f"WHEN price_version = 1 THEN CASE WHEN meter = 'x' THEN {a1} ELSE {null} END "
        f"WHEN price_version = 2 THEN CASE WHEN meter = 'x' THEN {a2} ELSE {null} END "
        f"ELSE {null} END "
        "WHEN plan = 'b' THEN CASE "
        f"WHEN price_version = 1 THEN CASE WHEN meter = 'y' THEN {b1} ELSE {null} END "
        f"ELSE {null} END "
        f"ELSE {null} END"
    )


def test_price_book_column_names():
    sql = price_book_sql(
        [("a", 1, "x", PerUnit(D(1)))], plan="s.plan_id", version="v", meter="m", quantity="qty"
    )
    assert sql.startswith("CASE WHEN s.plan_id = 'a' THEN CASE WHEN v = 1 THEN CASE WHEN m = 'x'")
    assert "CAST(qty AS DECIMAL(24, 12))" in sql


def test_an_empty_book_prices_nothing():
    assert price_book_sql([]) == "CAST(NULL AS DECIMAL(38, 20))"


def test_a_refused_charge_names_plan_version_and_charge():
    with pytest.raises(SqlDomainError) as exc:
        price_book_sql([("a", 1, "x", PerUnit(D(1))), ("a", 3, "api_calls", PerUnit(D(10) ** 6))])
    assert str(exc.value).startswith("plan 'a' version 3 charge 'api_calls': unit_price: ")


@pytest.mark.parametrize(
    ("charge", "message"),
    [
        (("A", 1, "x", PerUnit(D(1))), "plan id must match"),
        (("a'; DROP", 1, "x", PerUnit(D(1))), "plan id must match"),
        (("a", 1, "x y", PerUnit(D(1))), "meter id must match"),
        (("a", 0, "x", PerUnit(D(1))), "version must be a positive int"),
        (("a", True, "x", PerUnit(D(1))), "version must be a positive int"),
    ],
)
def test_invalid_ids_are_refused(charge, message):
    with pytest.raises(ValueError, match=message):
        price_book_sql([charge])


def test_a_charge_given_twice_is_refused():
    with pytest.raises(ValueError, match="given twice"):
        price_book_sql([("a", 1, "x", PerUnit(D(1))), ("a", 1, "x", PerUnit(D(2)))])


def test_bounds_need_a_fee_column():
    with pytest.raises(ValueError, match="fee_sum"):
        price_book_sql([("a", 1, "x", Percentage(D("0.1"), D(1)))], fee_sum=None)


def test_the_default_price_book_compiles():
    charges = book_charges(load_price_book())
    assert charges
    sql = price_book_sql(charges)
    for plan, version, meter, _ in charges:
        assert f"plan = '{plan}'" in sql and f"price_version = {version}" in sql
        assert f"meter = '{meter}'" in sql


def test_importable_without_pyflink():
    code = "import sys, jobs.pricing_sql; print('pyflink' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
