"""The JVM streaming job (jobs/streaming) end to end on the real stack: an adversarial scenario
(duplicates, disorder, every dead-letter reason) -> job -> Kafka output topics -> `meterflow
load` -> ClickHouse, every result checked against the scenario's ground truth; and its plan
holds no Python operator and exactly one Deduplicate."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from connectors.producer import produce_raw
from meterflow.meters import load_meters
from meterflow.settings import REPO_ROOT
from meterflow.testing.scenario import ScenarioConfig, generate
from tests.integration import scenario_checks as checks

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
    checks.windows_match(*run)


def test_each_accepted_event_is_stored_exactly_once(run):
    checks.accepted_events_stored_once(*run)


def test_dead_letters_carry_reason_original_bytes_and_position(run):
    checks.dead_letters_carry_reason_bytes_and_position(*run)


def test_every_input_is_accounted_for_exactly_once(run):
    checks.every_input_accounted_once(*run)


def test_the_plan_has_no_python_operator_and_one_deduplicate(base_settings, tmp_path):
    from jobs.streaming.options import JobOptions
    from jobs.streaming.pipeline import build

    opts = JobOptions(checkpoint_dir=tmp_path, meters_file=METERS)
    _env, stmts = build(base_settings, load_meters(METERS), opts)
    plan = stmts.explain()
    optimized = plan[plan.index("== Optimized Execution Plan ==") :]
    assert "Python" not in optimized
    assert optimized.count("Deduplicate(") == 1
