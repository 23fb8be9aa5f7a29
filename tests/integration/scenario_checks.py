"""What a metering job must have stored for an adversarial scenario, checked against its ground
truth; shared by the Python job's and the JVM job's end-to-end tests."""

from __future__ import annotations

import base64
import json
from collections import Counter

from meterflow.testing.scenario import MALFORMED_KINDS
from tests.integration.expected import WINDOWS_SQL, actual_windows, expected_windows


def windows_match(scratch, sc) -> None:
    assert actual_windows(scratch.query(WINDOWS_SQL)) == expected_windows(sc.accepted)


def accepted_events_stored_once(scratch, sc) -> None:
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


def dead_letters_carry_reason_bytes_and_position(scratch, sc) -> None:
    produced = {(r.value, r.kind) for r in sc.records if r.kind in MALFORMED_KINDS}
    source = {
        (m.partition(), m.offset()): m.value()
        for m in scratch.topic_records(scratch.settings.events_topic)
    }
    reasons: Counter[str] = Counter()
    for m in scratch.topic_records(scratch.settings.dlq_topic):
        d = json.loads(m.value())
        payload = base64.b64decode(d["payload"])
        assert d["topic"] == scratch.settings.events_topic
        assert source[(d["partition"], d["offset"])] == payload, "DLQ bytes differ from input"
        assert (payload, d["reason"]) in produced
        assert d["detail"]
        reasons[d["reason"]] += 1
    assert reasons == sc.dead_letters
    assert set(reasons) == set(MALFORMED_KINDS)


def every_input_accounted_once(scratch, sc) -> None:
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
