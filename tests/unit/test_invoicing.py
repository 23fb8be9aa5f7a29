from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from meterflow.credits import Application, Grant
from meterflow.invoicing import (
    ADJUSTMENT,
    CREDIT,
    MINIMUM,
    USAGE,
    FinalInvoice,
    adjustment_lines,
    build_invoice,
    invoice_id,
)
from meterflow.meters import parse_meters
from meterflow.money import currency
from meterflow.period_usage import StoredEvent, digest_of, period_usage
from meterflow.price_book import parse_price_book
from meterflow.subscriptions import Period


def _t(*args):
    return datetime(*args, tzinfo=UTC)


METERS = parse_meters(
    {
        "meters": [
            {"id": "api_calls", "version": 1, "event_name": "api_call", "aggregation": "COUNT"},
            {
                "id": "tokens",
                "version": 2,
                "event_name": "llm_tokens",
                "aggregation": "SUM",
                "quantity": {"from": "value"},
                "group_by": ["model"],
            },
            {
                "id": "seats",
                "version": 4,
                "event_name": "seats",
                "aggregation": "MAX",
                "quantity": {"from": "value"},
            },
            {
                "id": "support",
                "version": 1,
                "event_name": "ticket",
                "aggregation": "COUNT",
                "group_by": ["tier"],
            },
            # metered, charged by no plan below
            {
                "id": "storage",
                "version": 1,
                "event_name": "storage",
                "aggregation": "SUM",
                "quantity": {"from": "value"},
            },
        ]
    },
    "<test>",
)
METER_VERSIONS = {m.id: m.version for m in METERS}

BOOK = parse_price_book(
    {
        "plans": [
            {
                "id": "small",
                "currency": "USD",
                "versions": [
                    {
                        "version": 1,
                        "effective_from": "2026-01-01",
                        "minimum": "10.00",
                        "charges": {
                            "api_calls": {"model": "per_unit", "unit_price": "0.0125"},
                            "tokens": {
                                "model": "graduated",
                                "tiers": [
                                    {"up_to": 1000, "unit_price": "0.001"},
                                    {"unit_price": "0.0005", "flat_fee": "1"},
                                ],
                            },
                            "seats": {
                                "model": "flat_fee",
                                "fee": "5",
                                "included_units": 3,
                                "overage_unit_price": "2",
                            },
                        },
                    }
                ],
            },
            {
                "id": "jp",
                "currency": "JPY",
                "versions": [
                    {
                        "version": 1,
                        "effective_from": "2026-01-01",
                        "minimum": "2000",
                        "charges": {
                            "api_calls": {"model": "per_unit", "unit_price": "1.5"},
                            "tokens": {"model": "per_unit", "unit_price": "0.003"},
                            "seats": {"model": "flat_fee", "fee": "1000"},
                        },
                    }
                ],
            },
            {
                "id": "helpdesk",
                "currency": "USD",
                "versions": [
                    {
                        "version": 1,
                        "effective_from": "2026-01-01",
                        "charges": {"support": {"model": "flat_fee", "fee": "5"}},
                    }
                ],
            },
        ]
    },
    "<test>",
)
SMALL = BOOK.plan("small").version(1)
JP = BOOK.plan("jp").version(1)
HELPDESK = BOOK.plan("helpdesk").version(1)
USD = currency("USD")
JPY = currency("JPY")

FEB = Period("sub-1", "c1", _t(2026, 2, 1), _t(2026, 3, 1), 1)
MAR = Period("sub-1", "c1", _t(2026, 3, 1), _t(2026, 4, 1), 2)
IID = "INV-sub-1-20260201"


def _events(api=0, small=(), large=(), seats=(), storage=(), tickets=(), prefix="e"):
    out, n = [], 0

    def ev(name, value=None, **props):
        nonlocal n
        n += 1
        out.append(StoredEvent(f"{prefix}{n}", name, n, None if value is None else D(value), props))

    for _ in range(api):
        ev("api_call")
    for v in small:
        ev("llm_tokens", v, model="small")
    for v in large:
        ev("llm_tokens", v, model="large")
    for v in seats:
        ev("seats", v)
    for v in storage:
        ev("storage", v)
    for t in tickets:
        ev("ticket", tier=t)
    return out


def _usage(*event_lists):
    return period_usage(METERS, [e for evs in event_lists for e in evs])


def _build(usage, version=SMALL, plan="small", cur=USD, period=FEB, adjustments=(), grants=()):
    return build_invoice(period, plan, version, cur, usage, METER_VERSIONS, adjustments, grants, [])


def _summary(lines):
    return [
        (ln.kind, ln.meter, ln.meter_version, ln.dimensions, ln.quantity, ln.amount) for ln in lines
    ]


# Below the minimum: 10 api calls, tokens small 600 + 700, large 250, no seats, storage.
BELOW = _events(api=10, small=("600", "700"), large=("250",), storage=("999",))
# Above the minimum: tokens small 20000 instead.
ABOVE = _events(api=10, small=("20000",), large=("250",))


# ---------------------------------------------------------------------------------- invoices


def test_invoice_id_format():
    assert invoice_id(FEB) == "INV-sub-1-20260201"
    other = Period("sub-x", "c9", _t(2026, 2, 10, 0, 0), _t(2026, 3, 10), 0)
    assert invoice_id(other) == "INV-sub-x-20260210"


def test_lines_of_a_small_plan_below_the_minimum():
    inv = _build(_usage(BELOW))
    assert _summary(inv.lines) == [
        # 10 * 0.0125 = 0.125 -> 0.13 (half up, once for the line; per event would be 0.10)
        (USAGE, "api_calls", 1, "{}", D(10), D("0.13")),
        # no seat events: the flat fee is still due, a zero-quantity line of 5.00
        (USAGE, "seats", 4, "{}", D(0), D("5.00")),
        # tokens is grouped by model but priced on its total, one line:
        # small 600 + 700 + large 250 = 1550;
        # 1000 * 0.001 + 550 * 0.0005 + 1 (second tier's flat fee) = 1 + 0.275 + 1 = 2.275
        # -> 2.28 (priced per model it would be 2.15 + 0.25 = 2.40)
        (USAGE, "tokens", 2, "{}", D(1550), D("2.28")),
        # usage 0.13 + 5.00 + 2.28 = 7.41 < 10.00 -> true-up 2.59
        (MINIMUM, "", 0, "{}", D(0), D("2.59")),
    ]
    # storage is metered but not charged: no line
    assert all(ln.meter != "storage" for ln in inv.lines)
    assert inv.invoice_id == IID
    assert (inv.customer_id, inv.subscription_id, inv.plan, inv.price_version) == (
        "c1",
        "sub-1",
        "small",
        1,
    )
    assert inv.currency == "USD"
    assert inv.credits == ()
    assert inv.subtotal == D("10.00")
    assert inv.credited == D(0)
    assert inv.total == D("10.00") == sum(ln.amount for ln in inv.lines)
    for ln in inv.lines:
        assert ln.amount.as_tuple().exponent == -2
        assert (ln.period_start, ln.period_end) == (FEB.start, FEB.end)
        assert ln.plan == "small" and ln.price_version == 1
    api = inv.lines[0]
    assert api.event_count == 10 and api.events_digest
    assert api.pricing == "per unit @ 0.0125"
    tokens = inv.lines[2]
    # e11..e13 are the three llm_tokens events of both models
    assert tokens.event_count == 3
    assert tokens.events_digest == digest_of(["e11", "e12", "e13"])


def test_no_minimum_line_above_the_minimum():
    inv = _build(_usage(ABOVE))
    # tokens small 20000 + large 250 = 20250:
    # 1000 * 0.001 + 19250 * 0.0005 + 1 = 1 + 9.625 + 1 = 11.625 -> 11.63
    # usage 0.13 + 5.00 + 11.63 = 16.76 >= 10.00: no true-up
    assert _summary(inv.lines) == [
        (USAGE, "api_calls", 1, "{}", D(10), D("0.13")),
        (USAGE, "seats", 4, "{}", D(0), D("5.00")),
        (USAGE, "tokens", 2, "{}", D(20250), D("11.63")),
    ]
    assert inv.total == D("16.76") == inv.subtotal


def test_minimum_exactly_met_has_no_line():
    # seats max 5: 5 + (5 - 3) * 2 = 9.00; 80 api calls * 0.0125 = 1.00; 9 + 1 = 10.00
    inv = _build(_usage(_events(api=80, seats=("5",))))
    assert [ln.kind for ln in inv.lines] == [USAGE, USAGE]
    assert inv.total == D("10.00")


def test_rounding_half_up_per_line():
    # 1 call * 0.0125 = 0.0125 -> 0.01; 3 calls = 0.0375 -> 0.04; 6 calls = 0.075 -> 0.08
    for calls, amount in [(1, "0.01"), (3, "0.04"), (6, "0.08"), (10, "0.13")]:
        inv = _build(_usage(_events(api=calls)))
        assert inv.lines[0].amount == D(amount), calls


def test_credits_by_priority():
    grants = [
        Grant("a-second", "c1", D("4.00"), "USD", _t(2026, 1, 1), priority=2),
        Grant("z-first", "c1", D("3.00"), "USD", _t(2026, 1, 1), priority=1),
        Grant("eur", "c1", D("100"), "EUR", _t(2026, 1, 1)),  # other currency
        Grant("expired", "c1", D("100"), "USD", _t(2026, 1, 1), _t(2026, 2, 15)),
        Grant("later", "c1", D("100"), "USD", _t(2026, 3, 1)),  # from the period end on
        Grant("unused", "c1", D("50"), "USD", _t(2026, 1, 1), priority=9),
    ]
    prior = [
        Application("z-first", "INV-sub-1-20260101", D("1.00")),  # 2.00 left
        Application("a-second", IID, D("4.00")),  # this invoice's own: ignored on a re-run
    ]
    inv = build_invoice(FEB, "small", SMALL, USD, _usage(BELOW), METER_VERSIONS, [], grants, prior)
    credit_lines = [ln for ln in inv.lines if ln.kind == CREDIT]
    # due 7.41 + 2.59 = 10.00: z-first (priority 1) pays its 2.00 left, a-second (priority 2) 4.00,
    # unused (priority 9) the remaining 4.00
    assert [(ln.refers_to, ln.amount) for ln in credit_lines] == [
        ("z-first", D("-2.00")),
        ("a-second", D("-4.00")),
        ("unused", D("-4.00")),
    ]
    assert inv.credits == (
        Application("z-first", IID, D("2.00")),
        Application("a-second", IID, D("4.00")),
        Application("unused", IID, D("4.00")),
    )
    assert inv.lines[: len(inv.lines) - 3] == _build(_usage(BELOW)).lines
    assert inv.subtotal == D("10.00")
    assert inv.credited == D("10.00")
    assert inv.total == D("0.00") == sum(ln.amount for ln in inv.lines)


def test_credits_cover_part_of_the_total():
    grants = [
        Grant("a-second", "c1", D("4.00"), "USD", _t(2026, 1, 1), priority=2),
        Grant("z-first", "c1", D("3.00"), "USD", _t(2026, 1, 1), priority=1),
    ]
    inv = _build(_usage(BELOW), grants=grants)
    assert [(ln.kind, ln.refers_to, ln.amount) for ln in inv.lines if ln.kind == CREDIT] == [
        (CREDIT, "z-first", D("-3.00")),
        (CREDIT, "a-second", D("-4.00")),
    ]
    # 10.00 - 3.00 - 4.00 = 3.00
    assert (inv.subtotal, inv.credited, inv.total) == (D("10.00"), D("7.00"), D("3.00"))
    assert sum(ln.amount for ln in inv.lines) == inv.total


def test_jpy_rounds_to_whole_yen():
    inv = _build(
        _usage(_events(api=5, small=("1234",), large=("500",))), version=JP, plan="jp", cur=JPY
    )
    assert _summary(inv.lines) == [
        # 5 * 1.5 = 7.5 -> 8
        (USAGE, "api_calls", 1, "{}", D(5), D(8)),
        (USAGE, "seats", 4, "{}", D(0), D(1000)),
        # small 1234 + large 500 = 1734; 1734 * 0.003 = 5.202 -> 5
        # (rounded once for the meter; per model it would be 3.702 -> 4 plus 1.5 -> 2 = 6)
        (USAGE, "tokens", 2, "{}", D(1734), D(5)),
        # 8 + 1000 + 5 = 1013 < 2000 -> 987
        (MINIMUM, "", 0, "{}", D(0), D(987)),
    ]
    assert all(ln.amount.as_tuple().exponent == 0 for ln in inv.lines)
    assert inv.total == D(2000) and inv.currency == "JPY"


def test_adjustments_go_on_the_invoice_but_not_toward_its_minimum():
    adj = adjustment_lines(_final(ABOVE), _usage(ABOVE, _events(api=1, prefix="late")), *_ctx())
    inv = _build(_usage(), period=MAR, adjustments=adj)
    # March: seats flat fee 5.00 only, true-up 10.00 - 5.00 = 5.00, plus the 0.01 adjustment
    assert [(ln.kind, ln.amount) for ln in inv.lines] == [
        (USAGE, D("5.00")),
        (MINIMUM, D("5.00")),
        (ADJUSTMENT, D("0.01")),
    ]
    assert inv.total == D("10.01") == sum(ln.amount for ln in inv.lines)
    assert inv.invoice_id == "INV-sub-1-20260301"


# ------------------------------------------------------------------------------ adjustments


def _final(events, version=SMALL, plan="small", billed_extra=()):
    inv = _build(_usage(events), version=version, plan=plan)
    return FinalInvoice(inv.invoice_id, FEB, plan, version, [*inv.lines, *billed_extra])


def _ctx():
    return METER_VERSIONS, USD


def test_unchanged_usage_gives_no_adjustment():
    assert adjustment_lines(_final(ABOVE), _usage(ABOVE), *_ctx()) == []
    assert adjustment_lines(_final(BELOW), _usage(BELOW), *_ctx()) == []


def test_credit_lines_in_billed_are_ignored():
    grants = [Grant("g", "c1", D("1.00"), "USD", _t(2026, 1, 1))]
    inv = _build(_usage(ABOVE), grants=grants)
    assert inv.lines[-1].kind == CREDIT
    final = FinalInvoice(inv.invoice_id, FEB, "small", SMALL, list(inv.lines))
    assert adjustment_lines(final, _usage(ABOVE), *_ctx()) == []


def test_one_late_event_gives_one_adjustment_line():
    final = _final(ABOVE)
    adj = adjustment_lines(final, _usage(ABOVE, _events(api=1, prefix="late")), *_ctx())
    assert len(adj) == 1
    (ln,) = adj
    # 11 * 0.0125 = 0.1375 -> 0.14; billed 0.13 -> 0.01
    assert (ln.kind, ln.key, ln.quantity, ln.event_count, ln.amount) == (
        ADJUSTMENT,
        ("api_calls", 1, "{}"),
        D(11),
        11,
        D("0.01"),
    )
    assert ln.refers_to == IID
    assert (ln.period_start, ln.period_end) == (FEB.start, FEB.end)
    assert (ln.plan, ln.price_version) == ("small", 1)
    # usage 0.14 + 5.00 + 11.63 = 16.77 is still above the minimum: no true-up correction
    assert [a.kind for a in adj] == [ADJUSTMENT]


def test_a_billed_adjustment_is_not_repeated():
    late = _events(api=1, prefix="late")
    adj = adjustment_lines(_final(ABOVE), _usage(ABOVE, late), *_ctx())
    final = _final(ABOVE, billed_extra=adj)
    assert adjustment_lines(final, _usage(ABOVE, late), *_ctx()) == []
    # another late event: 12 * 0.0125 = 0.15; billed 0.13 + 0.01 -> 0.01, still referring to
    # the original invoice
    later = _events(api=1, prefix="later")
    (ln,) = adjustment_lines(final, _usage(ABOVE, late, later), *_ctx())
    assert (ln.key, ln.amount, ln.quantity, ln.refers_to) == (
        ("api_calls", 1, "{}"),
        D("0.01"),
        D(12),
        IID,
    )


def test_late_event_of_a_new_model_adjusts_the_meter_line():
    # A late tokens event of a model not seen before ("mini") lands in the meter's single line:
    # 20250 + 400 = 20650; 1000 * 0.001 + 19650 * 0.0005 + 1 = 1 + 9.825 + 1 = 11.825 -> 11.83;
    # billed 11.63 -> 0.20. No separate "mini" line.
    late = [StoredEvent("late1", "llm_tokens", 1, D(400), {"model": "mini"})]
    (ln,) = adjustment_lines(_final(ABOVE), _usage(ABOVE, late), *_ctx())
    assert (ln.kind, ln.key, ln.quantity, ln.event_count, ln.amount, ln.refers_to) == (
        ADJUSTMENT,
        ("tokens", 2, "{}"),
        D(20650),
        3,
        D("0.20"),
        IID,
    )


def test_usage_crossing_the_minimum_corrects_the_true_up():
    # billed: usage 7.41 + true-up 2.59. A late tokens event of 18700 makes tokens
    # 1550 + 18700 = 20250 -> 11.63 (as in ABOVE): 11.63 - 2.28 = 9.35;
    # usage 0.13 + 5.00 + 11.63 = 16.76 >= 10.00, so the true-up is now 0: -2.59
    late = _events(small=("18700",), prefix="late")
    final = _final(BELOW)
    adj = adjustment_lines(final, _usage(BELOW, late), *_ctx())
    assert [(ln.kind, ln.meter, ln.dimensions, ln.amount, ln.refers_to) for ln in adj] == [
        (ADJUSTMENT, "tokens", "{}", D("9.35"), IID),
        (ADJUSTMENT, "", "{}", D("-2.59"), IID),
    ]
    # 10.00 billed + 9.35 - 2.59 = 16.76, the corrected usage
    assert sum(ln.amount for ln in final.billed) + sum(ln.amount for ln in adj) == D("16.76")
    # once billed, nothing more
    again = _final(BELOW, billed_extra=adj)
    assert adjustment_lines(again, _usage(BELOW, late), *_ctx()) == []


def test_usage_still_below_the_minimum_moves_the_true_up():
    # one more api call: 0.14 - 0.13 = 0.01; usage 7.42 -> true-up 2.58, billed 2.59: -0.01
    late = _events(api=1, prefix="late")
    adj = adjustment_lines(_final(BELOW), _usage(BELOW, late), *_ctx())
    assert [(ln.meter, ln.amount) for ln in adj] == [("api_calls", D("0.01")), ("", D("-0.01"))]
    again = _final(BELOW, billed_extra=adj)
    assert adjustment_lines(again, _usage(BELOW, late), *_ctx()) == []
    # a second late call: 12 * 0.0125 = 0.15 -> +0.01; usage 7.43 -> true-up 2.57; billed
    # 2.59 - 0.01 = 2.58 -> -0.01
    later = _events(api=1, prefix="later")
    adj2 = adjustment_lines(again, _usage(BELOW, late, later), *_ctx())
    assert [(ln.meter, ln.amount, ln.refers_to) for ln in adj2] == [
        ("api_calls", D("0.01"), IID),
        ("", D("-0.01"), IID),
    ]


def test_grouped_flat_fee_meter_is_billed_once():
    # helpdesk: support (grouped by tier) at a flat fee of 5 for the meter, not per tier:
    # tickets of two tiers give one line of 5.00
    inv = _build(_usage(_events(tickets=("gold", "silver", "gold"))), HELPDESK, "helpdesk")
    assert _summary(inv.lines) == [(USAGE, "support", 1, "{}", D(3), D("5.00"))]
    assert inv.total == D("5.00")


def test_late_usage_of_a_grouped_flat_fee_meter_does_not_bill_the_fee_twice():
    # No tickets in February: the fee is billed once as a zero-quantity line
    # (support, 1, "{}") of 5.00.
    final = _final([], version=HELPDESK, plan="helpdesk")
    assert _summary(final.billed) == [(USAGE, "support", 1, "{}", D(0), D("5.00"))]
    # A late ticket of tier gold lands in that same line: quantity 1, still 5.00. Its events
    # changed, so the line gets an adjustment recording them, for 5.00 - 5.00 billed = 0.00;
    # the fee is not billed a second time.
    usage = _usage(_events(tickets=("gold",), prefix="late"))
    adj = adjustment_lines(final, usage, *_ctx())
    assert [
        (ln.kind, ln.key, ln.quantity, ln.event_count, ln.amount, ln.refers_to) for ln in adj
    ] == [(ADJUSTMENT, ("support", 1, "{}"), D(1), 1, D("0.00"), IID)]
    assert sum(ln.amount for ln in final.billed) + sum(ln.amount for ln in adj) == D("5.00")
    # once billed, nothing more; a further late ticket of another tier adds only a 0.00 record
    again = _final([], version=HELPDESK, plan="helpdesk", billed_extra=adj)
    assert adjustment_lines(again, usage, *_ctx()) == []
    more = _usage(_events(tickets=("gold", "silver"), prefix="late"))
    assert [(ln.key, ln.quantity, ln.amount) for ln in adjustment_lines(again, more, *_ctx())] == [
        (("support", 1, "{}"), D(2), D("0.00"))
    ]


@pytest.mark.parametrize("extra_api", [0, 1, 7])
@pytest.mark.parametrize("extra_small", [(), ("18700",), ("1",)])
def test_billed_plus_adjustments_equals_the_corrected_usage(extra_api, extra_small):
    # hand-computed corrected totals for BELOW + extras (usage lines only, then the minimum):
    # api: (10 + extra_api) * 0.0125 rounded; seats 5.00;
    # tokens (all models): 1550 -> 2.28; 1550 + 18700 = 20250 -> 11.63;
    # 1551 -> 1 + 551 * 0.0005 + 1 = 2.2755 -> 2.28
    api = {0: D("0.13"), 1: D("0.14"), 7: D("0.21")}[extra_api]  # 17 * 0.0125 = 0.2125
    tokens = {(): D("2.28"), ("18700",): D("11.63"), ("1",): D("2.28")}[extra_small]
    usage_total = api + D("5.00") + tokens
    expected = max(usage_total, D("10.00"))
    late = _events(api=extra_api, small=extra_small, prefix="late")
    final = _final(BELOW)
    adj = adjustment_lines(final, _usage(BELOW, late), *_ctx())
    assert all(ln.kind == ADJUSTMENT for ln in adj)
    assert sum(ln.amount for ln in final.billed) + sum(ln.amount for ln in adj) == expected
