"""`meterflow load` against the real Kafka and ClickHouse: transactions, a ClickHouse outage,
kill -9, malformed rows and the changelog route (connectors/loader.py).

The outage test stops and restarts the stack's ClickHouse through `infra/stack.sh stop|start
clickhouse` (same environment as the tests, so the same stack instance).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from connectors.kafka_admin import delete_topics, ensure_topics
from connectors.loader import Loader, LoaderConfig, routes
from meterflow.settings import REPO_ROOT, Settings
from tests.integration.conftest import Scratch, free_port, kill_job

T0_MS = 1_767_323_045_000  # 2026-01-02 03:04:05 UTC


def event_row(i: int, prefix: str = "e") -> dict:
    """A row of the `events` contract (connectors.loader.ROW_CONTRACT)."""
    return {
        "customer_id": f"cust-{i % 5}",
        "event_id": f"{prefix}-{i}",
        "event_name": "api_call",
        "timestamp_ms": T0_MS + i,
        "value": None if i % 3 == 0 else round(i * 0.25, 2),
        "properties": json.dumps({"region": "eu", "i": str(i)}),
        "source": "test",
        "schema_id": 1,
        "kafka_topic": "usage-events",
        "kafka_partition": i % 2,
        "kafka_offset": i,
    }


def encode(row: dict) -> bytes:
    return json.dumps(row, separators=(",", ":")).encode()


def txn_producer(settings: Settings, name: str) -> Producer:
    p = Producer({**settings.kafka_config("operator"), "transactional.id": name, "linger.ms": 5})
    p.init_transactions(30)
    return p


def produce_txn(p: Producer, topic: str, values: list[bytes], commit: bool = True) -> None:
    p.begin_transaction()
    for i, v in enumerate(values):
        p.produce(topic, v, key=b"%d" % i)
    if commit:
        p.commit_transaction(30)
    else:
        p.flush(30)  # on the broker, then aborted: read_committed consumers must skip them
        p.abort_transaction(30)


@pytest.fixture
def loading(scratch: Scratch) -> Iterator[Scratch]:
    """The scratch topic's loader topics (routes and load-dlqs), deleted afterwards."""
    topics = [t for r in routes(scratch.settings) for t in (r.topic, r.dlq_topic)]
    ensure_topics(scratch.settings, topics)
    yield scratch
    if not os.environ.get("METERFLOW_KEEP_SCRATCH"):
        delete_topics(scratch.settings, topics)


def load_once(scratch: Scratch, group: str) -> CollectorRegistry:
    """One `--once` run in this process; returns its metrics."""
    registry = CollectorRegistry()
    config = LoaderConfig(group_id=group, once=True, idle_timeout_s=5.0)
    assert Loader(scratch.settings, config, registry).run() == 0
    return registry


def stored_events(scratch: Scratch) -> list[tuple]:
    return scratch.query(
        "SELECT event_id, customer_id, timestamp_ms, toString(value), properties, kafka_offset "
        "FROM {db}.events FINAL ORDER BY event_id"
    )


def expected(rows: list[dict]) -> list[tuple]:
    def value(v: float | None) -> str | None:
        return None if v is None else f"{v:.12f}"

    out = [
        (
            r["event_id"],
            r["customer_id"],
            r["timestamp_ms"],
            value(r["value"]),
            r["properties"],
            r["kafka_offset"],
        )
        for r in rows
    ]
    return sorted(out)


def committed(settings: Settings, group: str, topic: str) -> dict[int, int]:
    c = Consumer({**settings.kafka_config("operator"), "group.id": group})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        tps = c.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        return {tp.partition: max(tp.offset, 0) for tp in tps}  # nothing committed: 0
    finally:
        c.close()


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    c = Consumer({**settings.kafka_config("operator"), "group.id": "ends"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        c.close()


# ----------------------------------------------------------------------------- (1) transactions


def test_committed_transactions_load_exactly_and_aborted_ones_never(loading):
    s = loading.settings
    committed_rows = [event_row(i) for i in range(300)]
    aborted_rows = [event_row(i, prefix="aborted") for i in range(120)]
    p = txn_producer(s, f"it-{loading.run_id}")
    produce_txn(p, s.accepted_topic, [encode(r) for r in committed_rows[:150]])
    produce_txn(p, s.accepted_topic, [encode(r) for r in aborted_rows], commit=False)
    produce_txn(p, s.accepted_topic, [encode(r) for r in committed_rows[150:]])

    group = f"meterflow-loader-it-{loading.run_id}"
    metrics = load_once(loading, group)
    assert stored_events(loading) == expected(committed_rows)
    assert (
        metrics.get_sample_value("meterflow_loader_rows_inserted_total", {"table": "events"}) == 300
    )
    assert loading.query("SELECT min(ingested_at) > toDateTime(0) FROM {db}.events")[0][0] == 1
    # offsets committed up to the end (past the transaction markers): a second run loads nothing
    assert committed(s, group, s.accepted_topic) == end_offsets(s, s.accepted_topic)
    again = load_once(loading, group)
    assert again.get_sample_value("meterflow_loader_rows_inserted_total", {"table": "events"}) == 0
    assert loading.query("SELECT count() FROM {db}.events")[0][0] == 300


# ----------------------------------------------------------------------------- subprocess helpers


@dataclass
class LoaderProc:
    proc: subprocess.Popen
    port: int

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        for fam in text_string_to_metric_families(text):
            for sample in fam.samples:
                if sample.name == name and (labels or {}).items() <= sample.labels.items():
                    return sample.value
        return None


def start_loader(scratch: Scratch, group: str) -> LoaderProc:
    port = free_port()
    log = open(scratch.checkpoints / f"loader-{time.time_ns()}.log", "w")  # noqa: SIM115
    cmd = [sys.executable, "-m", "meterflow.cli", "load", "--group-id", group]
    proc = subprocess.Popen(
        [*cmd, "--metrics-port", str(port), "--max-wait", "0.3", "--max-rows", "2000"],
        cwd=REPO_ROOT,
        env=scratch.env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # kill -9 of its process group
    )
    return LoaderProc(proc, port)


class Traffic:
    """A producer thread: committed transactions of `per_txn` events, `pause_s` apart, until
    `finish()`; `rows` are the events it produced."""

    def __init__(self, settings: Settings, name: str, per_txn: int, pause_s: float) -> None:
        self.rows: list[dict] = []
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._args = (settings, name, per_txn, pause_s)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        settings, name, per_txn, pause_s = self._args
        try:
            p = txn_producer(settings, name)
            while not self._done.is_set():
                chunk = [event_row(len(self.rows) + i) for i in range(per_txn)]
                produce_txn(p, settings.accepted_topic, [encode(r) for r in chunk])
                self.rows += chunk
                time.sleep(pause_s)
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self) -> list[dict]:
        self._done.set()
        self.thread.join(60)
        assert self.error is None, self.error
        return self.rows


def count_events(scratch: Scratch) -> int:
    with contextlib.suppress(Exception):  # ClickHouse may be restarting
        return scratch.query("SELECT count() FROM {db}.events FINAL")[0][0]
    return -1


def stack(*args: str) -> None:
    subprocess.run(["bash", "infra/stack.sh", *args], cwd=REPO_ROOT, check=True, timeout=120)


def stop_loader(loader: LoaderProc) -> None:
    if loader.proc.poll() is None:
        loader.proc.send_signal(signal.SIGTERM)
        assert loader.proc.wait(30) == 0, "the loader did not stop cleanly on SIGTERM"


# ----------------------------------------------------------------------------- (2) outage


def test_clickhouse_outage_waits_without_committing_then_catches_up(loading):
    s = loading.settings
    group = f"meterflow-loader-it-{loading.run_id}"
    loader = start_loader(loading, group)
    traffic = Traffic(s, f"it-{loading.run_id}", per_txn=200, pause_s=0.2)
    restarted = False
    try:
        loading.wait_for("rows before the outage", lambda: count_events(loading) > 1000)
        stack("stop", "clickhouse")
        before_total = len(traffic.rows)
        time.sleep(2)  # an insert in flight when it stopped has failed by now
        before = committed(s, group, s.accepted_topic)
        time.sleep(6)  # the producer keeps producing meanwhile
        assert committed(s, group, s.accepted_topic) == before, "offsets moved during the outage"
        assert loader.metric("meterflow_loader_clickhouse_unavailable") == 1
        assert (loader.metric("meterflow_loader_insert_retries_total") or 0) > 0
        lag = loader.metric("meterflow_loader_lag_records", {"topic": s.accepted_topic})
        assert lag is not None and lag > 0
        assert loader.proc.poll() is None, "the loader exited during the outage"
        stack("start", "clickhouse")
        restarted = True
        time.sleep(3)  # traffic goes on while the loader catches up
        rows = traffic.finish()
        assert len(rows) > before_total + 2000, "too little traffic during the outage"
        total = len(rows)
        loading.wait_for(f"{total} rows", lambda: count_events(loading) == total, timeout=120)
        assert stored_events(loading) == expected(rows)
        assert loader.metric("meterflow_loader_clickhouse_unavailable") == 0
        loading.wait_for(
            "offsets committed to the end",
            lambda: committed(s, group, s.accepted_topic) == end_offsets(s, s.accepted_topic),
            timeout=30,
        )
        stop_loader(loader)
    finally:
        traffic.finish()
        if not restarted:
            stack("start", "clickhouse")
        if loader.proc.poll() is None:
            kill_job(loader.proc)


# ----------------------------------------------------------------------------- (3) kill -9


def test_kill_9_mid_stream_and_restart_loads_every_row_exactly_once(loading):
    s = loading.settings
    group = f"meterflow-loader-it-{loading.run_id}"
    loader = start_loader(loading, group)
    traffic = Traffic(s, f"it-{loading.run_id}", per_txn=250, pause_s=0.1)
    try:
        loading.wait_for("rows before the kill", lambda: count_events(loading) > 2000)
        kill_job(loader.proc)  # SIGKILL: no commit, no close
        time.sleep(1)
        loader = start_loader(loading, group)
        time.sleep(3)  # traffic goes on while the new loader starts
        rows = traffic.finish()
        total = len(rows)
        loading.wait_for(f"{total} rows", lambda: count_events(loading) == total, timeout=120)
        assert stored_events(loading) == expected(rows)
        stop_loader(loader)
    finally:
        traffic.finish()
        if loader.proc.poll() is None:
            kill_job(loader.proc)


# ----------------------------------------------------------------------------- (4) bad rows


def test_malformed_rows_are_dead_lettered_and_the_rest_loaded(loading):
    s = loading.settings
    good = [event_row(i) for i in range(40)]
    bad = {
        # ClickHouse names the row: a quoted Decimal
        "quoted decimal": encode({**event_row(100, "bad"), "value": "1.5"}),
        # ClickHouse does not name it: bisected
        "too many decimals": b'{"customer_id":"c","event_id":"bad-101","event_name":"x",'
        b'"timestamp_ms":1,"value":0.1234567890123,"properties":"{}","source":"s",'
        b'"schema_id":1,"kafka_topic":"t","kafka_partition":0,"kafka_offset":0}',
        "unknown column": encode({**event_row(102, "bad"), "surprise": 1}),
        # never sent to ClickHouse
        "not an object": b"[1, 2, 3]",
    }
    values = [encode(r) for r in good[:10]]
    values += list(bad.values())[:2] + [encode(r) for r in good[10:30]]
    values += list(bad.values())[2:] + [encode(r) for r in good[30:]]
    p = Producer({**s.kafka_config("operator")})
    for v in values:
        p.produce(s.accepted_topic, v, partition=0)
    p.flush(30)

    metrics = load_once(loading, f"meterflow-loader-it-{loading.run_id}")
    assert stored_events(loading) == expected(good)
    dlq_topic = next(r.dlq_topic for r in routes(s) if r.table == "events")
    letters = [json.loads(m.value()) for m in loading.topic_records(dlq_topic)]
    by_value = {d["value"].encode(): d for d in letters}
    assert set(by_value) == set(bad.values())
    for why, value in bad.items():
        d = by_value[value]
        assert d["source_topic"] == s.accepted_topic and d["partition"] == 0
        assert d["offset"] == values.index(value)
        assert d["table"] == "events" and d["error"], why
    assert "JSON object" in by_value[bad["not an object"]]["error"]
    assert "Code: 117" in by_value[bad["unknown column"]]["error"]
    dead = metrics.get_sample_value("meterflow_loader_dead_lettered_total", {"table": "events"})
    assert dead == len(bad)


# ----------------------------------------------------------------------------- (5) changelog


def window(customer: str, minute: int, revision: int, quantity: str) -> dict:
    return {
        "customer_id": customer,
        "meter": "api_calls",
        "meter_version": 1,
        "dimensions": '{"region":"eu"}',
        "window_start": f"2026-01-02 03:{minute:02d}:00",
        "window_end": f"2026-01-02 03:{minute + 1:02d}:00",
        "event_count": revision,
        "quantity": quantity,  # spliced unquoted below: a JSON number
        "revision": revision,
    }


def window_json(r: dict | None) -> str:
    """A window row as JSON, its Decimal as a plain (unquoted) JSON number."""
    if r is None:
        return "null"
    text = json.dumps({**r, "quantity": "@Q@"}, separators=(",", ":"))
    return text.replace('"@Q@"', r["quantity"])


def change(op: str, before: dict | None, after: dict | None) -> bytes:
    """As Flink's debezium-json writes it."""
    return f'{{"before":{window_json(before)},"after":{window_json(after)},"op":"{op}"}}'.encode()


def test_the_changelog_route_keeps_the_newest_revision(loading):
    s = loading.settings
    a1, a2, a3 = (window("cust-a", 4, r, q) for r, q in ((1, "1.5"), (2, "3.25"), (3, "1E+3")))
    b1 = window("cust-b", 4, 1, "0.000000000001")
    values = [
        change("c", None, a1),
        change("c", None, b1),
        change("d", a1, None),  # retraction of revision 1, then its replacement
        change("c", None, a2),
        # a Debezium update in another key order (parsed, not sliced) to revision 3
        f'{{"op": "u", "before": {window_json(a2)}, "after": {window_json(a3)}}}'.encode(),
    ]
    p = txn_producer(s, f"it-{loading.run_id}")
    produce_txn(p, s.windows_topic, values)

    metrics = load_once(loading, f"meterflow-loader-it-{loading.run_id}")
    got = loading.query(
        "SELECT customer_id, window_start, revision, event_count, toString(quantity) "
        "FROM {db}.usage_windows FINAL ORDER BY customer_id"
    )
    assert [(r[0], r[1].strftime("%H:%M"), *r[2:]) for r in got] == [
        ("cust-a", "03:04", 3, 3, "1000.000000000000"),
        ("cust-b", "03:04", 1, 1, "0.000000000001"),
    ]
    labels = {"table": "usage_windows"}
    assert metrics.get_sample_value("meterflow_loader_rows_inserted_total", labels) == 4
    assert metrics.get_sample_value("meterflow_loader_rows_skipped_total", labels) == 1
    assert metrics.get_sample_value("meterflow_loader_dead_lettered_total", labels) == 0
