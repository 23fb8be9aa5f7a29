from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterflow.aggregation import Partials, combined_quantity, latest_key
from meterflow.meters import Aggregation as A
from meterflow.price_book import parse_price_book
from meterflow.pricing import (
    FlatFee,
    FreeUnits,
    Graduated,
    Package,
    Percentage,
    PerUnit,
    Tier,
    Volume,
    charge_amount,
)
from meterflow.rating import (
    FoldedWindow,
    LineState,
    Rater,
    rateable,
)
from meterflow.subscriptions import PlanChange, Subscription

D = Decimal
Q12 = D("1e-12")
PERIOD = 1_767_225_600  # 2026-01-01T00:00:00Z, epoch s

MODELS = {
    "per_unit": PerUnit(D("0.002")),
    # a flat fee on entering the second tier
    "graduated": Graduated([Tier(D(10), D("0.5")), Tier(None, D("0.2"), D(3))]),
    "volume": Volume([Tier(D(10), D(1)), Tier(None, D("0.5"), D(2))]),
    "package": Package(D(5), D("1.25")),
    "flat_fee": FlatFee(D(20), D(10), D("0.3")),
    "free_units": FreeUnits(
        D(5), Graduated([Tier(D(20), D("0.1"), D(1)), Tier(None, D("0.05"), D("0.5"))])
    ),
    "percentage": Percentage(D("0.029")),
    # free units are units of the value: the first 40 of the period carry no fee
    "free_units_percentage": FreeUnits(D(40), Percentage(D("0.029"))),
}
AGGREGATIONS = [A.COUNT, A.SUM, A.MAX, A.MIN, A.AVG, A.LATEST]


# ------------------------------------------------------------------------ plain-code helpers


def _partials(aggregation, events):
    """A window's partials as the streaming SQL computes them from its events
    (event_id, timestamp ms, value)."""
    values = [v for _, _, v in events]
    if aggregation is A.COUNT:
        return Partials(len(events))
    lk = None
    if aggregation is A.LATEST:
        lk = max(latest_key(ts, eid, v) for eid, ts, v in events)
    return Partials(len(events), sum(values, D(0)), min(values), max(values), latest_key=lk)


def _expected_quantity(aggregation, events):
    """The period quantity straight from the events, as the close computes it."""
    values = [v for _, _, v in events]
    match aggregation:
        case A.COUNT:
            return D(len(events))
        case A.SUM:
            return sum(values, D(0))
        case A.MAX:
            return max(values)
        case A.MIN:
            return min(values)
        case A.AVG:
            with localcontext() as ctx:
                ctx.prec = 100
                return (sum(values, D(0)) / len(values)).quantize(Q12, rounding=ROUND_HALF_EVEN)
        case A.LATEST:
            # greatest timestamp, then greatest event id
            return max(events, key=lambda e: (e[1], e[0]))[2]
    raise AssertionError(aggregation)


VALUE = st.decimals(min_value=0, max_value=1000, places=2, allow_nan=False, allow_infinity=False)
# the dimension groups of one meter (its group_by values): all priced together
DIMS = st.sampled_from(["{}", '{"region":"eu"}', '{"region":"us"}'])
# (window minute, second within the minute, value, dimensions)
EVENT = st.tuples(st.integers(0, 5), st.integers(0, 59), VALUE, DIMS)


# ------------------------------------------------------------------------------ telescoping


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@settings(deadline=None, max_examples=20)
@given(data=st.data())
def test_window_amounts_sum_to_the_price_of_the_period_quantity(model_name, aggregation, data):
    model = MODELS[model_name]
    initial = data.draw(st.lists(EVENT, min_size=1, max_size=12), label="initial")
    # late-but-allowed events: each one re-fires its window (possibly one not fired before)
    late = data.draw(st.lists(EVENT, max_size=8), label="late")

    events = []  # (event_id, timestamp ms, value), of every dimension group
    by_group: dict[tuple[int, str], list] = {}  # (window minute, dimensions) -> its events

    def add(minute, second, value, dims):
        eid = f"ev{len(events):03d}"
        ev = (eid, PERIOD * 1000 + minute * 60_000 + second * 1000, value.quantize(Q12))
        events.append(ev)
        by_group.setdefault((minute, dims), []).append(ev)
        return minute, dims

    for e in initial:
        add(*e)

    state = LineState()
    amounts: dict[tuple[int, str], Decimal] = {}

    def fire(group):
        minute, dims = group
        window = (PERIOD + minute * 60, dims)
        amount, after = state.fire(
            PERIOD, window, _partials(aggregation, by_group[group]), aggregation, model
        )
        amounts[group] = amount
        return after

    order = data.draw(st.permutations(sorted(by_group)), label="order")
    for group in order:
        after = fire(group)
    # some groups fire again later with more events (their partials grow)
    for e in late:
        after = fire(add(*e))
    # re-emissions with unchanged partials add nothing
    for group in data.draw(st.lists(st.sampled_from(sorted(by_group)), max_size=3)):
        after = fire(group)

    # the period quantity is over all the meter's events, whatever their dimensions
    q = _expected_quantity(aggregation, events)
    assert after == q
    assert sum(amounts.values(), D(0)) == charge_amount(model, q, [e[2] for e in events])
    # the state holds each (window, dimensions) group's latest amount
    assert {(w - PERIOD, d): p.amount for (w, d), p in state.periods[PERIOD].items()} == {
        (m * 60, d): a for (m, d), a in amounts.items()
    }


ALL = "{}"  # the dimensions of a meter without group_by
EU, US = '{"region":"eu"}', '{"region":"us"}'


def test_telescoping_by_hand():
    # PerUnit 0.002, SUM: window 0 fires with 100, window 1 with 50, window 0 again with 130
    model = PerUnit(D("0.002"))
    s = LineState()
    w0, w1 = (PERIOD, ALL), (PERIOD + 60, ALL)
    # 100 * 0.002 = 0.2
    assert s.fire(PERIOD, w0, Partials(1, D(100), D(100), D(100)), A.SUM, model) == (
        D("0.2"),
        D(100),
    )
    # 150 * 0.002 - 0.2 = 0.1
    assert s.fire(PERIOD, w1, Partials(1, D(50), D(50), D(50)), A.SUM, model) == (
        D("0.1"),
        D(150),
    )
    # re-fire: period 180 -> 0.36; window 0's total = 0.2 + (0.36 - 0.3) = 0.26
    assert s.fire(PERIOD, w0, Partials(2, D(130), D(30), D(100)), A.SUM, model) == (
        D("0.26"),
        D(180),
    )
    # 0.26 + 0.1 = 0.36 = 180 * 0.002
    assert sum(w.amount for w in s.periods[PERIOD].values()) == D("0.36")


# graduated: 0..10 @ 0.5, then 0.2 with a flat fee of 3 on entering the second tier
# price(q) = 0.5 q for q <= 10; 5 + 3 + 0.2 (q - 10) above
GRADUATED = MODELS["graduated"]


def test_dimension_groups_of_one_window_feed_one_sum():
    s = LineState()
    # eu: 6 -> price(6) = 3
    assert s.fire(PERIOD, (PERIOD, EU), Partials(2, D(6), D(1), D(5)), A.SUM, GRADUATED) == (
        D(3),
        D(6),
    )
    # us, same window: 6 + 8 = 14 -> price(14) = 5 + 3 + 0.8 = 8.8; 8.8 - 3 = 5.8
    # (priced per group it would be price(8) = 4)
    assert s.fire(PERIOD, (PERIOD, US), Partials(1, D(8), D(8), D(8)), A.SUM, GRADUATED) == (
        D("5.8"),
        D(14),
    )
    # eu re-fires with a late 3: 9 + 8 = 17 -> price(17) = 5 + 3 + 1.4 = 9.4; eu's total is
    # 3 + (9.4 - 8.8) = 3.6
    assert s.fire(PERIOD, (PERIOD, EU), Partials(3, D(9), D(1), D(5)), A.SUM, GRADUATED) == (
        D("3.6"),
        D(17),
    )
    groups = s.periods[PERIOD]
    assert sorted(groups) == [(PERIOD, EU), (PERIOD, US)]
    # 3.6 + 5.8 = 9.4 = price(17); per group it would be price(9) + price(8) = 4.5 + 4 = 8.5
    assert sum(p.amount for p in groups.values()) == D("9.4")


def test_dimension_groups_of_one_window_feed_one_max():
    s = LineState()
    # eu: max 6 -> price(6) = 3
    assert s.fire(PERIOD, (PERIOD, EU), Partials(2, D(7), D(1), D(6)), A.MAX, GRADUATED) == (
        D(3),
        D(6),
    )
    # us, same window: max(6, 12) = 12 -> price(12) = 5 + 3 + 0.4 = 8.4; 8.4 - 3 = 5.4
    assert s.fire(PERIOD, (PERIOD, US), Partials(1, D(12), D(12), D(12)), A.MAX, GRADUATED) == (
        D("5.4"),
        D(12),
    )
    # eu re-fires with max 9: the period max is still 12 (not 9 + 12), nothing more
    assert s.fire(PERIOD, (PERIOD, EU), Partials(3, D(16), D(1), D(9)), A.MAX, GRADUATED) == (
        D(3),
        D(12),
    )
    # 3 + 5.4 = 8.4 = price(12)
    assert sum(p.amount for p in s.periods[PERIOD].values()) == D("8.4")


def test_latest_from_windows_uses_the_close_tie_break():
    # Two events at the same millisecond in one window, ids "e1" and "e10". The close
    # (period_usage.LineUsage) takes the greatest timestamp, then the greatest event id:
    # "e10" > "e1", so the quantity is 7. The window's latest key is the string MAX of
    # aggregation.latest_key over its events, as the streaming SQL computes it.
    ts = PERIOD * 1000 + 5
    lk = max(latest_key(ts, "e1", D(5)), latest_key(ts, "e10", D(7)))
    w = Partials(2, D(12), D(5), D(7), latest_key=lk)
    assert combined_quantity(A.LATEST, [w]) == D(7)


def test_flat_fee_is_in_the_first_firing():
    # FlatFee 20 including 10 units, then 0.3 per unit; COUNT
    model = FlatFee(D(20), D(10), D("0.3"))
    s = LineState()
    # first firing, 3 events: price(3) = 20, measured from nothing (not from price(0) = 20)
    amount, after = s.fire(PERIOD, (PERIOD, EU), Partials(3), A.COUNT, model)
    assert (amount, after) == (D(20), D(3))
    # another group of the same window, 9 events: price(12) = 20 + 2 * 0.3 = 20.6, delta 0.6;
    # the fee is not charged again for the second group
    amount, after = s.fire(PERIOD, (PERIOD, US), Partials(9), A.COUNT, model)
    assert (amount, after) == (D("0.6"), D(12))
    # a new period starts from nothing again: its first window carries the fee
    nxt = PERIOD + 31 * 86400
    amount, _ = s.fire(nxt, (nxt, EU), Partials(1), A.COUNT, model)
    assert amount == D(20)


def test_graduated_tier_flat_fee_in_first_firing():
    # first tier 0..10 @ 1 + 5 flat: 2 events -> 2 * 1 + 5 = 7
    model = Graduated([Tier(D(10), D(1), D(5)), Tier(None, D("0.5"))])
    s = LineState()
    amount, _ = s.fire(PERIOD, (PERIOD, ALL), Partials(2), A.COUNT, model)
    assert amount == D(7)


def test_forget_before_drops_older_periods_only():
    s = LineState()
    model = PerUnit(D(1))
    for p in (100, 200, 300):
        s.fire(p, (p + 60, ALL), Partials(p // 100), A.COUNT, model)
    s.forget_before(200)
    assert sorted(s.periods) == [200, 300]
    # the kept periods are untouched: 2 * 1 and 3 * 1
    assert s.periods[200][(260, ALL)].amount == D(2)
    assert s.periods[300][(360, ALL)].amount == D(3)
    s.forget_before(200)
    assert sorted(s.periods) == [200, 300]
    s.forget_before(301)
    assert s.periods == {}


# ---------------------------------------------------------------------------------- rateable


@pytest.mark.parametrize("model", list(MODELS.values()), ids=sorted(MODELS))
def test_unique_count_is_not_rateable(model):
    assert not rateable(A.UNIQUE_COUNT)


@pytest.mark.parametrize(
    "model",
    [
        Percentage(D("0.03"), per_event_min=D("0.30")),
        Percentage(D("0.03"), D("0.30"), D("5")),
        FreeUnits(D(100), Percentage(D("0.03"))),
    ],
)
def test_percentage_with_per_event_bounds_is_rateable_except_unique_count(model):
    assert rateable(A.SUM) and rateable(A.COUNT)
    assert not rateable(A.UNIQUE_COUNT)


def test_per_event_bounds_rate_the_sum_of_fees_that_decode_computed():
    # 3 % of each payment, at least 0.30, at most 5.00, per event:
    #   window 1: payments 4 and 100   -> fees 0.30 (0.12 raised) + 3.00       = 3.30
    #   window 2: payment 500          -> fee 5.00 (15.00 capped)              = 5.00
    #   window 1 again, + payment 20   -> fees 3.30 + 0.60                     = 3.90
    model = Percentage(D("0.03"), D("0.30"), D("5"))
    s = LineState()
    w1 = Partials(2, D(104), D(4), D(100), fee_sum=D("3.30"))
    w2 = Partials(1, D(500), D(500), D(500), fee_sum=D(5))
    w1b = Partials(3, D(124), D(4), D(100), fee_sum=D("3.90"))
    a1, _ = s.fire(0, (0, "{}"), w1, A.SUM, model)
    a2, _ = s.fire(0, (60, "{}"), w2, A.SUM, model)
    a1b, q = s.fire(0, (0, "{}"), w1b, A.SUM, model)
    assert (a1, a2, a1b) == (D("3.30"), D("5.00"), D("3.90"))
    assert a1b + a2 == D("8.90")  # 0.30 + 3.00 + 5.00 + 0.60
    assert q == D(624)  # the meter's own quantity is still the SUM of payments


@pytest.mark.parametrize("model", list(MODELS.values()), ids=sorted(MODELS))
@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_other_combinations_are_rateable(model, aggregation):
    assert rateable(aggregation)


# ------------------------------------------------------------------------------ Rater.context

BOOK = parse_price_book(
    {
        "plans": [
            {
                "id": "basic",
                "currency": "USD",
                "versions": [
                    {
                        "version": 1,
                        "effective_from": "2026-01-01",
                        "charges": {"api_calls": {"model": "per_unit", "unit_price": "0.001"}},
                    },
                    {
                        # effective mid-period: applies from the period starting 2026-04-01
                        "version": 2,
                        "effective_from": "2026-03-15",
                        "charges": {"api_calls": {"model": "per_unit", "unit_price": "0.0008"}},
                    },
                ],
            },
            {
                "id": "pro",
                "currency": "EUR",
                "versions": [
                    {
                        "version": 1,
                        "effective_from": "2026-01-01",
                        "charges": {
                            "api_calls": {"model": "per_unit", "unit_price": "0.0005"},
                            "tokens": {
                                "model": "package",
                                "package_size": 1000,
                                "package_price": 2,
                            },
                        },
                    }
                ],
            },
        ]
    },
    "<test>",
)


def _t(*args):
    return datetime(*args, tzinfo=UTC)


SUBS = [
    Subscription(
        "sub-1",
        "c1",
        "basic",
        _t(2026, 1, 1),
        plan_changes=(
            # exactly on a boundary: applies to the period starting 2026-05-01
            PlanChange("pro", _t(2026, 5, 1)),
            # mid-period: applies from 2026-07-01
            PlanChange("basic", _t(2026, 6, 10)),
        ),
    ),
    Subscription("sub-2", "c2", "pro", _t(2026, 2, 10), anchor="anniversary", end=_t(2026, 6, 10)),
]
RATER = Rater(SUBS, BOOK)


def test_context_period_plan_and_model():
    rc = RATER.context("c1", "api_calls", _t(2026, 2, 14, 12))
    assert rc is not None
    assert rc.subscription.id == "sub-1"
    assert (rc.period.start, rc.period.end, rc.period.index) == (
        _t(2026, 2, 1),
        _t(2026, 3, 1),
        1,
    )
    assert (rc.plan, rc.price_version, rc.currency) == ("basic", 1, "USD")
    assert rc.model == PerUnit(D("0.001"))


def test_price_version_in_force_at_period_start():
    # version 2 is effective 2026-03-15, after the March period started: still version 1
    before = RATER.context("c1", "api_calls", _t(2026, 3, 14))
    after = RATER.context("c1", "api_calls", _t(2026, 3, 20))
    assert (before.price_version, after.price_version) == (1, 1)
    assert after.model == PerUnit(D("0.001"))
    # the April period starts after 2026-03-15: version 2
    april = RATER.context("c1", "api_calls", _t(2026, 4, 2))
    assert april.price_version == 2
    assert april.model == PerUnit(D("0.0008"))


def test_plan_change_at_a_boundary():
    last_basic = RATER.context("c1", "api_calls", _t(2026, 4, 30, 23, 59, 59))
    assert (last_basic.plan, last_basic.currency) == ("basic", "USD")
    first_pro = RATER.context("c1", "api_calls", _t(2026, 5, 1))
    assert (first_pro.plan, first_pro.price_version, first_pro.currency) == ("pro", 1, "EUR")
    assert first_pro.model == PerUnit(D("0.0005"))
    assert first_pro.period.start == _t(2026, 5, 1)
    # the change requested mid-June applies from July on
    assert RATER.context("c1", "api_calls", _t(2026, 6, 20)).plan == "pro"
    july = RATER.context("c1", "api_calls", _t(2026, 7, 1))
    assert (july.plan, july.price_version) == ("basic", 2)


def test_anniversary_subscription():
    rc = RATER.context("c2", "tokens", _t(2026, 3, 5))
    assert (rc.period.start, rc.period.end, rc.period.index) == (
        _t(2026, 2, 10),
        _t(2026, 3, 10),
        0,
    )
    assert (rc.plan, rc.currency) == ("pro", "EUR")
    assert rc.model == Package(D(1000), D(2))
    assert rc.subscription.id == "sub-2"


def test_no_subscription_is_none():
    assert RATER.context("nobody", "api_calls", _t(2026, 3, 5)) is None
    assert RATER.context("c2", "api_calls", _t(2026, 2, 9, 23, 59)) is None  # before the start
    assert RATER.context("c2", "api_calls", _t(2026, 6, 10)) is None  # at the end
    assert RATER.context("c1", "api_calls", _t(2025, 12, 31)) is None


def test_meter_without_charge_is_none():
    # basic charges only api_calls
    assert RATER.context("c1", "tokens", _t(2026, 2, 14)) is None
    assert RATER.context("c1", "storage", _t(2026, 2, 14)) is None
    # pro charges tokens
    assert RATER.context("c1", "tokens", _t(2026, 5, 14)) is not None


def test_folding_keeps_totals_and_refuses_refiring_a_folded_window():
    # per unit 0.5; SUM windows of 2, 3 and 4 units at t = 0, 60, 120 s
    model = PerUnit(D("0.5"))
    s = LineState()
    for t, q in ((0, 2), (60, 3), (120, 4)):
        s.fire(0, (t, "{}"), Partials(1, D(q), D(q), D(q)), A.SUM, model)
    assert s.fold(100) == 2  # the windows at 0 and 60 s can no longer fire
    assert list(s.periods[0]) == [(120, "{}")]
    # the window at 120 s fires again with 5 units: 2 + 3 + 5 = 10 units = 5.00 in total
    amount, q = s.fire(0, (120, "{}"), Partials(2, D(5), D(1), D(4)), A.SUM, model)
    assert q == D(10) and amount == D("2.50")  # 4 units (2.00) + the 1 more (0.50)
    assert s.period_total_events(0) == 4
    with pytest.raises(FoldedWindow):
        s.fire(0, (60, "{}"), Partials(2, D(6), D(3), D(3)), A.SUM, model)


def test_folding_combines_min_max_latest_and_avg_partials():
    s = LineState()
    model = PerUnit(D(1))
    for t, q in ((0, "2"), (60, "7"), (120, "4")):
        lk = f"{t * 1000:015d}|e{t}\x00{q}"
        s.fire(0, (t, "{}"), Partials(1, D(q), D(q), D(q), latest_key=lk), A.MAX, model)
    s.fold(130)
    (acc,) = s.all_windows(0)
    assert (acc.event_count, acc.q_sum, acc.q_min, acc.q_max) == (3, D(13), D(2), D(7))
    assert acc.latest_key.endswith("\x004")  # the latest event (t = 120 s) has 4
