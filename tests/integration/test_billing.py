"""Usage to invoices on the real stack: an adversarial scenario through the running metering job
(real-time rating), then the close job; invoices equal invoices computed here from the ground
truth, a re-run writes nothing, and an event arriving after the close becomes exactly one
adjustment line on the next invoice."""

from __future__ import annotations

import io
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import fastavro
import pytest
import yaml

from connectors import ledger
from connectors.producer import produce_raw
from jobs.close import close
from meterflow.catalog import Catalog
from meterflow.cli import reports as bc
from meterflow.credits import load_grants
from meterflow.events import UsageEvent
from meterflow.meters import load_meters
from meterflow.price_book import load_price_book, parse_price_book
from meterflow.settings import REPO_ROOT
from meterflow.subscriptions import load_subscriptions
from meterflow.testing.scenario import Record, ScenarioConfig, encode, flush_phase, generate
from meterflow.wire import split_confluent_frame
from tests.integration.conftest import Scratch, kill_job, make_scratch
from tests.integration.expected import (
    WINDOWS_SQL,
    actual_windows,
    expected_windows,
    id_digest,
    scenario_amount,
    scenario_invoice_lines,
    scenario_period_quantities,
    window_diff,
)

METERS = REPO_ROOT / "schemas" / "meters" / "scenario.yaml"
PRICES = REPO_ROOT / "schemas" / "prices" / "scenario.yaml"
GRACE = timedelta(hours=24)
CENT = Decimal("0.01")
# customer -> (plan, minimum); cust-3 has no subscription: metered, never rated or billed
PLANS = {"cust-0": ("scenario", Decimal("5.00")), "cust-1": ("scenario_min", Decimal("100000.00"))}
PLANS["cust-2"] = ("scenario", Decimal("5.00"))


def _month_start(t: datetime) -> datetime:
    return t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _plus_month(t: datetime) -> datetime:
    # every anchor day used here is <= 28, so the day always exists
    return (t.replace(day=28) + timedelta(days=4)).replace(day=t.day)


def _fifth_on_or_before(t: datetime) -> datetime:
    fifth = t.replace(day=5, hour=0, minute=0, second=0, microsecond=0)
    if t >= fifth:
        return fifth
    return (fifth.replace(day=1) - timedelta(days=1)).replace(day=5)


def _periods(start: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    """Monthly periods from `start` whose end + grace <= until."""
    out, s = [], start
    while _plus_month(s) + GRACE <= until:
        out.append((s, _plus_month(s)))
        s = _plus_month(s)
    return out


def _cents(x: Decimal) -> Decimal:
    return x.quantize(CENT, rounding=ROUND_HALF_UP)


def _lines_of(scratch, invoice_id: str) -> list[tuple]:
    rows = ledger.lines(scratch.ch(), scratch.settings.clickhouse_database, invoice_id=invoice_id)
    return [ln for _, _, ln in rows]


def _count(scratch, table: str) -> int:
    return scratch.query(f"SELECT count() FROM {{db}}.{table} FINAL")[0][0]


# both jobs: the Python one (rated_usage, credit alerts) and the JVM one (period_cost, quota
# alerts only) with `meterflow load` beside it; the close is the same
@pytest.fixture(scope="module", params=["jobs.metering", "jobs.streaming"])
def billed(request, base_settings, tmp_path_factory):
    module = request.param
    with make_scratch(base_settings, tmp_path_factory.mktemp("scratch")) as scratch:
        if module == "jobs.streaming":
            with scratch.loader():
                yield _billed(scratch, tmp_path_factory, module)
        else:
            yield _billed(scratch, tmp_path_factory, module)


def _billed(scratch: Scratch, tmp_path_factory, module: str) -> dict:
    tmp = tmp_path_factory.mktemp("billing")
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    cfg = ScenarioConfig(
        seed=23, start=start, events=1500, malformed_per_kind=1, allowed_late=10, late=12
    )
    sc = generate(cfg)
    phase1, phase2 = sc.phases
    head = max(e.timestamp for e in sc.accepted)
    flush = flush_phase(sc, cfg, at=head + timedelta(hours=2))
    usage = [e for e in sc.accepted if e.event_name != "flush"]
    first = min(e.timestamp for e in usage + sc.late)

    starts = {
        "cust-0": _month_start(first),
        "cust-1": _fifth_on_or_before(first),
        "cust-2": _month_start(first),
    }
    subs = tmp / "subscriptions.yaml"
    subs.write_text(
        yaml.safe_dump(
            {
                "subscriptions": [
                    {
                        "id": f"sub-{c}",
                        "customer_id": c,
                        "plan": PLANS[c][0],
                        "start": starts[c].isoformat(),
                        "anchor": "anniversary" if c == "cust-1" else "calendar",
                    }
                    for c in sorted(PLANS)
                ]
            }
        )
    )
    credits = tmp / "credits.yaml"
    credits.write_text(
        yaml.safe_dump(
            {
                "grants": [
                    {
                        "id": "g-small",
                        "customer_id": "cust-2",
                        "amount": "3.00",
                        "currency": "USD",
                        "effective_at": "2026-01-01T00:00:00Z",
                        "expires_at": "2099-01-01T00:00:00Z",
                        "priority": 0,
                    },
                    {
                        "id": "g-big",
                        "customer_id": "cust-2",
                        "amount": "5.00",
                        "currency": "USD",
                        "effective_at": "2026-01-01T00:00:00Z",
                        "priority": 1,
                    },
                ]
            }
        )
    )
    cat = Catalog(
        load_subscriptions(subs), load_price_book(PRICES), load_meters(METERS), load_grants(credits)
    )
    as_of = max(_plus_month(_fifth_on_or_before(head)), _plus_month(_month_start(head)))
    as_of += GRACE + timedelta(hours=1)

    def produce(records: list[Record]) -> None:
        produce_raw(scratch.settings, [(r.key, r.value, r.timestamp_ms) for r in records])

    def streamed() -> dict:
        return ledger.streamed_totals(scratch.ch(), scratch.settings.clickhouse_database)

    # what the stream must have rated: on-time events only (late ones never reach a window)
    want_streamed, want_alerts = {}, set()
    for c in PLANS:
        for p in _periods(starts[c], as_of):
            evs = [e for e in usage if e.customer_id == c and p[0] <= e.timestamp < p[1]]
            for meter, (_, q) in scenario_period_quantities(evs).items():
                if meter != "active_users":  # UNIQUE_COUNT is priced at close only
                    want_streamed[(c, p[0], meter)] = scenario_amount(PLANS[c][0], meter, evs)
                # plan `scenario` quotas: calls 100 (hard cap), gpu_max 8; 75/90/100 %
                limit = {"calls": 100, "gpu_max": 8}.get(meter)
                if PLANS[c][0] == "scenario" and limit is not None:
                    for pct in (75, 90, 100):
                        if q * 100 >= limit * pct:
                            want_alerts.add((c, meter, pct, meter == "calls"))  # the quota's flag

    # cust-2's prepaid credit (3.00 + 5.00, nothing applied yet) vs its streamed cost so far
    # (the Python job only: the JVM job has no credit alerts)
    cost = sum((a for (c, _, _), a in want_streamed.items() if c == "cust-2"), Decimal(0))
    for pct in (75, 90, 100):
        if cost * 100 >= Decimal("8.00") * pct and module == "jobs.metering":
            want_alerts.add(("cust-2", "credit_balance", pct, False))

    def streamed_by_meter() -> dict:
        return {(c, ps, m): amount for (c, ps, m, _), amount in streamed().items()}

    credit_args = ("--credits", str(credits)) if module == "jobs.metering" else ()
    job = scratch.start_job(
        "--meters",
        str(METERS),
        "--prices",
        str(PRICES),
        "--subscriptions",
        str(subs),
        *credit_args,
        "--checkpoint-interval",
        "2",
        module=module,
    )
    late_event = UsageEvent(
        event_id="ev-after-close",
        event_name="api_call",
        customer_id="cust-0",
        timestamp=first + timedelta(seconds=1),
        properties={"region": "eu", "endpoint": "/health", "user_id": "u-after-close"},
        source="test",
    )
    try:
        produce(phase1)
        # Phase 2 is late only relative to a watermark past phase 1: wait until phase 1 is
        # stored and its newest complete minute has fired.
        on_time = sc.accepted[: cfg.events]
        fence = max(
            (
                k
                for k in expected_windows(on_time)
                if k[5] - k[4] == timedelta(minutes=1) and k[5] <= head - timedelta(seconds=10)
            ),
            key=lambda k: k[5],
        )
        scratch.wait_for(
            "phase 1 windows",
            lambda: fence in actual_windows(scratch.query(WINDOWS_SQL)),
            job=job,
        )
        scratch.wait_for("phase 1 events", lambda: _count(scratch, "events") == cfg.events, job=job)
        produce(phase2 + flush)
        expected = expected_windows(sc.accepted)
        scratch.wait_for(
            "all windows",
            lambda: actual_windows(scratch.query(WINDOWS_SQL)) == expected,
            job=job,
            timeout=240,
            describe=lambda: window_diff(actual_windows(scratch.query(WINDOWS_SQL)), expected),
        )
        scratch.wait_for(
            "late events", lambda: _count(scratch, "late_events") == len(sc.late), job=job
        )
        scratch.wait_for(
            "every rated window",
            lambda: streamed_by_meter() == want_streamed,
            job=job,
            describe=lambda: f"{streamed_by_meter()} != {want_streamed}",
        )
        alerts_topic = scratch.settings.alerts_topic
        scratch.wait_for(
            "alerts on the topic",
            lambda: len(scratch.topic_records(alerts_topic, 2)) >= len(want_alerts),
            job=job,
        )
        alert_records = scratch.topic_records(alerts_topic, 2)
        scratch.wait_for(
            "alerts stored", lambda: _count(scratch, "alerts") >= len(want_alerts), job=job
        )
        first_close, invoices = close(scratch.settings, cat, as_of, GRACE)
        ledger_rows = {t: _count(scratch, t) for t in ("invoices", "invoice_lines")}
        rerun, _ = close(scratch.settings, cat, as_of, GRACE)
        after_rerun = {t: _count(scratch, t) for t in ("invoices", "invoice_lines")}

        # an event for cust-0's closed period, arriving after its invoice is final
        produce([Record(b"cust-0", encode(late_event.to_record(), 1), _ms(head), "late")])
        scratch.wait_for(
            "the after-close event",
            lambda: _count(scratch, "late_events") == len(sc.late) + 1,
            job=job,
        )
    finally:
        kill_job(job)
    return {
        "scratch": scratch,
        "sc": sc,
        "cat": cat,
        "starts": starts,
        "as_of": as_of,
        "usage": usage,
        "first_close": first_close,
        "invoices": invoices,
        "ledger_rows": ledger_rows,
        "rerun": rerun,
        "after_rerun": after_rerun,
        "late_event": late_event,
        "want_streamed": want_streamed,
        "want_alerts": want_alerts,
        "alert_records": alert_records,
    }


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _expected_invoices(b) -> dict[str, list[tuple]]:
    """invoice id -> [(kind, meter, quantity, amount, events)], from the ground truth."""
    billable = b["usage"] + b["sc"].late
    out = {}
    remaining = {"g-small": Decimal("3.00"), "g-big": Decimal("5.00")}
    for c, (_, minimum) in sorted(PLANS.items()):
        for ps, pe in _periods(b["starts"][c], b["as_of"]):
            evs = [e for e in billable if e.customer_id == c and ps <= e.timestamp < pe]
            lines = scenario_invoice_lines(evs, minimum, PLANS[c][0])
            if c == "cust-2":  # credits: priority 0 first, then priority 1
                due = sum((ln[3] for ln in lines), Decimal(0))
                for g in ("g-small", "g-big"):
                    take = min(due, remaining[g])
                    if take > 0:
                        lines.append(("credit", "", Decimal(0), -take, 0))
                        remaining[g] -= take
                        due -= take
            out[f"INV-sub-{c}-{ps:%Y%m%d}"] = lines
    return out


def test_invoices_equal_the_ground_truth(billed):
    b = billed
    scratch = b["scratch"]
    expected = _expected_invoices(b)
    assert b["first_close"].invoices == len(expected)
    for iid, want in expected.items():
        got = [
            (ln.kind, ln.meter, ln.quantity, ln.amount, ln.event_count)
            for ln in _lines_of(scratch, iid)
        ]
        assert got == want, iid
    headers = ledger.final_invoices(scratch.ch(), scratch.settings.clickhouse_database)
    assert {h.invoice_id for h in headers} >= set(expected)
    for h in headers:
        lines = _lines_of(scratch, h.invoice_id)
        assert sum((ln.amount for ln in lines), Decimal(0)) == h.total
        assert h.total >= 0


def test_each_line_names_its_versions_and_events(billed):
    b = billed
    scratch = b["scratch"]
    db = scratch.settings.clickhouse_database
    meters = {m.id: m for m in b["cat"].meters}
    checked = 0
    for inv in b["invoices"]:
        for ln in inv.lines:
            if ln.kind != "usage" or not ln.event_count:
                continue
            assert (ln.meter_version, ln.plan, ln.price_version) == (
                meters[ln.meter].version,
                PLANS[inv.customer_id][0],
                1,
            )
            # the explain query lists exactly the line's events (run on ClickHouse 18.16)
            sql = ledger.line_events_sql(db, inv.customer_id, inv.period, meters[ln.meter])
            # (the after-close event is listed too: it is billed by an adjustment, tested below)
            ids = [r[0] for r in scratch.ch().execute(sql) if r[0] != b["late_event"].event_id]
            assert len(ids) == ln.event_count
            assert id_digest(ids) == ln.events_digest
            checked += 1
    assert checked >= 8


def test_active_users_digest_is_independent_of_the_pipeline(billed):
    b = billed
    inv = next(i for i in b["invoices"] if i.customer_id == "cust-0" and i.lines[0].event_count)
    p = inv.period
    ids = [
        e.event_id
        for e in b["usage"] + b["sc"].late
        if e.customer_id == "cust-0"
        and e.event_name == "api_call"
        and p.start <= e.timestamp < p.end
    ]
    line = next(ln for ln in inv.lines if ln.meter == "active_users")
    assert line.events_digest == id_digest(ids)


def test_streamed_amounts_telescope_to_the_period_price(billed):
    b = billed
    # waited for in the fixture: checked here so a failure names what differed
    got = {
        (c, ps, m): a
        for (c, ps, m, _), a in ledger.streamed_totals(
            b["scratch"].ch(), b["scratch"].settings.clickhouse_database
        ).items()
    }
    assert got == b["want_streamed"]
    assert "cust-3" not in {c for c, _, _ in got}, "a customer without subscription was rated"


def test_quota_alerts_fire_once_per_threshold_to_topic_and_table(billed):
    b = billed
    want = b["want_alerts"]
    assert want, "the scenario should cross some quota thresholds"
    rows = b["scratch"].query(
        "SELECT customer_id, meter, threshold_pct, hard_cap, alert_id FROM {db}.alerts FINAL"
    )
    assert {(c, m, p, bool(h)) for c, m, p, h, _ in rows} == want
    schema = fastavro.parse_schema(json.loads((REPO_ROOT / "schemas/alert/v1.avsc").read_text()))
    decoded = []
    for m in b["alert_records"]:
        frame = split_confluent_frame(m.value())
        assert frame is not None, "alert record is not Confluent-framed"
        decoded.append(fastavro.schemaless_reader(io.BytesIO(frame[1]), schema))
    assert sorted(d["alert_id"] for d in decoded) == sorted(r[4] for r in rows)  # once each
    assert {(d["customer_id"], d["meter"], d["threshold_pct"], d["hard_cap"]) for d in decoded} == (
        want
    )
    assert all(
        m.key().decode() == d["customer_id"]
        for m, d in zip(b["alert_records"], decoded, strict=True)
    )


def test_reconciliation_matches_or_is_explained_by_late_events(billed):
    b = billed
    rows = bc.reconcile(b["scratch"].settings, b["cat"].book, b["cat"].meters)
    by_status = defaultdict(list)
    for r in rows:
        by_status[r.status].append(r)
    assert not by_status["UNEXPLAINED"], by_status["UNEXPLAINED"]
    assert by_status["match"]
    explained = by_status["explained by late events"]
    assert explained, "the scenario's late events should leave a streamed-vs-closed gap"
    assert all(r.late_events > 0 and r.gap != 0 for r in explained)
    assert all(r.meter == "active_users" for r in by_status["close only"])


def test_rerunning_the_close_writes_nothing(billed):
    b = billed
    assert b["rerun"].invoices == 0
    assert b["rerun"].already_final == b["first_close"].invoices
    assert b["after_rerun"] == b["ledger_rows"]


def test_shadow_rerate_reports_the_difference_without_writing(billed):
    b = billed
    scratch = b["scratch"]
    raw = yaml.safe_load(PRICES.read_text())
    raw["plans"][0]["versions"][0]["charges"]["calls"] = {"model": "per_unit", "unit_price": "1"}
    book = parse_price_book(raw, "<shadow>")
    inv = next(i for i in b["invoices"] if i.customer_id == "cust-0" and len(i.lines) > 2)
    before = {t: _count(scratch, t) for t in ("invoices", "invoice_lines")}
    rows = {r.meter: r for r in bc.rerate(scratch.settings, inv.invoice_id, book, b["cat"].meters)}
    calls = next(ln for ln in inv.lines if ln.meter == "calls")
    assert rows["calls"].billed_amount == calls.amount
    assert rows["calls"].shadow_amount == _cents(calls.quantity * 1)  # per unit at 1.00
    # the period is recomputed from today's events: the after-close user shows up as well
    users = rows.pop("active_users")
    assert users.shadow_quantity == users.billed_quantity + 1
    assert all(r.difference == 0 for m, r in rows.items() if m != "calls")
    assert {t: _count(scratch, t) for t in ("invoices", "invoice_lines")} == before


def test_event_after_close_becomes_one_adjustment_line(billed):
    b = billed
    scratch = b["scratch"]
    original = next(
        i
        for i in b["invoices"]
        if i.customer_id == "cust-0" and i.period.start <= b["late_event"].timestamp < i.period.end
    )
    users = next(ln for ln in original.lines if ln.meter == "active_users")
    q = users.quantity
    next_end = _plus_month(original.period.end)
    res, invoices = close(scratch.settings, b["cat"], next_end + GRACE + timedelta(hours=1), GRACE)
    adjustments = [(i, ln) for i in invoices for ln in i.lines if ln.kind == "adjustment"]
    assert len(adjustments) == 1 == res.adjustment_lines
    inv, ln = adjustments[0]
    assert inv.customer_id == "cust-0" and inv.period.start == original.period.end
    assert ln.refers_to == original.invoice_id and ln.meter == "active_users"
    # flat fee 10.00 with 5 users included, 1.50 per user above: one more distinct user
    fee = lambda n: Decimal("10.00") + max(Decimal(0), n - 5) * Decimal("1.50")  # noqa: E731
    assert ln.amount == _cents(fee(q + 1)) - _cents(fee(q))
    assert ln.quantity == q + 1 and ln.event_count == users.event_count + 1
    # the original invoice is untouched
    assert [x.amount for x in _lines_of(scratch, original.invoice_id)] == [
        x.amount for x in original.lines
    ]
