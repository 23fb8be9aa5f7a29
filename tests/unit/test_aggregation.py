from decimal import Decimal

import pytest

from meterflow.aggregation import Partials, latest_key, window_quantity
from meterflow.meters import Aggregation as A

P = Partials(
    event_count=3,
    q_sum=Decimal("10"),
    q_min=Decimal("1"),
    q_max=Decimal("7"),
    unique_count=2,
    latest_key=latest_key(99, "z", Decimal("4.25")),
)


@pytest.mark.parametrize(
    ("agg", "expected"),
    [
        (A.COUNT, Decimal(3)),
        (A.SUM, Decimal(10)),
        (A.MIN, Decimal(1)),
        (A.MAX, Decimal(7)),
        (A.UNIQUE_COUNT, Decimal(2)),
        (A.LATEST, Decimal("4.25")),
        # 10 / 3 = 3.333... rounded half-even at 12 places
        (A.AVG, Decimal("3.333333333333")),
    ],
)
def test_window_quantity(agg, expected):
    assert window_quantity(agg, P) == expected


def test_avg_rounds_half_even_once():
    p = Partials(event_count=8, q_sum=Decimal("0.000000000005"))  # 6.25e-13: rounds up to 1e-12
    assert window_quantity(A.AVG, p) == Decimal("0.000000000001")
    p = Partials(event_count=2, q_sum=Decimal("0.000000000001"))  # exactly half: to even (0)
    assert window_quantity(A.AVG, p) == Decimal("0.000000000000")
