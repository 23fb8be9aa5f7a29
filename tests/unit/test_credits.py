from datetime import UTC, date, datetime
from decimal import Decimal as D

import pytest

from meterflow.credits import (
    DEFAULT_CREDITS_FILE,
    Application,
    Balance,
    CreditConfigError,
    Grant,
    apply_credits,
    balances,
    load_grants,
    parse_grants,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


JAN = utc(2026, 1, 1)
AT = utc(2026, 2, 1)


def grant(
    gid: str,
    amount: str,
    *,
    priority: int = 0,
    expires: datetime | None = None,
    effective: datetime = JAN,
    currency: str = "USD",
    customer: str = "acme",
) -> Grant:
    return Grant(gid, customer, D(amount), currency, effective, expires, priority)


def apply(grants, due: str, *, prior=(), at=AT, invoice="inv-2", currency="USD", **kw):
    return apply_credits(grants, list(prior), D(due), at, invoice, currency, **kw)


# ------------------------------------------------------------------------------------ ordering


def test_lower_priority_number_is_drawn_first():
    grants = [grant("bulk", "100", priority=10), grant("promo", "30.00", priority=0)]
    assert apply(grants, "50.00") == [
        Application("promo", "inv-2", D("30.00")),
        Application("bulk", "inv-2", D("20.00")),
    ]


def test_same_priority_earliest_expiry_first_never_expiring_last():
    grants = [
        grant("forever", "100"),
        grant("june", "10", expires=utc(2026, 6, 1)),
        grant("march", "5", expires=utc(2026, 3, 1)),
    ]
    assert apply(grants, "40") == [
        Application("march", "inv-2", D("5")),
        Application("june", "inv-2", D("10")),
        Application("forever", "inv-2", D("25")),
    ]


def test_ties_broken_by_effective_at_then_id():
    grants = [
        grant("b", "1", effective=utc(2026, 1, 2)),
        grant("z", "1"),
        grant("a", "1"),
    ]
    assert [a.grant_id for a in apply(grants, "3")] == ["a", "z", "b"]


# ------------------------------------------------------------------------------------ amounts


def test_never_applies_more_than_due():
    assert apply([grant("g", "100")], "12.34") == [Application("g", "inv-2", D("12.34"))]


def test_stops_once_covered():
    grants = [grant("first", "50", priority=0), grant("second", "50", priority=1)]
    assert apply(grants, "50") == [Application("first", "inv-2", D("50"))]


def test_nothing_due_means_nothing_applied():
    assert apply([grant("g", "100")], "0") == []
    assert apply([grant("g", "100")], "-5.00") == []


def test_partial_consumption_across_invoices():
    g = grant("g", "100.00")
    first = apply([g], "60.00", invoice="inv-1")
    assert first == [Application("g", "inv-1", D("60.00"))]
    second = apply([g], "55.00", prior=first, invoice="inv-2")
    assert second == [Application("g", "inv-2", D("40.00"))]
    assert apply([g], "10.00", prior=first + second, invoice="inv-3") == []
    assert balances([g], first + second, AT) == {
        "g": Balance("g", D("0.00"), usable=False, expired=False)
    }


def test_prior_applications_to_the_same_invoice_are_recomputed_not_stacked():
    g = grant("g", "100")
    prior = [Application("g", "inv-1", D("30")), Application("g", "inv-2", D("60"))]
    assert apply([g], "60", prior=prior, invoice="inv-2") == [Application("g", "inv-2", D("60"))]


def test_exhausted_grant_is_skipped_and_never_negative():
    grants = [grant("spent", "20", priority=0), grant("fresh", "20", priority=1)]
    prior = [Application("spent", "inv-1", D("20"))]
    assert apply(grants, "30", prior=prior) == [Application("fresh", "inv-2", D("20"))]


def test_over_applied_ledger_is_an_error():
    prior = [Application("g", "inv-1", D("80")), Application("g", "inv-0", D("30"))]
    with pytest.raises(ValueError, match="applications total 110 of 100"):
        apply([grant("g", "100")], "10", prior=prior)


def test_applications_to_unknown_grants_are_ignored():
    prior = [Application("someone-else", "inv-1", D("999"))]
    assert apply([grant("g", "10")], "5", prior=prior) == [Application("g", "inv-2", D("5"))]


# ----------------------------------------------------------------------------------- eligibility


def test_expired_and_not_yet_effective_grants_are_ignored():
    grants = [
        grant("expired", "10", expires=AT),  # expires_at is exclusive
        grant("later", "10", effective=utc(2026, 2, 1, 0, 0, 1)),
        grant("now", "10", effective=AT),  # effective_at is inclusive
    ]
    assert apply(grants, "25") == [Application("now", "inv-2", D("10"))]


def test_other_currency_is_ignored():
    grants = [grant("eur", "10", currency="EUR"), grant("usd", "10")]
    assert apply(grants, "15") == [Application("usd", "inv-2", D("10"))]


def test_one_customer_at_a_time():
    grants = [grant("a", "10", customer="acme"), grant("g", "10", customer="globex")]
    with pytest.raises(ValueError, match="several customers"):
        apply(grants, "5")
    assert apply(grants, "5", customer_id="globex") == [Application("g", "inv-2", D("5"))]
    assert apply(grants, "5", customer_id="initech") == []


def test_naive_at_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        apply([grant("g", "10")], "5", at=datetime(2026, 2, 1))


# ----------------------------------------------------------------------------------- balances


def test_balances_report_remaining_and_usability():
    grants = [
        grant("active", "100.00"),
        grant("expired", "25.00", expires=AT),
        grant("pending", "40.00", effective=utc(2026, 3, 1)),
    ]
    apps = [
        Application("active", "inv-1", D("30.00")),
        Application("active", "inv-2", D("20.50")),
        Application("expired", "inv-1", D("5.00")),
    ]
    got = balances(grants, apps, AT)
    assert got == {
        "active": Balance("active", D("49.50"), usable=True, expired=False),
        "expired": Balance("expired", D("20.00"), usable=False, expired=True),
        "pending": Balance("pending", D("40.00"), usable=False, expired=False),
    }
    assert [b.usable_amount for b in got.values()] == [D("49.50"), D("0"), D("0")]


def test_grant_invariants():
    with pytest.raises(ValueError):
        grant("g", "0")
    with pytest.raises(ValueError):
        Grant("g", "acme", 1.5, "USD", JAN)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        grant("g", "1", expires=JAN)
    with pytest.raises(ValueError):
        Grant("g", "acme", D(1), "USD", datetime(2026, 1, 1))


# ------------------------------------------------------------------------------------ loading


def _entry(**fields):
    base = {
        "id": "g-1",
        "customer_id": "acme",
        "amount": "100.00",
        "currency": "USD",
        "effective_at": "2026-01-01T00:00:00Z",
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def _load(*entries):
    return parse_grants({"grants": list(entries)}, "credits.yaml")


def test_loader_defaults_and_types():
    (g,) = _load(_entry(effective_at=date(2026, 1, 1)))
    assert g == Grant("g-1", "acme", D("100.00"), "USD", JAN, None, 0)
    (g,) = _load(_entry(amount=50, expires_at=datetime(2026, 7, 1), priority=-1))
    assert (g.amount, g.expires_at, g.priority) == (D("50"), utc(2026, 7, 1), -1)


def test_loader_error_message_names_file_grant_and_field():
    with pytest.raises(CreditConfigError) as err:
        _load(_entry(amount="0"))
    assert str(err.value) == "credits.yaml: grant 'g-1': field 'amount': must be > 0, got '0'"


@pytest.mark.parametrize(
    ("fields", "field_name", "why"),
    [
        ({"amount": ...}, "amount", "missing"),
        ({"amount": "-1"}, "amount", "> 0"),
        ({"amount": 1.5}, "amount", "quoted decimal"),
        ({"amount": "lots"}, "amount", "not a decimal"),
        ({"amount": "NaN"}, "amount", "> 0"),
        ({"currency": "usd"}, "currency", "ISO 4217"),
        ({"customer_id": ...}, "customer_id", "missing"),
        ({"effective_at": ...}, "effective_at", "missing"),
        ({"expires_at": "2026-01-01T00:00:00Z"}, "expires_at", "not after effective_at"),
        ({"expires_at": "2025-12-31"}, "expires_at", "not after effective_at"),
        ({"priority": "high"}, "priority", "integer"),
        ({"priority": True}, "priority", "integer"),
        ({"balance": "1"}, "balance", "unknown field"),
    ],
)
def test_loader_errors(fields, field_name, why):
    with pytest.raises(CreditConfigError) as err:
        _load(_entry(**fields))
    msg = str(err.value)
    assert msg.startswith(f"credits.yaml: grant 'g-1': field '{field_name}': ")
    assert why in msg


def test_loader_refuses_duplicate_ids():
    with pytest.raises(CreditConfigError) as err:
        _load(_entry(), _entry(customer_id="globex"))
    assert str(err.value) == "credits.yaml: grant 'g-1': field 'id': defined twice"


def test_loader_refuses_a_file_without_grants(tmp_path):
    path = tmp_path / "credits.yaml"
    path.write_text("credits: []\n")
    with pytest.raises(CreditConfigError, match="credits file: field 'grants'"):
        load_grants(path)


def test_shipped_grants_load():
    grants = load_grants(DEFAULT_CREDITS_FILE)
    assert {g.customer_id for g in grants} <= {f"cust-{i:03d}" for i in range(5)}
    assert len({g.id for g in grants}) == len(grants) >= 2
