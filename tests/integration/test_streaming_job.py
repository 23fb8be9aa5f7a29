"""The JVM streaming job (jobs/streaming) end to end on the real stack: an adversarial scenario
(duplicates, disorder, every dead-letter reason) -> job -> Kafka output topics -> `meterflow
load` -> ClickHouse, every result checked against the scenario's ground truth; and its plan
holds no Python operator and exactly one Deduplicate."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from connectors import ledger
from connectors.producer import produce_raw
from connectors.registry import client as registry_client
from meterflow.meters import load_meters
from meterflow.settings import REPO_ROOT
from meterflow.testing.scenario import ScenarioConfig, generate
from tests.integration import scenario_checks as checks
from tests.integration.conftest import free_port, job_counters, kill_job
from tests.integration.expected import (
    SCENARIO_PLANS,
    scenario_months,
    scenario_period_amounts,
    scenario_quota_alert_ids,
)

METERS = REPO_ROOT / "schemas" / "meters" / "scenario.yaml"
PRICES = REPO_ROOT / "schemas" / "prices" / "scenario.yaml"
SUBSCRIPTIONS = REPO_ROOT / "schemas" / "customers" / "scenario.yaml"


def _start() -> datetime:
    # recent (the broker refuses record times far from now) and hour-aligned
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)


@pytest.fixture(scope="module")
def run(module_scratch):
    s = module_scratch
    sc = generate(ScenarioConfig(seed=42, start=_start(), events=3000, customers=4))
    produce_raw(s.settings, [(r.key, r.value, r.timestamp_ms) for r in sc.records])
    job = subprocess.run(
        [sys.executable, "-m", "jobs.streaming", "--bounded", "--meters", str(METERS),
         "--prices", str(PRICES), "--subscriptions", str(SUBSCRIPTIONS),
         "--group-id", f"meterflow-metering-it-{s.run_id}", "--checkpoint-dir", str(s.checkpoints)],
        cwd=REPO_ROOT, env=s.env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert job.returncode == 0, job.stderr[-4000:]
    load = subprocess.run(
        [sys.executable, "-m", "meterflow.cli", "load", "--once"],
        cwd=REPO_ROOT, env=s.env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert load.returncode == 0, load.stderr[-4000:]
    return s, sc


def test_every_meter_window_matches_ground_truth(run):
    checks.windows_match(*run)


def test_each_accepted_event_is_stored_exactly_once(run):
    checks.accepted_events_stored_once(*run)


def test_dead_letters_carry_reason_original_bytes_and_position(run):
    checks.dead_letters_carry_reason_bytes_and_position(*run)


def test_every_input_is_accounted_for_exactly_once(run):
    checks.every_input_accounted_once(*run)


def test_period_cost_is_the_price_of_each_period_quantity(run):
    """Every (customer, period, meter) the plans charge, priced by the hand-written prices of
    schemas/prices/scenario.yaml over the ground truth's events; nothing else."""
    s, sc = run
    periods = scenario_months(sc.accepted)
    want = scenario_period_amounts(periods)
    rows = s.query(
        "SELECT customer_id, period_start, meter, period_amount, revision, plan, price_version, "
        "currency FROM {db}.period_cost FINAL"
    )
    got = {(c, ps, m): (a, rev) for c, ps, m, a, rev, *_ in rows}
    assert got == want
    # what reconciliation compares with the close: the same amounts
    claims = ledger.streamed_totals(s.ch(), s.settings.clickhouse_database)
    assert {(c, ps.replace(tzinfo=None), m): a for (c, ps, m, _v), a in claims.items()} == {
        k: a for k, (a, _n) in want.items()
    }
    assert {(c, plan, v, cur) for c, _, _, _, _, plan, v, cur in rows} == {
        (c, SCENARIO_PLANS.get(c, "scenario"), 1, "USD") for c, _ in periods
    }


def test_each_quota_threshold_alerts_once(run):
    """Plan `scenario` (cust-1 is on scenario_min, which has none): calls 100 (hard cap) and
    gpu_max 8, at 75/90/100 %; each reached threshold once on the Avro alerts topic (readable by
    the webhook sender's registry deserializer) and in the alerts table."""
    s, sc = run
    want = scenario_quota_alert_ids(scenario_months(sc.accepted))
    assert want
    deserialize = AvroDeserializer(registry_client(s.settings))
    topic = s.settings.alerts_topic
    records = [
        deserialize(m.value(), SerializationContext(topic, MessageField.VALUE))
        for m in s.topic_records(topic)
    ]
    assert sorted(r["alert_id"] for r in records) == sorted(want)
    for r in records:
        assert r["hard_cap"] is (r["meter"] == "calls")
        assert Decimal(r["quantity"]) * 100 >= Decimal(r["limit"]) * r["threshold_pct"]
    stored = s.query("SELECT alert_id, hard_cap, threshold_pct FROM {db}.alerts FINAL")
    assert {a for a, _, _ in stored} == want


def test_the_plan_has_no_python_operator_one_deduplicate_one_window_per_size(
    base_settings, tmp_path
):
    from jobs.streaming.environment import LONG_STATE_TTL
    from jobs.streaming.options import JobOptions
    from jobs.streaming.pipeline import build, compiled_plan
    from jobs.streaming.state_ttl import state_ttls

    opts = JobOptions(
        checkpoint_dir=tmp_path,
        meters_file=METERS,
        prices_file=PRICES,
        subscriptions_file=SUBSCRIPTIONS,
        dedup_horizon_s=3600,
    )
    meters = load_meters(METERS)
    _t_env, stmts = build(base_settings, meters, opts)
    plan = stmts.explain()
    optimized = plan[plan.index("== Optimized Execution Plan ==") :]
    assert "Python" not in optimized
    assert optimized.count("Deduplicate(") == 1
    # the windows sink and the rating read one window aggregation per window size
    assert optimized.count("GroupWindowAggregate(") == len({m.window for m in meters})
    assert optimized.count("GroupAggregate(") == 1  # the period aggregation
    assert optimized.count("OverAggregate(") == 1  # the alerts' running usage
    # the dedup forgets ids after the horizon; a period's state lives as long as the period
    assert sorted(state_ttls(compiled_plan(stmts, opts))) == [
        ("stream-exec-deduplicate", "deduplicateState", "3600 s"),
        ("stream-exec-group-aggregate", "groupAggregateState", LONG_STATE_TTL),
    ]


def test_inputs_accepted_late_and_dead_letters_are_metrics_of_their_own(scratch):
    """The running job's counters against the scenario's ground truth; duplicates are what the
    others leave (all four read at the same moment, after the stream went quiet)."""
    cfg = ScenarioConfig(seed=8, start=_start(), events=1500, customers=3, malformed_per_kind=1)
    sc = generate(cfg)
    records = [r for phase in sc.phases for r in phase]
    produce_raw(scratch.settings, [(r.key, r.value, r.timestamp_ms) for r in records])
    port = free_port()
    job = subprocess.Popen(
        [sys.executable, "-m", "jobs.streaming", "--meters", str(METERS), "--prices", "none",
         "--group-id",
         f"meterflow-metering-it-{scratch.run_id}", "--checkpoint-dir", str(scratch.checkpoints)],
        cwd=REPO_ROOT, env={**scratch.env(), "FLINK_PROM_PORTS": str(port)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    want = {
        "records_in": len(records),
        "records_accepted": len(sc.accepted),
        "records_late": len(sc.late),
        "records_dead_lettered": sum(sc.dead_letters.values()),
    }

    def got() -> dict[str, float]:
        try:
            return job_counters(port)
        except OSError:
            return {}

    try:
        scratch.wait_for(
            "the job's counters",
            lambda: {k: got().get(k, 0) for k in want} == want,
            job=job,
            describe=lambda: f"{dict(got())} != {want}",
        )
        c = got()
        duplicates = (
            c["records_in"] - c["records_accepted"] - c["records_late"]
            - c["records_dead_lettered"]
        )  # fmt: skip
        assert duplicates == sc.duplicates > 0
    finally:
        kill_job(job)
