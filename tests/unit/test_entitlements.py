"""Entitlement arithmetic (pure, Decimal): used, remaining, thresholds, allowed."""

from __future__ import annotations

from decimal import Decimal as D

from meterflow.alerts import Quota, crossed
from meterflow.entitlements import entitlement


def test_no_quota_never_refuses() -> None:
    e = entitlement("calls", None, D("1e30"))
    assert (e.limit, e.remaining, e.allowed, e.threshold_pct) == (None, None, True, 0)


def test_hard_cap_refuses_from_the_limit_on() -> None:
    q = Quota(D("100"), hard_cap=True)
    below = entitlement("calls", q, D("99.999999999999"))
    assert below.allowed and below.remaining == D("0.000000000001") and below.threshold_pct == 90
    at = entitlement("calls", q, D("100"))
    assert not at.allowed and at.remaining == 0 and at.threshold_pct == 100
    over = entitlement("calls", q, D("250"))
    assert not over.allowed and over.remaining == 0


def test_a_soft_quota_reports_but_allows() -> None:
    e = entitlement("gpu", Quota(D("8")), D("9"))
    assert e.allowed and e.remaining == 0 and e.threshold_pct == 100 and not e.hard_cap


def test_thresholds_agree_with_the_alerts() -> None:
    q = Quota(D("1000"), hard_cap=True)
    for used in ("0", "749.9", "750", "899", "900", "999.99", "1000", "5000"):
        e = entitlement("calls", q, D(used))
        fired = crossed(D(used), q, [])
        assert e.threshold_pct == (fired[-1] if fired else 0), used
        assert e.allowed == (100 not in fired), used
        assert e.used + e.remaining == max(q.limit, e.used), used


def test_a_zero_hard_limit_allows_nothing() -> None:
    assert not entitlement("calls", Quota(D(0), hard_cap=True), D(0)).allowed
