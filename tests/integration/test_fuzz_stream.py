"""A fuzz stream (meterflow.testing.fuzz: random bytes, mutated and truncated Avro, wrong and
unknown schema ids, huge strings and maps, 10 MB payloads, extreme decimals, far timestamps, odd
characters in ids, tombstones, duplicates) through the real JVM job and the loader.

What each record must become is not taken from the job: every record that landed in the topic
is decoded again with the Python reference decoder (the one the shared vectors pin), against the
real registry. The job must agree record by record on what it dead-letters and why, store every
accepted id, and account for every input exactly once — with no crash and no restart.

METERFLOW_FUZZ_RECORDS sets the stream's length (default 100,000).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from decimal import Decimal

import pytest

from connectors.producer import produce_raw
from connectors.registry import register_alert_schema, register_event_schema, schema_fetcher
from meterflow.decoding import Accepted, SchemaCache, decode
from meterflow.events import schema_text
from meterflow.meters import load_meters
from meterflow.settings import REPO_ROOT
from meterflow.testing.fuzz import fuzz_stream, now_ms
from tests.integration.conftest import free_port, job_metrics, kill_job

pytestmark = pytest.mark.integration

METERS = REPO_ROOT / "schemas" / "meters" / "default.yaml"
RECORDS = int(os.environ.get("METERFLOW_FUZZ_RECORDS", "100000"))


@pytest.fixture(scope="module")
def fuzzed(module_scratch):
    s = module_scratch
    v1 = register_event_schema(s.settings, schema_text(1))
    others = (register_event_schema(s.settings, schema_text(2)), register_alert_schema(s.settings))
    start = now_ms() - 30 * 60 * 1000 - 10 * RECORDS  # the broker refuses times far from now
    records = list(fuzz_stream(RECORDS, v1, others, start, seed=11))
    produce_raw(s.settings, [(r.key, r.value, r.timestamp_ms) for r in records])

    port = free_port()
    job = s.start_job(
        "--meters", str(METERS), "--prices", "none", module="jobs.streaming",
        env={"FLINK_PROM_PORTS": str(port)},
    )  # fmt: skip
    try:
        with s.loader():

            def metrics() -> dict[str, float]:
                try:
                    return job_metrics(port)
                except OSError:
                    return {}

            counter = "flink_taskmanager_job_task_operator_meterflow_records_{}".format
            s.wait_for(
                "the job to read every record",
                lambda: metrics().get(counter("in"), 0) == RECORDS,
                timeout=600,
                job=job,
                describe=lambda: f"{metrics().get(counter('in'))} of {RECORDS}",
            )
            m = metrics()
            counts = {k: m.get(counter(k), 0) for k in ("in", "accepted", "late", "dead_lettered")}
            s.wait_for(
                "the loader to store the accepted and late events",
                lambda: (
                    (
                        s.query("SELECT count() FROM {db}.events FINAL")[0][0],
                        s.query("SELECT count() FROM {db}.late_events FINAL")[0][0],
                    )
                    == (counts["accepted"], counts["late"])
                ),
                timeout=300,
                job=job,
            )
            restarts = metrics().get("flink_jobmanager_job_numRestarts", -1)
            alive = job.poll() is None
    finally:
        kill_job(job)
    return s, counts, restarts, alive


@pytest.fixture(scope="module")
def reference(fuzzed):
    """Each record of the topic as the reference decoder sees it: (partition, offset) ->
    verdict, with the record's own timestamp and the registry's schemas."""
    s = fuzzed[0]
    cache = SchemaCache(schema_fetcher(s.settings), schema_text(1))
    meters = load_meters(METERS)
    return {
        (m.partition(), m.offset()): decode(m.value(), m.timestamp()[1], cache, meters)
        for m in s.topic_records(s.settings.events_topic)
    }


def test_no_crash_and_no_restart(fuzzed):
    _, counts, restarts, alive = fuzzed
    assert alive, "the job exited"
    assert restarts == 0
    assert counts["in"] == RECORDS


def test_the_job_dead_letters_exactly_what_the_reference_decoder_does(fuzzed, reference):
    s = fuzzed[0]
    want = {pos: v.reason for pos, v in reference.items() if not isinstance(v, Accepted)}
    got, details = {}, {}
    for m in s.topic_records(s.settings.dlq_topic):
        d = json.loads(m.value())
        got[(d["partition"], d["offset"])] = d["reason"]
        details[(d["partition"], d["offset"])] = d["detail"][:300]
    disagree = {
        pos: (want.get(pos, "ACCEPTED"), got.get(pos, "ACCEPTED"))
        for pos in want.keys() | got.keys()
        if want.get(pos) != got.get(pos)
    }
    sample = [(pos, *verdicts, details.get(pos)) for pos, verdicts in disagree.items()][:20]
    assert disagree == {}, f"{len(disagree)} records differ (reference, job): {sample}"
    assert len(want) > RECORDS // 3  # the stream is mostly bad, as generated


def test_every_input_is_accounted_for_exactly_once(fuzzed, reference):
    _, counts, _, _ = fuzzed
    dead = sum(not isinstance(v, Accepted) for v in reference.values())
    accepted = len(reference) - dead
    assert len(reference) == counts["in"] == RECORDS
    assert counts["dead_lettered"] == dead
    duplicates = counts["in"] - counts["accepted"] - counts["late"] - counts["dead_lettered"]
    assert duplicates == accepted - counts["accepted"] - counts["late"] > 0


def test_every_accepted_id_is_stored_once_as_sent(fuzzed, reference):
    s = fuzzed[0]
    sent: dict[str, set[tuple]] = defaultdict(set)
    for v in reference.values():
        if isinstance(v, Accepted):
            props = json.dumps(v.properties, sort_keys=True)
            sent[v.event_id].add((v.customer_id, v.event_name, v.value, props))
    rows = s.query(
        "SELECT event_id, customer_id, event_name, value, properties FROM {db}.events FINAL"
    )
    late = {r[0] for r in s.query("SELECT event_id FROM {db}.late_events FINAL")}
    stored = {r[0] for r in rows}
    assert len(rows) == len(stored)
    assert set(sent) == stored | late, "accepted ids missing from events and late_events"
    for event_id, cust, name, value, props in rows:
        value = None if value is None else Decimal(value)
        got = (cust, name, value, json.dumps(json.loads(props), sort_keys=True))
        assert got in sent[event_id], (event_id, got, sent[event_id])
    assert s.topic_records(s.settings.events_topic + "-accepted-load-dlq", quiet_s=2) == []
