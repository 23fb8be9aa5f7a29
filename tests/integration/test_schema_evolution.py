"""Schema v1 -> v2 (a new optional field) under BACKWARD compatibility, through both jobs (the
JVM job's outputs stored by `meterflow load`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from connectors.producer import produce_events
from connectors.registry import client as registry_client
from connectors.registry import register_event_schema
from meterflow.events import UsageEvent, schema_text
from meterflow.settings import REPO_ROOT

METERS = str(REPO_ROOT / "tests" / "integration" / "data" / "skeleton_meters.yaml")


@pytest.mark.parametrize("module", ["jobs.metering", "jobs.streaming"])
def test_v2_producers_and_v1_producers_are_metered_together(scratch, module):
    s = scratch.settings
    v1_id = registry_client(s).get_latest_version(s.events_subject).schema_id
    v2_id = register_event_schema(s, schema_text(2))  # refused if not BACKWARD compatible
    assert v2_id != v1_id
    assert len(registry_client(s).get_versions(s.events_subject)) == 2

    t = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
    old = [UsageEvent(f"v1-{i}", "llm_tokens", "c", t, Decimal(2)) for i in range(3)]
    new = [UsageEvent(f"v2-{i}", "llm_tokens", "c", t, Decimal(5)) for i in range(2)]
    produce_events(s, old, schema_version=1)
    produce_events(s, new, schema_version=2)
    scratch.run_job("--meters", METERS, module=module)

    rows = scratch.query("SELECT event_id, schema_id FROM {db}.events FINAL ORDER BY event_id")
    assert rows == [(f"v1-{i}", v1_id) for i in range(3)] + [(f"v2-{i}", v2_id) for i in range(2)]
    assert scratch.query("SELECT event_count, quantity FROM {db}.usage_windows FINAL") == [
        (5, Decimal(16))
    ]
