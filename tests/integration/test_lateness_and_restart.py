"""Event time on a running (unbounded) job: late-but-allowed events re-emit their windows,
events beyond allowed lateness go to the late topic and table, and a job killed mid-stream and
restored from its last checkpoint ends with the same results as an uninterrupted run.

Every test runs on both jobs: the Python job (jobs/metering.py, writing ClickHouse itself) and
the JVM job (jobs/streaming, writing Kafka in transactions) with `meterflow load` beside it."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import fastavro
import pytest

from connectors import ledger
from connectors.producer import produce_raw
from meterflow.settings import REPO_ROOT
from meterflow.testing.scenario import Record, ScenarioConfig, flush_phase, generate
from meterflow.wire import split_confluent_frame
from tests.integration.conftest import kill_job, make_scratch
from tests.integration.expected import (
    WINDOWS_SQL,
    actual_windows,
    expected_windows,
    scenario_months,
    scenario_period_amounts,
    scenario_quota_alert_ids,
    window_diff,
)

METERS = str(REPO_ROOT / "schemas" / "meters" / "scenario.yaml")
RATING = (
    "--prices",
    str(REPO_ROOT / "schemas" / "prices" / "scenario.yaml"),
    "--subscriptions",
    str(REPO_ROOT / "schemas" / "customers" / "scenario.yaml"),
)
JOB_ARGS = ("--meters", METERS, "--checkpoint-interval", "2", *RATING)
ENGINES = {"python": "jobs.metering", "jvm": "jobs.streaming"}


@pytest.fixture(params=sorted(ENGINES))
def engine(request, scratch):
    """The job module under test; the JVM job's loader runs beside it for the whole test."""
    module = ENGINES[request.param]
    if module == "jobs.streaming":
        with scratch.loader():
            yield module
    else:
        yield module


def _streamed(scratch) -> dict:
    """(customer, period start, meter) -> the streamed amount reconciliation compares with the
    close: the JVM job's period cost, or the sum of the Python job's rated windows."""
    claims = ledger.streamed_totals(scratch.ch(), scratch.settings.clickhouse_database)
    return {(c, ps.replace(tzinfo=None), m): a for (c, ps, m, _v), a in claims.items()}


def _start() -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)


def _produce(scratch, records: list[Record]) -> None:
    produce_raw(scratch.settings, [(r.key, r.value, r.timestamp_ms) for r in records])


def _windows(scratch):
    return actual_windows(scratch.query(WINDOWS_SQL))


def _wait_for_windows(scratch, what: str, expected: dict, job) -> None:
    """Waits until the stored windows are `expected`; a timeout shows how they differ."""
    scratch.wait_for(
        what,
        lambda: _windows(scratch) == expected,
        job=job,
        describe=lambda: window_diff(_windows(scratch), expected),
    )


def _count(scratch, table: str) -> int:
    return scratch.query(f"SELECT count() FROM {{db}}.{table} FINAL")[0][0]


def test_allowed_lateness_re_emits_and_beyond_lateness_goes_to_late_outputs(scratch, engine):
    cfg = ScenarioConfig(
        seed=7, start=_start(), events=800, malformed_per_kind=0, allowed_late=12, late=9
    )
    sc = generate(cfg)
    phase1, phase2 = sc.phases
    # the generator appends phase 2's allowed-late events after phase 1's events
    on_time, allowed = sc.accepted[: cfg.events], sc.accepted[cfg.events :]
    assert len(allowed) == 12
    head = max(e.timestamp for e in on_time)
    flush = flush_phase(sc, cfg, at=head + timedelta(hours=2))

    job = scratch.start_job(*JOB_ARGS, module=engine)
    try:
        _produce(scratch, phase1)
        # Phase 1 is processed and the watermark is past the newest complete minute once that
        # minute's windows are in ClickHouse.
        minute = timedelta(minutes=1)
        fence = max(
            (
                k
                for k in expected_windows(on_time)
                if k[5] - k[4] == minute and k[5] <= head - timedelta(seconds=10)
            ),
            key=lambda k: k[5],
        )
        scratch.wait_for("phase 1 windows", lambda: fence in _windows(scratch), job=job)
        scratch.wait_for("phase 1 events", lambda: _count(scratch, "events") == cfg.events, job=job)
        before = _windows(scratch)

        _produce(scratch, phase2)
        _produce(scratch, flush)
        expected = expected_windows(sc.accepted)
        _wait_for_windows(scratch, "all windows", expected, job)
        scratch.wait_for(
            "late events", lambda: _count(scratch, "late_events") == len(sc.late), job=job
        )
        # The late topic is transactional: its records become visible when the checkpoint that
        # covers them completes, so check it while the job runs (killing it aborts that).
        late_topic = scratch.settings.late_topic
        late_bytes = {r.value for r in phase2 if r.kind == "late"}
        scratch.wait_for(
            "late topic",
            lambda: {m.value() for m in scratch.topic_records(late_topic, 2)} == late_bytes,
            job=job,
        )
    finally:
        kill_job(job)

    # every window an allowed-late event falls into was fired before it arrived and fired again
    touched = {
        k
        for k in expected
        if any(k[0] == e.customer_id and k[4] <= e.timestamp < k[5] for e in allowed)
    }
    refired = [k for k in touched if k in before and before[k] != expected[k]]
    assert refired, "no window was re-emitted for the allowed-late events"
    assert all(expected[k][0] > before[k][0] for k in refired)

    late_rows = scratch.query("SELECT event_id, watermark_ms FROM {db}.late_events FINAL")
    assert {r[0] for r in late_rows} == {e.event_id for e in sc.late}
    for event_id, wm in late_rows:
        ev = next(e for e in sc.late if e.event_id == event_id)
        assert (
            wm - (ev.timestamp - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
        ) > cfg.allowed_lateness // timedelta(milliseconds=1)
    late_ids = {e.event_id for e in sc.late}
    assert not scratch.query(
        "SELECT count() FROM {db}.events FINAL WHERE event_id IN %(ids)s", {"ids": tuple(late_ids)}
    )[0][0]


def test_killed_job_restored_from_checkpoint_matches_uninterrupted_run(
    scratch, engine, base_settings, tmp_path
):
    cfg = ScenarioConfig(seed=9, start=_start(), events=4000, malformed_per_kind=1)
    sc = generate(cfg)
    (records,) = sc.phases
    head = max(e.timestamp for e in sc.accepted)
    flush = flush_phase(sc, cfg, at=head + timedelta(hours=2))
    cut = len(records) * 6 // 10
    periods = scenario_months(sc.accepted)
    # quota alerts of plan `scenario` (cust-1 is on scenario_min, which has none): calls 100,
    # gpu_max 8, at 75/90/100 %
    want_alerts = scenario_quota_alert_ids(periods)

    job = scratch.start_job(*JOB_ARGS, module=engine)
    try:
        _produce(scratch, records[:cut])
        group_dir = scratch.checkpoints / f"meterflow-metering-it-{scratch.run_id}"
        scratch.wait_for(
            "a completed checkpoint", lambda: any(group_dir.glob("*/chk-*/_metadata")), job=job
        )
        scratch.wait_for("some events stored", lambda: _count(scratch, "events") > 0, job=job)
        _produce(scratch, records[cut : cut + 200])
    finally:
        kill_job(job)  # SIGKILL mid-stream: no clean shutdown, no final checkpoint

    _produce(scratch, records[cut + 200 :] + flush)
    job = scratch.start_job(*JOB_ARGS, "--restore", "latest", module=engine)
    expected = expected_windows(sc.accepted)
    try:
        scratch.wait_for(
            "all windows after restore", lambda: _windows(scratch) == expected, timeout=240, job=job
        )
        scratch.wait_for(
            "all events", lambda: _count(scratch, "events") == len(sc.accepted), job=job
        )
        # each dead letter exactly once despite the crash (the topic is transactional)
        dlq = scratch.settings.dlq_topic
        scratch.wait_for(
            "dead letters committed",
            lambda: (
                Counter(json.loads(m.value())["reason"] for m in scratch.topic_records(dlq, 2))
                == sc.dead_letters
            ),
            job=job,
        )
        # each quota alert exactly once on the (transactional) alerts topic despite the crash
        alerts_topic = scratch.settings.alerts_topic

        def alert_ids() -> list[bytes]:
            return [m.value() for m in scratch.topic_records(alerts_topic, 2)]

        scratch.wait_for(
            "alerts committed",
            lambda: len(alert_ids()) >= len(want_alerts),
            job=job,
        )
        ids = alert_ids()
    finally:
        kill_job(job)
    assert want_alerts
    decoded = sorted(_alert_id(payload) for payload in ids)
    assert decoded == sorted(want_alerts), "each threshold once per period across the restart"
    assert {r[0] for r in scratch.query("SELECT alert_id FROM {db}.alerts FINAL")} == want_alerts

    with make_scratch(base_settings, tmp_path) as ref:
        _produce(ref, records + flush)
        ref.run_job("--meters", METERS, *RATING, module=engine)
        assert _windows(ref) == _windows(scratch) == expected
        events_sql = "SELECT event_id, event_name, value, properties FROM {db}.events FINAL"
        assert sorted(ref.query(events_sql)) == sorted(scratch.query(events_sql))
        # rating state survives the crash: the same streamed amounts as the uninterrupted run,
        # each equal to the hand-written price of the period's quantity
        rated = _streamed(scratch)
        assert rated == _streamed(ref)
        assert rated == {k: a for k, (a, _n) in scenario_period_amounts(periods).items()}


def _alert_id(payload: bytes) -> str:
    frame = split_confluent_frame(payload)
    assert frame is not None, "alert record is not Confluent-framed"
    schema = fastavro.parse_schema(json.loads((REPO_ROOT / "schemas/alert/v1.avsc").read_text()))
    return fastavro.schemaless_reader(io.BytesIO(frame[1]), schema)["alert_id"]


def test_a_silent_partition_does_not_stall_windows(scratch, engine):
    # one customer: every record lands in one partition; the other stays silent all along
    cfg = ScenarioConfig(seed=11, start=_start(), events=300, customers=1, malformed_per_kind=0)
    sc = generate(cfg)
    head = max(e.timestamp for e in sc.accepted)
    job = scratch.start_job(*JOB_ARGS, module=engine)
    try:
        _produce(scratch, sc.phases[0])
        # a late-running clock on the active partition only: windows must still close
        _produce(scratch, flush_phase(sc, cfg, at=head + timedelta(hours=2)))
        expected = expected_windows(sc.accepted)
        _wait_for_windows(scratch, "windows closed with one partition silent", expected, job)
    finally:
        kill_job(job)
    parts = {p for (p,) in scratch.query("SELECT DISTINCT kafka_partition FROM {db}.events")}
    assert len(parts) == 1, "the scenario did not leave a partition silent"
