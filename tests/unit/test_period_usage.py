from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterflow.meters import Aggregation as A
from meterflow.meters import parse_meters
from meterflow.period_usage import (
    LineUsage,
    MeasureError,
    StoredEvent,
    digest_of,
    period_usage,
)

IDS = st.lists(st.text(min_size=1, max_size=12), max_size=20)


# ---------------------------------------------------------------------------------- digest


@settings(deadline=None, max_examples=200)
@given(st.data(), IDS)
def test_digest_is_order_independent(data, ids):
    shuffled = data.draw(st.permutations(ids))
    assert digest_of(shuffled) == digest_of(ids)


@settings(deadline=None, max_examples=200)
@given(IDS, st.text(min_size=1, max_size=12))
def test_digest_changes_when_an_id_is_added(ids, extra):
    assert digest_of([*ids, extra]) != digest_of(ids)


@settings(deadline=None, max_examples=200)
@given(IDS.filter(bool), st.data())
def test_digest_changes_when_an_id_is_repeated(ids, data):
    again = data.draw(st.sampled_from(ids))
    assert digest_of([*ids, again]) != digest_of(ids)


def test_digest_format_and_repeats_do_not_cancel():
    # empty sum -> 0, written as 16 hex digits
    assert digest_of([]) == "0000000000000000"
    d = digest_of(["evt-1"])
    assert len(d) == 16 and int(d, 16) != 0
    # a sum, not XOR: the same id twice does not cancel back to the empty digest
    assert digest_of(["evt-1", "evt-1"]) != digest_of([])
    assert digest_of(["evt-1", "evt-1"]) != d


def test_line_digest_is_the_digest_of_its_event_ids():
    line = LineUsage(A.COUNT)
    for i, eid in enumerate(["c", "a", "b"]):
        line.add(eid, i, None, None)
    assert line.digest == digest_of(["a", "b", "c"])


# ------------------------------------------------------------------------------ LineUsage

# (event_id, timestamp ms, quantity); e2 and e4 share the greatest timestamp 2000
EVENTS = [
    ("e1", 1000, D("3")),
    ("e2", 2000, D("1.5")),
    ("e3", 1500, D("4.25")),
    ("e4", 2000, D("2")),
]


def _line(aggregation, events):
    line = LineUsage(aggregation)
    for eid, ts, q in events:
        line.add(eid, ts, q, None)
    return line


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [
        (A.COUNT, D(4)),  # 4 events
        (A.SUM, D("10.75")),  # 3 + 1.5 + 4.25 + 2 = 10.75
        (A.MIN, D("1.5")),
        (A.MAX, D("4.25")),
        (A.AVG, D("2.6875")),  # 10.75 / 4 = 2.6875
        # greatest timestamp 2000 (e2, e4), then the greatest event id e4 -> 2
        (A.LATEST, D("2")),
    ],
)
@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (1, 3, 0, 2), (3, 0, 1, 2)])
def test_line_quantity_per_aggregation(aggregation, expected, order):
    line = _line(aggregation, [EVENTS[i] for i in order])
    assert line.quantity == expected
    assert line.event_count == 4


def test_unique_count_counts_distinct_keys():
    line = LineUsage(A.UNIQUE_COUNT)
    for i, user in enumerate(["u1", "u2", "u1", "u3", "u2"]):
        line.add(f"e{i}", i, None, user)
    # u1, u2, u3 -> 3 distinct of 5 events
    assert line.quantity == D(3)
    assert line.event_count == 5


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # 1 / 3 = 0.3333333333333... -> 0.333333333333
        ((D(1), D(0), D(0)), D("0.333333333333")),
        # 2 / 3 = 0.6666666666666... -> 0.666666666667
        ((D(2), D(0), D(0)), D("0.666666666667")),
        # 1e-12 / 2 = 0.0000000000005: a tie, half-even -> 0 (half-up would give 1e-12)
        ((D("0.000000000001"), D(0)), D("0.000000000000")),
        # 5e-12 / 2 = 0.0000000000025: a tie, half-even -> 2e-12 (half-up would give 3e-12)
        ((D("0.000000000005"), D(0)), D("0.000000000002")),
        # 3e-12 / 2 = 0.0000000000015: a tie, half-even -> 2e-12
        ((D("0.000000000003"), D(0)), D("0.000000000002")),
    ],
)
def test_avg_rounds_half_even_to_12_places(values, expected):
    line = _line(A.AVG, [(f"e{i}", i, v) for i, v in enumerate(values)])
    assert line.quantity == expected
    assert line.quantity.as_tuple().exponent == -12


def test_avg_rounds_the_exact_mean_once():
    # 63 events of 1e14 and one of 1e14 + 33e-12: sum 64e14 + 33e-12, mean
    # 1e14 + 33e-12 / 64 = 100000000000000.000000000000515625 -> half-even at 12 places rounds
    # up (0.515625 > 0.5) to 100000000000000.000000000001. Stored quantities are Decimal(38, 12),
    # so this mean is well within range.
    base = D("100000000000000.000000000000")
    events = [(f"e{i:02d}", i, base) for i in range(63)]
    events.append(("e63", 63, D("100000000000000.000000000033")))
    assert _line(A.AVG, events).quantity == D("100000000000000.000000000001")


def test_latest_tie_break_greatest_timestamp_then_greatest_event_id():
    # a later timestamp beats a greater event id
    assert _line(A.LATEST, [("z", 1000, D(1)), ("a", 2000, D(2))]).quantity == D(2)
    assert _line(A.LATEST, [("a", 2000, D(2)), ("z", 1000, D(1))]).quantity == D(2)
    # same timestamp: the greatest event id, whatever the arrival order
    assert _line(A.LATEST, [("b", 5, D(7)), ("a", 5, D(9))]).quantity == D(7)
    assert _line(A.LATEST, [("a", 5, D(9)), ("b", 5, D(7))]).quantity == D(7)
    # "e10" > "e1" as strings
    assert _line(A.LATEST, [("e10", 5, D(7)), ("e1", 5, D(5))]).quantity == D(7)


@pytest.mark.parametrize("aggregation", [A.COUNT, A.SUM, A.MIN, A.MAX, A.AVG, A.LATEST])
def test_empty_line_is_zero(aggregation):
    assert LineUsage(aggregation).quantity == D(0)


# ---------------------------------------------------------------------------- period_usage

METERS = parse_meters(
    {
        "meters": [
            {
                "id": "api_calls",
                "version": 1,
                "event_name": "api_call",
                "aggregation": "COUNT",
                "filters": {"status": {"not_in": ["error"]}},
                "group_by": ["region"],
            },
            {
                # the same api_call events, a second meter
                "id": "api_bytes",
                "version": 2,
                "event_name": "api_call",
                "aggregation": "SUM",
                "quantity": {"from": "property", "property": "bytes"},
                "filters": {"bytes": {"exists": True}},
            },
            {
                "id": "tokens",
                "version": 1,
                "event_name": "llm_tokens",
                "aggregation": "SUM",
                "quantity": {
                    "multiply_by": {"property": "model", "table": {"small": "1", "large": "1.5"}}
                },
                "group_by": ["model"],
            },
            {
                "id": "users",
                "version": 3,
                "event_name": "login",
                "aggregation": "UNIQUE_COUNT",
                "unique_property": "user",
            },
        ]
    },
    "<test>",
)


def _ev(eid, name, value=None, ts=0, **props):
    return StoredEvent(eid, name, ts, None if value is None else D(value), props)


EVS = [
    _ev("a1", "api_call", region="eu", status="ok", bytes="100"),
    _ev("a2", "api_call", region="us", status="ok", bytes="250"),
    _ev("a3", "api_call", region="eu", status="error", bytes="50"),  # not an api_call for COUNT
    _ev("a4", "api_call", region="eu"),  # no status: passes not_in; no bytes: no api_bytes
    _ev("a5", "api_call", status="ok", bytes="1"),  # no region: still an api_call
    _ev("t1", "llm_tokens", "100", model="small"),
    _ev("t2", "llm_tokens", "10", model="large"),
    _ev("t3", "llm_tokens", "5", model="large"),
    _ev("l1", "login", user="ann"),
    _ev("l2", "login", user="bob"),
    _ev("l3", "login", user="ann"),
    _ev("x1", "page_view", "42", region="eu"),  # no meter: ignored
]


def test_period_usage_lines():
    # A charge prices a meter's total over all its dimensions: one line per meter (and meter
    # version), whatever its group_by; dimensions are always "{}".
    usage = period_usage(METERS, EVS)
    assert set(usage) == {
        ("api_calls", 1, "{}"),
        ("api_bytes", 2, "{}"),
        ("tokens", 1, "{}"),
        ("users", 3, "{}"),
    }
    expected = {
        # regions eu (a1, a4), us (a2) and none (a5) in one line: 2 + 1 + 1 = 4
        # (a3 filtered out by status not_in error)
        ("api_calls", 1, "{}"): (D(4), ["a1", "a2", "a4", "a5"]),
        # 100 + 250 + 50 + 1 = 401 (a4 has no bytes)
        ("api_bytes", 2, "{}"): (D(401), ["a1", "a2", "a3", "a5"]),
        # models small and large in one line:
        # 100 * 1 + 10 * 1.5 + 5 * 1.5 = 100 + 15 + 7.5 = 122.5
        ("tokens", 1, "{}"): (D("122.5"), ["t1", "t2", "t3"]),
        # ann, bob
        ("users", 3, "{}"): (D(2), ["l1", "l2", "l3"]),
    }
    for key, (quantity, ids) in expected.items():
        line = usage[key]
        assert line.quantity == quantity, key
        assert line.event_count == len(ids), key
        assert line.digest == digest_of(ids), key


def _grouped_meter(aggregation):
    spec = {
        "id": "m",
        "version": 7,
        "event_name": "use",
        "aggregation": aggregation.value,
        "group_by": ["g"],
    }
    if aggregation is A.UNIQUE_COUNT:
        spec["unique_property"] = "user"
    elif aggregation is not A.COUNT:
        spec["quantity"] = {"from": "value"}
    return parse_meters({"meters": [spec]}, "<test>")


# EVENTS spread over three groups so that every extreme sits in a different group:
# a = {e1: 3, e3: 4.25} (the maximum), b = {e2: 1.5} (the minimum), c = {e4: 2} (the latest)
GROUPED = [
    _ev("e1", "use", "3", ts=1000, g="a", user="ann"),
    _ev("e2", "use", "1.5", ts=2000, g="b", user="ann"),
    _ev("e3", "use", "4.25", ts=1500, g="a", user="bob"),
    _ev("e4", "use", "2", ts=2000, g="c", user="bob"),
]


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [
        (A.COUNT, D(4)),  # 2 + 1 + 1 events
        (A.SUM, D("10.75")),  # (3 + 4.25) + 1.5 + 2 = 10.75
        (A.MIN, D("1.5")),  # min(3, 4.25, 1.5, 2), from group b
        (A.MAX, D("4.25")),  # from group a
        (A.AVG, D("2.6875")),  # 10.75 / 4 events (not the mean of the group means)
        # greatest timestamp 2000 (e2 in b, e4 in c), then the greatest id e4 -> 2
        (A.LATEST, D("2")),
        # users: a has {ann, bob}, b {ann}, c {bob}; distinct over the meter {ann, bob} = 2
        # (the sum of per-group distinct counts would be 2 + 1 + 1 = 4)
        (A.UNIQUE_COUNT, D(2)),
    ],
)
def test_group_by_values_aggregate_into_one_line(aggregation, expected):
    usage = period_usage(_grouped_meter(aggregation), GROUPED)
    assert list(usage) == [("m", 7, "{}")]
    line = usage[("m", 7, "{}")]
    assert line.quantity == expected
    assert line.event_count == 4
    assert line.digest == digest_of(["e1", "e2", "e3", "e4"])


def test_quantities_are_stored_at_12_places():
    usage = period_usage(METERS, [_ev("t", "llm_tokens", "3", model="large")])
    q = usage[("tokens", 1, "{}")].quantity
    # 3 * 1.5 = 4.5, kept at the stored scale
    assert q == D("4.5") and q.as_tuple().exponent == -12


def test_one_event_feeds_two_meters():
    usage = period_usage(METERS, [_ev("a1", "api_call", region="eu", bytes="7")])
    assert usage[("api_calls", 1, "{}")].quantity == D(1)
    assert usage[("api_bytes", 2, "{}")].quantity == D(7)
    assert len(usage) == 2


def test_events_of_other_names_are_ignored():
    assert period_usage(METERS, [_ev("x", "page_view", "1", region="eu")]) == {}
    assert period_usage(METERS, []) == {}


def test_unmeasurable_event_raises_measure_error():
    # model "huge" is not in the multiplier table and there is no default
    with pytest.raises(MeasureError, match="t9"):
        period_usage(METERS, [_ev("t9", "llm_tokens", "1", model="huge")])


def test_large_quantities_within_decimal_38_12():
    # Quantities are Decimal(38, 12): up to 26 integer digits (meters.MAX_QUANTITY = 1e26).
    # 1e20 + 2e20 = 3e20
    meters = parse_meters(
        {
            "meters": [
                {
                    "id": "bytes",
                    "version": 1,
                    "event_name": "transfer",
                    "aggregation": "SUM",
                    "quantity": {"from": "value"},
                }
            ]
        },
        "<test>",
    )
    usage = period_usage(
        meters,
        [_ev("b1", "transfer", "100000000000000000000"), _ev("b2", "transfer", "2E+20")],
    )
    assert usage[("bytes", 1, "{}")].quantity == D("300000000000000000000")


def _value_meters(*specs):
    meters = [
        {
            "id": f"m{i}",
            "version": 1,
            "event_name": "transfer",
            "aggregation": aggregation,
            "quantity": {"from": "value", **extra},
        }
        for i, (aggregation, extra) in enumerate(specs)
    ]
    return parse_meters({"meters": meters}, "<test>")


def test_quantities_with_38_significant_digits():
    # 26 integer digits + 12 places = 38 significant digits: more than Python's default 28-digit
    # context holds (quantize would raise there), within Decimal(38, 12).
    meters = _value_meters(("SUM", {}), ("MAX", {}), ("AVG", {}))
    usage = period_usage(
        meters,
        [
            _ev("b1", "transfer", "12345678901234567890123456.123456789012"),
            _ev("b2", "transfer", "10000000000000000000000000.000000000001"),
        ],
    )
    # 12345678901234567890123456.123456789012 + 10000000000000000000000000.000000000001
    assert usage[("m0", 1, "{}")].quantity == D("22345678901234567890123456.123456789013")
    assert usage[("m1", 1, "{}")].quantity == D("12345678901234567890123456.123456789012")
    # 22345678901234567890123456.123456789013 / 2 = 11172839450617283945061728.0617283945065:
    # a tie at 12 places, half-even keeps ...506
    assert usage[("m2", 1, "{}")].quantity == D("11172839450617283945061728.061728394506")


def test_multiplied_quantity_keeps_all_its_digits():
    # 20 integer digits + 12 places = 32 significant digits, times 1.5, exact at 12 places:
    # 12345678901234567890 * 1.5 = 18518518351851851835 and 0.123456789012 * 1.5 = 0.185185183518
    meters = _value_meters(("SUM", {"multiply_by": {"property": "tier", "table": {"x": "1.5"}}}))
    usage = period_usage(
        meters, [_ev("b1", "transfer", "12345678901234567890.123456789012", tier="x")]
    )
    assert usage[("m0", 1, "{}")].quantity == D("18518518351851851835.185185183518")


def test_sum_is_exact_at_the_stored_scale():
    # Each value fits Decimal(38, 12) (16 integer digits + 12 places); their sum has 17 integer
    # digits + 12 places = 29 digits, still within Decimal(38, 12), and must not be rounded:
    # 9000000000000000.000000000001 * 2 = 18000000000000000.000000000002
    line = _line(
        A.SUM,
        [
            ("e1", 1, D("9000000000000000.000000000001")),
            ("e2", 2, D("9000000000000000.000000000001")),
        ],
    )
    assert line.quantity == D("18000000000000000.000000000002")
