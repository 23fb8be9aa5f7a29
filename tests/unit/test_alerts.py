"""Quota thresholds and the webhook retry policy (no services)."""

from decimal import Decimal

import pytest

from connectors.webhook import DeliveryError, RetryPolicy, deliver
from meterflow.alerts import Quota, crossed
from meterflow.price_book import PriceConfigError, parse_price_book
from meterflow.rating import LineState

D = Decimal


def test_thresholds_are_75_90_100_percent_of_the_limit():
    q = Quota(D(200))
    assert crossed(D(149), q, ()) == []  # 149 < 150 = 75 % of 200
    assert crossed(D(150), q, ()) == [75]
    assert crossed(D("179.99"), q, ()) == [75]  # 90 % is 180
    assert crossed(D(180), q, ()) == [75, 90]
    assert crossed(D(250), q, ()) == [75, 90, 100]
    assert crossed(D(250), q, (75, 90)) == [100]
    assert crossed(D(250), q, (75, 90, 100)) == []


def test_each_threshold_fires_once_per_period_and_again_in_the_next():
    s, q = LineState(), Quota(D(10), hard_cap=True)
    assert s.alerts_due(0, D(8), q) == [75]  # 8 >= 7.5
    assert s.alerts_due(0, D(8), q) == []  # the same usage again: nothing new
    assert s.alerts_due(0, D(9.5), q) == [90]  # 9.5 >= 9
    assert s.alerts_due(0, D(12), q) == [100]
    assert s.alerts_due(0, D(20), q) == []
    assert s.alerts_due(100, D(20), q) == [75, 90, 100]  # a new period starts afresh
    s.forget_before(100)
    assert set(s.alerted) == {100}


def _book(quotas):
    return {
        "plans": [
            {
                "id": "p",
                "currency": "USD",
                "versions": [
                    {
                        "version": 1,
                        "effective_from": "2026-01-01",
                        "charges": {"calls": {"model": "per_unit", "unit_price": "1"}},
                        "quotas": quotas,
                    }
                ],
            }
        ]
    }


def test_quotas_load_from_the_price_book():
    book = parse_price_book(_book({"calls": {"limit": 1000, "hard_cap": True}}), "book.yaml")
    v = book.plan("p").version(1)
    assert v.quotas["calls"] == Quota(D(1000), True)


@pytest.mark.parametrize(
    ("quotas", "message"),
    [
        ({"other": {"limit": 5}}, "field 'quotas.other': a quota needs a charge"),
        ({"calls": {"limit": 0}}, "field 'quotas.calls.limit': must be > 0"),
        ({"calls": {"limit": 5, "hard_cap": "yes"}}, "field 'quotas.calls.hard_cap'"),
        ({"calls": {"max": 5}}, "field 'quotas.calls': must be {limit"),
    ],
)
def test_quota_errors_name_file_plan_and_field(quotas, message):
    with pytest.raises(PriceConfigError) as exc:
        parse_price_book(_book(quotas), "book.yaml")
    assert "book.yaml" in str(exc.value) and "plan 'p'" in str(exc.value)
    assert message in str(exc.value)


def test_retry_delays_grow_exponentially_up_to_a_cap():
    assert RetryPolicy(attempts=6, first_delay_s=0.5, factor=2, max_delay_s=3).delays() == [
        0.5,
        1.0,
        2.0,
        3.0,  # 4.0 capped
        3.0,
    ]


def test_deliver_retries_until_success_and_reports_attempts():
    calls, slept = [], []

    def send():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("receiver down")

    assert deliver(send, RetryPolicy(attempts=5, first_delay_s=1), slept.append) == 3
    assert slept == [1.0, 2.0]


def test_deliver_gives_up_with_the_last_error():
    slept = []

    def send():
        raise ConnectionError("still down")

    with pytest.raises(DeliveryError, match="gave up after 3 attempts: ConnectionError"):
        deliver(send, RetryPolicy(attempts=3, first_delay_s=1), slept.append)
    assert slept == [1.0, 2.0]
