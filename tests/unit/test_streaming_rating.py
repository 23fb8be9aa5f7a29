"""Real-time rating in the JVM job (jobs/streaming/rating.py): the period table against the
Python rater it stands in for, and the generated SQL as strings. The SQL's amounts are proven
equal to meterflow.pricing in tests/integration/test_pricing_sql.py and end to end in
tests/integration/test_streaming_job.py."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from jobs.streaming import alerts, rating, state_ttl
from meterflow.meters import Aggregation, load_meters, parse_meter
from meterflow.price_book import load_price_book
from meterflow.rating import PricedPeriod, Rater, priced_periods
from meterflow.settings import REPO_ROOT
from meterflow.subscriptions import parse_subscriptions

SCHEMAS = REPO_ROOT / "schemas"
BOOK = load_price_book(SCHEMAS / "prices" / "scenario.yaml")
METERS = load_meters(SCHEMAS / "meters" / "scenario.yaml")
# calendar, quarterly and anniversary periods, a Jan 31 anchor, an end mid-period, plan changes
SUBS = parse_subscriptions(
    {
        "subscriptions": [
            {"id": "s1", "customer_id": "c1", "plan": "scenario", "start": "2026-01-31T00:00:00Z",
             "anchor": "anniversary",
             "plan_changes": [{"plan": "scenario_min", "requested_at": "2026-03-15T00:00:00Z"}]},
            {"id": "s2", "customer_id": "c2", "plan": "scenario_min",
             "start": "2026-02-10T13:30:00Z", "period_months": 3,
             "end": "2027-01-20T00:00:00Z"},
            {"id": "s3", "customer_id": "c2", "plan": "scenario", "start": "2027-01-20T00:00:00Z"},
            {"id": "s4", "customer_id": "tab\\there", "plan": "scenario",
             "start": "2026-06-01T00:00:00Z"},
        ]
    },
    "<test>",
)  # fmt: skip


def _lookup(table: list[PricedPeriod], customer: str, at: datetime) -> PricedPeriod | None:
    for p in table:
        if p.customer_id == customer and p.start <= at < p.end:
            return p
    return None


def test_the_period_table_answers_as_the_rater_does():
    until = datetime(2028, 1, 1, tzinfo=UTC)
    table = priced_periods(SUBS, BOOK, until)
    rater = Rater(SUBS, BOOK)
    rng = random.Random(7)
    lo = datetime(2025, 12, 1, tzinfo=UTC)
    for _ in range(3000):
        at = lo + timedelta(seconds=rng.randrange(int((until - lo).total_seconds())))
        customer = rng.choice(["c1", "c2", "tab\\there", "nobody"])
        got = _lookup(table, customer, at)
        want = rater.context(customer, "calls", at)  # `calls` is charged by both plans
        if want is None:
            assert got is None, (customer, at)
            continue
        assert got is not None, (customer, at)
        assert (got.subscription_id, got.start, got.end) == (
            want.subscription.id,
            want.period.start,
            want.period.end,
        )
        assert (got.plan, got.price_version, got.currency) == (
            want.plan,
            want.price_version,
            want.currency,
        )


def test_the_period_table_text_escapes_separators():
    p = PricedPeriod(
        "a\tb\nc\\d",
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 2, 1, tzinfo=UTC),
        "s",
        "plan",
        2,
        "USD",
    )
    assert rating.period_table_text([p]) == (
        "a\\tb\\nc\\\\d\t1767225600000\t1769904000000\ts\tplan\t2\tUSD\n"
    )


def test_the_table_file_is_named_by_its_content(tmp_path):
    table = priced_periods(SUBS, BOOK, datetime(2027, 1, 1, tzinfo=UTC))
    a = rating.write_period_table(table, tmp_path)
    assert rating.write_period_table(table, tmp_path) == a
    assert rating.write_period_table(table[:-1], tmp_path) != a
    assert a.read_text() == rating.period_table_text(table)


def test_only_charged_rateable_meters_are_rated():
    ids = {m.id for m in rating.rated_meters(METERS, BOOK)}
    assert "active_users" not in ids  # UNIQUE_COUNT: priced at close only
    assert {"calls", "tokens", "gpu_latest", "gpu_avg"} <= ids
    charged = rating.charged_sql(BOOK)
    assert charged.startswith("CASE plan WHEN 'scenario' THEN CASE price_version WHEN 1 THEN ")
    assert charged.endswith("ELSE FALSE END")


def test_per_event_fees_only_where_a_plan_bounds_them(tmp_path):
    fees = rating.fees(METERS, BOOK, tmp_path / "p.tsv")
    assert set(fees) == {"tokens"}  # scenario_min: 0.1 % of each event, 0.50 to 2.00
    fee = fees["tokens"]
    assert f"MF_PERIOD('{tmp_path / 'p.tsv'}', e.customer_id, e.ts_ms).plan = 'scenario_min'" in fee
    assert "GREATEST(CAST(CAST({q} AS DECIMAL(24, 12)) * CAST(0.001 AS DECIMAL(13, 8))" in fee
    assert "LEAST(GREATEST(" in fee
    # a value outside the exact domain pushes the period's fee sum outside it too (NULL amount)
    assert "WHEN {q} < 0 OR {q} >= 1000000000000 THEN CAST(100000000000000000 AS " in fee


def test_period_cost_sql():
    priced = rating.priced_windows_sql(METERS, BOOK, REPO_ROOT / "p.tsv", "window_partials")
    # rated meters only: active_users (UNIQUE_COUNT) is charged but priced at close
    assert "WHERE meter IN ('calls', 'tokens', 'tokens_weighted', " in priced
    assert "WHERE p IS NOT NULL AND CASE p.plan WHEN 'scenario' THEN CASE p.price_version " in (
        priced
    )
    partials = rating.period_partials_sql("priced_windows")
    assert "SUM(n) AS n, SUM(s) AS s, MIN(mn) AS mn, MAX(mx) AS mx, MAX(lk) AS lk" in partials
    assert partials.endswith(
        "GROUP BY customer_id, subscription_id, period_start, period_end, meter, "
        "meter_version, plan, price_version, currency"
    )
    cost = rating.period_cost_sql(METERS, BOOK, "period_partials")
    assert "WHEN 'gpu_avg' THEN MF_DIV(s, n)" in cost
    assert "n AS revision" in cost
    assert cost.startswith("SELECT customer_id, subscription_id, period_start, period_end, ")


PLAN = (
    '{"flinkVersion":"2.2","nodes":['
    '{"id":1,"type":"stream-exec-deduplicate_1","state":[{"index":0,"ttl":"1 h",'
    '"name":"deduplicateState"}]},'
    '{"id":2,"type":"stream-exec-group-aggregate_1","state":[{"index":0,"ttl":"1 h",'
    '"name":"groupAggregateState"}]},'
    '{"id":3,"type":"stream-exec-calc_1"}]}'
)


def test_state_ttls_are_set_per_operator_kind():
    out = state_ttl.with_state_ttls(PLAN, {state_ttl.DEDUPLICATE: "600 s"})
    assert state_ttl.state_ttls(out) == [
        ("stream-exec-deduplicate", "deduplicateState", "600 s"),
        ("stream-exec-group-aggregate", "groupAggregateState", "1 h"),
    ]


def test_quota_alerts_follow_the_first_crossing_of_each_threshold(tmp_path):
    quota = alerts.quota_meters(METERS, BOOK)
    assert [m.id for m in quota] == ["calls", "gpu_max"]  # the scenario plan's quotas
    limit = alerts.quota_sql(BOOK, "limit")
    assert "WHEN plan = 'scenario' AND price_version = 1 AND meter = 'calls' THEN CAST(100 AS " in (
        limit
    )
    assert "AND meter = 'calls' THEN CAST(TRUE AS BOOLEAN)" in alerts.quota_sql(BOOK, "hard_cap")
    events = alerts.quota_events_sql(METERS, BOOK, tmp_path / "p.tsv", "metered")
    assert "WHERE meter IN ('calls', 'gpu_max')" in events
    assert "ts_ms - MOD(ts_ms, CAST(window_s AS BIGINT) * 1000) AS ws_ms" in events
    assert "PROCTIME() AS arrival" in events
    running = alerts.running_sql("quota_events")
    assert "PARTITION BY customer_id, meter, period_start_ms ORDER BY arrival" in running
    assert "SUM(CASE WHEN q * 100 >= quota * 90 THEN 1 ELSE 0 END) OVER w AS c90" in running
    out = alerts.alerts_sql(METERS, BOOK, "running_usage")
    assert "WHEN 'calls' THEN (n - 1) * 100 < quota * 75 AND n * 100 >= quota * 75" in out
    assert "WHEN 'gpu_max' THEN q * 100 >= quota * 100 AND CASE 100 WHEN 75 THEN c75 " in out
    assert "'yyyyMMdd''T''HHmm'" in out  # alert ids as meterflow.alerts.Alert.alert_id


def test_crossings_per_aggregation():
    assert alerts.crossing_sql(Aggregation.SUM, "90") == (
        "s",
        "(s - q) * 100 < quota * 90 AND s * 100 >= quota * 90",
    )
    assert alerts.crossing_sql(Aggregation.MIN, "75") == ("mn", "n = 1 AND q * 100 >= quota * 75")


@pytest.mark.parametrize(
    ("aggregation", "negative"),
    [("AVG", False), ("LATEST", False), ("SUM", True)],
)
def test_quotas_on_two_way_quantities_are_refused(aggregation, negative):
    m = parse_meter(
        {
            "id": "calls",
            "version": 1,
            "event_name": "api_call",
            "aggregation": aggregation,
            "quantity": {"from": "property", "property": "n", "allow_negative": negative},
        },
        "<test>",
    )
    with pytest.raises(alerts.UnsupportedQuota, match="not supported by the JVM job yet"):
        alerts.quota_meters([m], BOOK)
