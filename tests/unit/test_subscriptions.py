from calendar import monthrange
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterflow.subscriptions import (
    DEFAULT_SUBSCRIPTIONS_FILE,
    Anchor,
    PlanChange,
    Subscription,
    SubscriptionConfigError,
    active_subscription,
    closable_periods,
    load_subscriptions,
    parse_subscriptions,
    period_at,
    periods,
    subscriptions_by_customer,
)

US = timedelta(microseconds=1)
FAR = datetime(2100, 1, 1, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def sub(start: datetime, anchor: Anchor = Anchor.CALENDAR, months: int = 1, **kw) -> Subscription:
    return Subscription("s", "acme", "starter", start, anchor, months, **kw)


def spans(s: Subscription, until: datetime) -> list[tuple[datetime, datetime]]:
    return [(p.start, p.end) for p in periods(s, until)]


# ---------------------------------------------------------------------------------- boundaries


def test_calendar_monthly():
    ps = list(periods(sub(utc(2026, 1, 1)), utc(2026, 4, 1)))
    assert [(p.start, p.end, p.index) for p in ps] == [
        (utc(2026, 1, 1), utc(2026, 2, 1), 0),
        (utc(2026, 2, 1), utc(2026, 3, 1), 1),
        (utc(2026, 3, 1), utc(2026, 4, 1), 2),
    ]
    assert {(p.subscription_id, p.customer_id) for p in ps} == {("s", "acme")}


def test_calendar_partial_first_period():
    assert spans(sub(utc(2026, 1, 15, 10, 30)), utc(2026, 2, 2)) == [
        (utc(2026, 1, 15, 10, 30), utc(2026, 2, 1)),
        (utc(2026, 2, 1), utc(2026, 3, 1)),
    ]


def test_calendar_quarterly_starts_on_quarter_boundaries():
    assert spans(sub(utc(2026, 2, 20), months=3), utc(2027, 1, 1)) == [
        (utc(2026, 2, 20), utc(2026, 4, 1)),
        (utc(2026, 4, 1), utc(2026, 7, 1)),
        (utc(2026, 7, 1), utc(2026, 10, 1)),
        (utc(2026, 10, 1), utc(2027, 1, 1)),
    ]


def test_calendar_yearly():
    assert spans(sub(utc(2026, 3, 1), months=12), utc(2027, 6, 1)) == [
        (utc(2026, 3, 1), utc(2027, 1, 1)),
        (utc(2027, 1, 1), utc(2028, 1, 1)),
    ]


def test_anniversary_jan_31_clamps_without_drifting():
    assert spans(sub(utc(2026, 1, 31), Anchor.ANNIVERSARY), utc(2026, 6, 1)) == [
        (utc(2026, 1, 31), utc(2026, 2, 28)),
        (utc(2026, 2, 28), utc(2026, 3, 31)),
        (utc(2026, 3, 31), utc(2026, 4, 30)),
        (utc(2026, 4, 30), utc(2026, 5, 31)),
        (utc(2026, 5, 31), utc(2026, 6, 30)),
    ]


def test_anniversary_leap_year():
    assert spans(sub(utc(2028, 1, 31), Anchor.ANNIVERSARY), utc(2028, 3, 1)) == [
        (utc(2028, 1, 31), utc(2028, 2, 29)),
        (utc(2028, 2, 29), utc(2028, 3, 31)),
    ]
    yearly = sub(utc(2028, 2, 29), Anchor.ANNIVERSARY, 12)
    assert [p.start for p in periods(yearly, utc(2032, 3, 1))] == [
        utc(2028, 2, 29),
        utc(2029, 2, 28),
        utc(2030, 2, 28),
        utc(2031, 2, 28),
        utc(2032, 2, 29),
    ]


def test_anniversary_quarterly_across_year_end():
    assert spans(sub(utc(2026, 11, 30), Anchor.ANNIVERSARY, 3), utc(2027, 8, 1)) == [
        (utc(2026, 11, 30), utc(2027, 2, 28)),
        (utc(2027, 2, 28), utc(2027, 5, 30)),
        (utc(2027, 5, 30), utc(2027, 8, 30)),
    ]


def test_anniversary_boundaries_are_at_midnight():
    assert spans(sub(utc(2026, 1, 15, 10), Anchor.ANNIVERSARY), utc(2026, 2, 16)) == [
        (utc(2026, 1, 15, 10), utc(2026, 2, 15)),
        (utc(2026, 2, 15), utc(2026, 3, 15)),
    ]


def test_end_mid_period_cuts_the_last_period():
    s = sub(utc(2026, 1, 1), end=utc(2026, 3, 10, 12))
    assert spans(s, FAR) == [
        (utc(2026, 1, 1), utc(2026, 2, 1)),
        (utc(2026, 2, 1), utc(2026, 3, 1)),
        (utc(2026, 3, 1), utc(2026, 3, 10, 12)),
    ]


def test_end_on_a_boundary_adds_no_empty_period():
    assert spans(sub(utc(2026, 1, 1), end=utc(2026, 3, 1)), FAR) == [
        (utc(2026, 1, 1), utc(2026, 2, 1)),
        (utc(2026, 2, 1), utc(2026, 3, 1)),
    ]


def test_periods_until_is_exclusive_of_period_starts():
    s = sub(utc(2026, 1, 1))
    assert [p.index for p in periods(s, utc(2026, 3, 1))] == [0, 1]
    assert [p.index for p in periods(s, utc(2026, 3, 1) + US)] == [0, 1, 2]
    assert list(periods(s, utc(2026, 1, 1))) == []


# ---------------------------------------------------------------------------------- period_at


def test_period_at_exact_boundaries():
    s = sub(utc(2026, 1, 15), end=utc(2026, 4, 10))
    assert period_at(s, utc(2026, 1, 15) - US) is None
    first = period_at(s, utc(2026, 1, 15))
    assert first is not None
    assert (first.start, first.end, first.index) == (utc(2026, 1, 15), utc(2026, 2, 1), 0)
    assert period_at(s, utc(2026, 2, 1) - US) == first
    second = period_at(s, utc(2026, 2, 1))
    assert second is not None
    assert (second.start, second.end, second.index) == (utc(2026, 2, 1), utc(2026, 3, 1), 1)
    last = period_at(s, utc(2026, 4, 10) - US)
    assert last is not None
    assert (last.start, last.end, last.index) == (utc(2026, 4, 1), utc(2026, 4, 10), 3)
    assert period_at(s, utc(2026, 4, 10)) is None


def test_period_at_anniversary_clamped_month():
    s = sub(utc(2026, 1, 31), Anchor.ANNIVERSARY)
    p = period_at(s, utc(2026, 2, 27, 23, 59, 59))
    assert p is not None and (p.start, p.end, p.index) == (utc(2026, 1, 31), utc(2026, 2, 28), 0)
    p = period_at(s, utc(2026, 2, 28))
    assert p is not None and (p.start, p.end, p.index) == (utc(2026, 2, 28), utc(2026, 3, 31), 1)
    p = period_at(s, utc(2026, 3, 30, 12))
    assert p is not None and (p.start, p.end, p.index) == (utc(2026, 2, 28), utc(2026, 3, 31), 1)
    # Four years and one month later: no walk from the start, still the right slot.
    p = period_at(s, utc(2030, 3, 15))
    assert p is not None and (p.start, p.end, p.index) == (utc(2030, 2, 28), utc(2030, 3, 31), 49)


def test_period_at_quarterly_calendar():
    s = sub(utc(2026, 2, 20), months=3)
    p = period_at(s, utc(2026, 9, 30, 23))
    assert p is not None and (p.start, p.end, p.index) == (utc(2026, 7, 1), utc(2026, 10, 1), 2)
    p = period_at(s, utc(2026, 3, 31))
    assert p is not None and (p.start, p.end, p.index) == (utc(2026, 2, 20), utc(2026, 4, 1), 0)


def test_period_at_converts_other_zones_and_refuses_naive():
    s = sub(utc(2026, 1, 1))
    p = period_at(s, datetime(2026, 2, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))))
    assert p is not None and p.index == 0  # 2026-01-31T23:00Z
    with pytest.raises(ValueError, match="timezone-aware"):
        period_at(s, datetime(2026, 2, 1))


# --------------------------------------------------------------------------------- plan changes


def test_plan_change_mid_period_applies_from_the_next_period():
    s = sub(utc(2026, 1, 1), plan_changes=(PlanChange("growth", utc(2026, 2, 10, 12)),))
    assert [s.plan_for(p) for p in periods(s, utc(2026, 4, 1))] == ["starter", "starter", "growth"]


def test_plan_change_exactly_at_a_boundary_applies_from_that_period():
    s = sub(utc(2026, 1, 1), plan_changes=(PlanChange("growth", utc(2026, 3, 1)),))
    assert [s.plan_for(p) for p in periods(s, utc(2026, 4, 1))] == ["starter", "starter", "growth"]
    at_start = sub(utc(2026, 1, 1), plan_changes=(PlanChange("growth", utc(2026, 1, 1)),))
    assert [at_start.plan_for(p) for p in periods(at_start, utc(2026, 2, 1))] == ["growth"]


def test_latest_plan_change_wins():
    s = sub(
        utc(2026, 1, 1),
        plan_changes=(
            PlanChange("tokyo", utc(2026, 2, 20)),
            PlanChange("growth", utc(2026, 1, 5)),
        ),
    )
    assert [s.plan_for(p) for p in periods(s, utc(2026, 4, 1))] == ["starter", "growth", "tokyo"]


def test_plan_for_refuses_another_subscriptions_period():
    other = Subscription("other", "acme", "starter", utc(2026, 1, 1))
    p = period_at(other, utc(2026, 1, 2))
    assert p is not None
    with pytest.raises(ValueError):
        sub(utc(2026, 1, 1)).plan_for(p)


# ----------------------------------------------------------------------------------- closable


def test_closable_periods_wait_for_the_grace():
    s = sub(utc(2026, 1, 1))
    grace = timedelta(days=2)
    assert closable_periods(s, utc(2026, 3, 2, 23, 59), grace) == list(periods(s, utc(2026, 1, 2)))
    ps = closable_periods(s, utc(2026, 3, 3), grace)
    assert [(p.start, p.end) for p in ps] == [
        (utc(2026, 1, 1), utc(2026, 2, 1)),
        (utc(2026, 2, 1), utc(2026, 3, 1)),
    ]
    assert [p.index for p in closable_periods(s, utc(2026, 3, 1), timedelta(0))] == [0, 1]
    assert closable_periods(s, utc(2026, 2, 1), timedelta(hours=1)) == []


def test_closable_includes_a_period_cut_by_the_end():
    s = sub(utc(2026, 1, 1), end=utc(2026, 1, 20))
    ps = closable_periods(s, utc(2026, 6, 1), timedelta(days=1))
    assert [(p.start, p.end) for p in ps] == [(utc(2026, 1, 1), utc(2026, 1, 20))]


# ---------------------------------------------------------------------------------- customers


def test_active_subscription_and_grouping():
    old = Subscription("old", "acme", "starter", utc(2026, 1, 1), end=utc(2026, 4, 1))
    new = Subscription("new", "acme", "growth", utc(2026, 4, 1))
    other = Subscription("x", "globex", "starter", utc(2026, 1, 1))
    grouped = subscriptions_by_customer([new, other, old])
    assert grouped == {"acme": [old, new], "globex": [other]}
    assert active_subscription(grouped["acme"], utc(2025, 12, 31)) is None
    assert active_subscription(grouped["acme"], utc(2026, 3, 31, 23)) == old
    assert active_subscription(grouped["acme"], utc(2026, 4, 1)) == new


def test_active_subscription_refuses_overlaps():
    a = Subscription("a", "acme", "starter", utc(2026, 1, 1))
    b = Subscription("b", "acme", "growth", utc(2026, 2, 1))
    with pytest.raises(ValueError, match="overlapping"):
        active_subscription([a, b], utc(2026, 3, 1))


def test_constructor_invariants():
    with pytest.raises(ValueError):
        Subscription("s", "acme", "starter", datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        sub(utc(2026, 1, 1), months=2)
    with pytest.raises(ValueError):
        sub(utc(2026, 1, 1), end=utc(2026, 1, 1))
    with pytest.raises(ValueError):
        sub(utc(2026, 1, 1), plan_changes=(PlanChange("growth", utc(2025, 12, 31)),))


# ------------------------------------------------------------------------------------ loading


def _entry(**fields):
    base = {"id": "sub-a", "customer_id": "acme", "plan": "starter", "start": "2026-01-15"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def _load(*entries):
    return parse_subscriptions({"subscriptions": list(entries)}, "subs.yaml")


def test_loader_defaults_and_timestamps():
    (s,) = _load(_entry(start=date(2026, 1, 15)))
    assert s == Subscription("sub-a", "acme", "starter", utc(2026, 1, 15), Anchor.CALENDAR, 1)
    (s,) = _load(
        _entry(
            start=datetime(2026, 1, 15, 9),  # naive: UTC
            anchor="anniversary",
            period_months=3,
            end="2026-12-31T09:00:00+09:00",
            plan_changes=[{"plan": "growth", "requested_at": "2026-03-10T12:00:00Z"}],
        )
    )
    assert s.start == utc(2026, 1, 15, 9)
    assert (s.anchor, s.period_months, s.end) == (Anchor.ANNIVERSARY, 3, utc(2026, 12, 31))
    assert s.plan_changes == (PlanChange("growth", utc(2026, 3, 10, 12)),)


def test_loader_accepts_back_to_back_subscriptions():
    subs = _load(
        _entry(id="a", end="2026-04-01"),
        _entry(id="b", start="2026-04-01", plan="growth"),
    )
    assert [s.id for s in subs] == ["a", "b"]


def test_loader_error_message_names_file_subscription_and_field():
    with pytest.raises(SubscriptionConfigError) as err:
        _load(_entry(period_months=2))
    assert str(err.value) == (
        "subs.yaml: subscription 'sub-a': field 'period_months': "
        "must be one of [1, 3, 6, 12], got 2"
    )


@pytest.mark.parametrize(
    ("fields", "field_name", "why"),
    [
        ({"plan": ...}, "plan", "missing"),
        ({"customer_id": ""}, "customer_id", "non-empty"),
        ({"start": ...}, "start", "missing"),
        ({"start": "mid-january"}, "start", "ISO-8601"),
        ({"anchor": "weekly"}, "anchor", "unknown 'weekly'"),
        ({"period_months": True}, "period_months", "one of"),
        ({"period_months": 1.0}, "period_months", "one of"),
        ({"end": "2026-01-15"}, "end", "not after start"),
        ({"end": "2026-01-01"}, "end", "not after start"),
        (
            {"plan_changes": [{"plan": "growth", "requested_at": "2026-01-14T23:59:59Z"}]},
            "plan_changes[0].requested_at",
            "before start",
        ),
        ({"plan_changes": [{"plan": "growth"}]}, "plan_changes[0]", "exactly"),
        ({"plan_changes": {"plan": "growth"}}, "plan_changes", "list"),
        ({"colour": "red"}, "colour", "unknown field"),
    ],
)
def test_loader_errors(fields, field_name, why):
    with pytest.raises(SubscriptionConfigError) as err:
        _load(_entry(**fields))
    msg = str(err.value)
    assert msg.startswith(f"subs.yaml: subscription 'sub-a': field '{field_name}': ")
    assert why in msg


def test_loader_refuses_duplicate_ids():
    with pytest.raises(SubscriptionConfigError) as err:
        _load(_entry(customer_id="a"), _entry(customer_id="b"))
    assert str(err.value) == "subs.yaml: subscription 'sub-a': field 'id': defined twice"


def test_loader_refuses_overlapping_subscriptions_of_one_customer():
    with pytest.raises(SubscriptionConfigError) as err:
        _load(_entry(id="a", end="2026-04-02"), _entry(id="b", start="2026-04-01"))
    assert str(err.value) == (
        "subs.yaml: subscription 'b': field 'start': overlaps subscription 'a' of customer 'acme'"
    )
    with pytest.raises(SubscriptionConfigError, match="overlaps subscription 'a'"):
        _load(_entry(id="a"), _entry(id="b", start="2027-01-01"))


def test_loader_refuses_a_file_without_subscriptions(tmp_path):
    path = tmp_path / "subs.yaml"
    path.write_text("subs: []\n")
    with pytest.raises(SubscriptionConfigError, match="subscriptions file: field 'subscriptions'"):
        load_subscriptions(path)
    path.write_text("subscriptions: [\n")
    with pytest.raises(SubscriptionConfigError, match="not valid YAML"):
        load_subscriptions(path)


def test_shipped_subscriptions_cover_the_demo_customers():
    subs = load_subscriptions(DEFAULT_SUBSCRIPTIONS_FILE)
    assert {s.customer_id for s in subs} == {f"cust-{i:03d}" for i in range(5)}
    assert {s.plan for s in subs} == {"starter", "growth", "tokyo"}
    assert {s.anchor for s in subs} == {Anchor.CALENDAR, Anchor.ANNIVERSARY}
    assert {s.start for s in subs} == {utc(2026, 1, 1)}
    assert any(s.plan_changes for s in subs)


# ----------------------------------------------------------------------------------- property


@given(
    start=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2090, 12, 31), timezones=st.just(UTC)
    ),
    anchor=st.sampled_from(list(Anchor)),
    months=st.sampled_from([1, 3, 6, 12]),
    length=st.one_of(st.none(), st.timedeltas(min_value=US, max_value=timedelta(days=1500))),
)
def test_periods_tile_time_and_period_at_agrees(start, anchor, months, length):
    s = sub(start, anchor, months, end=None if length is None else start + length)
    ps = list(periods(s, start + timedelta(days=1200)))
    assert ps[0].start == start
    for i, p in enumerate(ps):
        assert p.index == i
        assert p.start < p.end
        assert period_at(s, p.start) == p
        assert period_at(s, p.end - US) == p
        if i:
            assert ps[i - 1].end == p.start
            b = p.start
            assert (b.hour, b.minute, b.second, b.microsecond) == (0, 0, 0, 0)
            if anchor is Anchor.CALENDAR:
                assert (b.day, (b.month - 1) % months) == (1, 0)
            else:
                assert b.day == min(start.day, monthrange(b.year, b.month)[1])
                assert (b.year * 12 + b.month - start.year * 12 - start.month) == i * months
    if s.end is not None and s.end <= start + timedelta(days=1200):
        assert ps[-1].end == s.end
        assert period_at(s, s.end) is None
