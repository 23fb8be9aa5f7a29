"""The JVM streaming job (jobs/streaming) end to end on the real stack: an adversarial scenario
(duplicates, disorder, every dead-letter reason) -> job -> Kafka output topics -> `meterflow
load` -> ClickHouse, every result checked against the scenario's ground truth; and its plan
holds no Python operator and exactly one Deduplicate."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from connectors.producer import produce_raw
from meterflow.meters import load_meters
from meterflow.settings import REPO_ROOT
from meterflow.testing.scenario import MALFORMED_KINDS, ScenarioConfig, generate
from tests.integration.expected import WINDOWS_SQL, actual_windows, expected_windows

METERS = REPO_ROOT / "schemas" / "meters" / "scenario.yaml"


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
         "--group-id", f"it-{s.run_id}", "--checkpoint-dir", str(s.checkpoints)],
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
    scratch, sc = run
    assert actual_windows(scratch.query(WINDOWS_SQL)) == expected_windows(sc.accepted)


def test_each_accepted_event_is_stored_exactly_once(run):
    scratch, sc = run
    rows = scratch.query(
        "SELECT event_id, customer_id, event_name, value, properties FROM {db}.events FINAL"
    )
    assert len(rows) == len({r[0] for r in rows})
    stored = {r[0]: r[1:] for r in rows}
    assert set(stored) == {e.event_id for e in sc.accepted}
    for e in sc.accepted:
        cust, name, value, props = stored[e.event_id]
        assert (cust, name, value, json.loads(props)) == (
            e.customer_id,
            e.event_name,
            e.value,
            e.properties,
        )


def test_dead_letters_carry_reason_original_bytes_and_position(run):
    scratch, sc = run
    produced = {(r.value, r.kind) for r in sc.records if r.kind in MALFORMED_KINDS}
    source = {
        (m.partition(), m.offset()): m.value()
        for m in scratch.topic_records(scratch.settings.events_topic)
    }
    reasons: Counter[str] = Counter()
    for m in scratch.topic_records(scratch.settings.dlq_topic):
        d = json.loads(m.value())
        payload = base64.b64decode(d["payload"]) if d["payload"] is not None else None
        assert d["topic"] == scratch.settings.events_topic
        assert source[(d["partition"], d["offset"])] == payload, "DLQ bytes differ from input"
        assert (payload, d["reason"]) in produced
        assert d["detail"]
        reasons[d["reason"]] += 1
    assert reasons == sc.dead_letters
    assert set(reasons) == set(MALFORMED_KINDS)


def test_every_input_is_accounted_for_exactly_once(run):
    scratch, sc = run
    inputs = len(scratch.topic_records(scratch.settings.events_topic))
    accepted = scratch.query("SELECT count() FROM {db}.events FINAL")[0][0]
    late = scratch.query("SELECT count() FROM {db}.late_events FINAL")[0][0]
    dead = len(scratch.topic_records(scratch.settings.dlq_topic))
    duplicates = inputs - accepted - late - dead
    assert (accepted, late, dead, duplicates) == (
        len(sc.accepted),
        len(sc.late),
        sum(sc.dead_letters.values()),
        sc.duplicates,
    )
    assert inputs == len(sc.records)


def test_the_plan_has_no_python_operator_and_one_deduplicate(base_settings, tmp_path):
    from jobs.streaming.options import JobOptions
    from jobs.streaming.pipeline import build

    opts = JobOptions(checkpoint_dir=tmp_path, meters_file=METERS)
    _env, stmts = build(base_settings, load_meters(METERS), opts)
    plan = stmts.explain()
    optimized = plan[plan.index("== Optimized Execution Plan ==") :]
    assert "Python" not in optimized
    assert optimized.count("Deduplicate(") == 1
