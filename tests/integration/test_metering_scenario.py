"""An adversarial stream (duplicates, disorder, every dead-letter reason, several customers,
meters and dimensions) through the real stack; every result checked against ground truth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from connectors.producer import produce_raw
from meterflow.settings import REPO_ROOT
from meterflow.testing.scenario import ScenarioConfig, generate
from tests.integration import scenario_checks as checks

METERS = REPO_ROOT / "schemas" / "meters" / "scenario.yaml"


def _start() -> datetime:
    # recent (the broker refuses record times far from now) and hour-aligned
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)


@pytest.fixture(scope="module")
def run(module_scratch):
    cfg = ScenarioConfig(seed=42, start=_start(), events=3000, customers=4)
    sc = generate(cfg)
    produce_raw(module_scratch.settings, [(r.key, r.value, r.timestamp_ms) for r in sc.records])
    module_scratch.run_job("--meters", str(METERS))
    return module_scratch, sc


def test_every_meter_window_matches_ground_truth(run):
    checks.windows_match(*run)


def test_each_accepted_event_is_stored_exactly_once(run):
    checks.accepted_events_stored_once(*run)


def test_dead_letters_carry_reason_original_bytes_and_position(run):
    checks.dead_letters_carry_reason_bytes_and_position(*run)


def test_every_input_is_accounted_for_exactly_once(run):
    checks.every_input_accounted_once(*run)
