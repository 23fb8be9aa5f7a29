"""The JVM functions (java/, decision 0009) inside a real PyFlink mini-cluster, against the shared
vectors: registered with CREATE TEMPORARY FUNCTION ... LANGUAGE JAVA from build/flink-jars, fed
VALUES tables (quantity, JSON) and a Kafka topic with schemas in the real registry (decode)."""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema
from py4j.protocol import Py4JJavaError
from pyflink.common import Configuration
from pyflink.table import DataTypes, EnvironmentSettings, TableEnvironment

from connectors.kafka_admin import delete_topics, ensure_topics
from connectors.registry import client as registry_client
from jobs.streaming.environment import JARS_DIR, LOOPBACK
from jobs.streaming.sql import kafka_options
from meterflow.events import schema_text
from meterflow.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.integration

VECTORS = REPO_ROOT / "tests" / "vectors"
FUNCTIONS = {
    "DecodeConfluentAvro": "dev.meterflow.flink.DecodeConfluentAvro",
    "MeasureQuantity": "dev.meterflow.flink.MeasureQuantity",
    "JsonObject": "dev.meterflow.flink.JsonObject",
    "DivideHalfEven": "dev.meterflow.flink.DivideHalfEven",
}
DEFAULT_MAX_BYTES = 65536
UNKNOWN_ID = 2_000_000_000  # stands for the vectors' unknown id: no local registry has it


def load(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (VECTORS / name).read_text().splitlines() if line]


def map_option(entries: dict[str, str]) -> str:
    """A Flink map option (k:v,k:v). Quoting nests: the list is split on commas first, so each
    whole k:v entry is one quoted token ('...'), and inside it key and value are quoted ("...");
    a quote inside a quoted token is doubled."""

    def q(text: str, mark: str) -> str:
        return mark + text.replace(mark, mark * 2) + mark

    return ",".join(q(f"{q(k, chr(34))}:{q(v, chr(34))}", "'") for k, v in entries.items())


def table_env(registry_url: str, retry_s: float = 60) -> TableEnvironment:
    jars = sorted(JARS_DIR.glob("*.jar"))
    assert any(j.name.startswith("meterflow-flink-functions") for j in jars), "run make setup"
    params = {
        "meterflow.registry.url": registry_url,
        "meterflow.reader-schema": schema_text(1),
        "meterflow.registry.retry-seconds": str(retry_s),
    }
    conf = Configuration()
    for k, v in {
        "pipeline.jars": ";".join(j.as_uri() for j in jars),
        "pipeline.global-job-parameters": map_option(params),
        "parallelism.default": "1",
        "python.executable": sys.executable,
        "table.local-time-zone": "UTC",
        "classloader.check-leaked-classloader": "false",
        # a failure must fail the test's job, not restart it
        "restart-strategy.type": "none",
        **LOOPBACK,
    }.items():
        conf.set_string(k, v)
    t_env = TableEnvironment.create(
        EnvironmentSettings.new_instance().in_streaming_mode().with_configuration(conf).build()
    )
    for name, cls in FUNCTIONS.items():
        t_env.execute_sql(f"CREATE TEMPORARY FUNCTION {name} AS '{cls}' LANGUAGE JAVA")
    return t_env


@pytest.fixture(scope="module")
def t_env(base_settings: Settings) -> TableEnvironment:
    return table_env(base_settings.registry_url)


def collect(t_env: TableEnvironment, sql: str) -> list[Any]:
    with t_env.execute_sql(sql).collect() as results:
        return sorted(results, key=lambda r: r[0])


def same_decimal(got: Decimal | None, want: str | None) -> bool:
    return got is None if want is None else got is not None and got == Decimal(want)


def test_measure_quantity_matches_the_vectors(t_env: TableEnvironment) -> None:
    vectors = load("quantity.jsonl")
    rows = [
        (i, v["raw"], v["allow_negative"], v["has_multiplier"], v["factor"])
        for i, v in enumerate(vectors)
    ]
    schema = DataTypes.ROW(
        [
            DataTypes.FIELD("i", DataTypes.INT()),
            DataTypes.FIELD("txt", DataTypes.STRING()),
            DataTypes.FIELD("neg", DataTypes.BOOLEAN()),
            DataTypes.FIELD("mult", DataTypes.BOOLEAN()),
            DataTypes.FIELD("factor", DataTypes.STRING()),
        ]
    )
    t_env.create_temporary_view("quantities", t_env.from_elements(rows, schema))
    got = collect(
        t_env,
        "SELECT i, q.reason, q.quantity FROM "
        "(SELECT i, MeasureQuantity(txt, neg, mult, factor) AS q FROM quantities)",
    )
    assert len(got) == len(vectors)
    bad = []
    for (i, reason, quantity), v in zip(got, vectors, strict=True):
        want = v.get("jvm") or v["expected"]
        if reason != want["reason"] or not same_decimal(quantity, want["quantity"]):
            bad.append((i, v["raw"], v["factor"], reason, quantity, want))
    assert not bad


def test_json_object_matches_the_vectors(t_env: TableEnvironment) -> None:
    vectors = load("json_object.jsonl")
    maps = [(i, v["map"]) for i, v in enumerate(vectors) if "map" in v]
    schema = DataTypes.ROW(
        [
            DataTypes.FIELD("i", DataTypes.INT()),
            DataTypes.FIELD("m", DataTypes.MAP(DataTypes.STRING(), DataTypes.STRING())),
        ]
    )
    t_env.create_temporary_view("maps", t_env.from_elements(maps, schema))
    got = collect(t_env, "SELECT i, JsonObject(m) FROM maps")
    assert [(i, vectors[i]["json"]) for i, _ in maps] == [tuple(r) for r in got]

    for i, v in enumerate(vectors):
        if "pairs" not in v or not v["pairs"]:
            continue  # the empty case is the null/empty map above: SQL has no zero-arg call
        pairs = v["pairs"]
        fields = [DataTypes.FIELD("i", DataTypes.INT())] + [
            DataTypes.FIELD(f"a{j}", DataTypes.STRING()) for j in range(len(pairs))
        ]
        name = f"pairs_{i}"
        t_env.create_temporary_view(name, t_env.from_elements([(i, *pairs)], DataTypes.ROW(fields)))
        args = ", ".join(f"a{j}" for j in range(len(pairs)))
        assert [tuple(r) for r in collect(t_env, f"SELECT i, JsonObject({args}) FROM {name}")] == [
            (i, v["json"])
        ]


def test_divide_half_even_matches_the_vectors(t_env: TableEnvironment) -> None:
    vectors = load("divide.jsonl")
    rows = [(i, Decimal(v["sum"]), v["count"]) for i, v in enumerate(vectors)]
    schema = DataTypes.ROW(
        [
            DataTypes.FIELD("i", DataTypes.INT()),
            DataTypes.FIELD("s", DataTypes.DECIMAL(38, 12)),
            DataTypes.FIELD("n", DataTypes.BIGINT()),
        ]
    )
    t_env.create_temporary_view("sums", t_env.from_elements(rows, schema))
    got = collect(t_env, "SELECT i, DivideHalfEven(s, n) FROM sums")
    assert [(i, Decimal(v["avg"])) for i, v in enumerate(vectors)] == [tuple(r) for r in got]


@pytest.fixture
def decode_topic(base_settings: Settings) -> Iterator[tuple[Settings, str]]:
    topic = f"it-jvm-decode-{uuid.uuid4().hex[:10]}"
    settings = replace(base_settings, topic_partitions=1)  # one partition: offsets give order
    ensure_topics(settings, [topic])
    try:
        yield settings, topic
    finally:
        delete_topics(settings, [topic])


def register(settings: Settings, run: str, text: str) -> int:
    # a subject per distinct schema: the odd writer schemas need no compatibility with others
    subject = f"it-jvm-{run}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    return registry_client(settings).register_schema(subject, Schema(text, schema_type="AVRO"))


def test_decode_confluent_avro_matches_the_vectors_from_kafka(
    t_env: TableEnvironment, decode_topic: tuple[Settings, str]
) -> None:
    settings, topic = decode_topic
    run = topic.rsplit("-", 1)[1]
    vectors = [v for v in load("decode.jsonl") if v["max_record_bytes"] == DEFAULT_MAX_BYTES]
    real_ids: dict[str, int] = {}
    for v in vectors:
        for text in v["schemas"].values():
            if text not in real_ids:
                real_ids[text] = register(settings, run, text)

    producer = Producer({**settings.kafka_config("operator"), "message.max.bytes": 2**21})
    expected_ids: list[int | None] = []
    for v in vectors:
        payload = None if v["payload_hex"] is None else bytes.fromhex(v["payload_hex"])
        expected_ids.append(None)
        if payload is not None and len(payload) >= 5 and payload[0] == 0:
            (vid,) = struct.unpack(">I", payload[1:5])
            text = v["schemas"].get(str(vid))
            new_id = UNKNOWN_ID if text is None and vid < 2**31 else vid
            if text is not None:
                new_id = real_ids[text]
                expected_ids[-1] = new_id
            payload = payload[:1] + struct.pack(">I", new_id) + payload[5:]
        producer.produce(topic, value=payload)
    assert producer.flush(30) == 0

    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE decode_src (
            payload BYTES,
            `offset` BIGINT METADATA VIRTUAL
        ) WITH (
            'connector' = 'kafka',
            'topic' = '{topic}',
            {kafka_options(settings, "operator")},
            'properties.group.id' = 'it-jvm-{run}',
            'scan.startup.mode' = 'earliest-offset',
            'scan.bounded.mode' = 'latest-offset',
            'value.format' = 'raw'
        )""")
    got = collect(
        t_env,
        """SELECT off, d.status, d.schema_id, d.event_id, d.event_name, d.customer_id, d.ts_ms,
                  d.event_value, d.properties, JsonObject(d.properties), d.source
           FROM (SELECT `offset` AS off, DecodeConfluentAvro(payload) AS d FROM decode_src)""",
    )
    assert len(got) == len(vectors)
    bad = []
    for row, v, real_id in zip(got, vectors, expected_ids, strict=True):
        want = v.get("jvm") or v["expected"]
        status = row[1]
        if status != want["status"]:
            bad.append((v["name"], status, want["status"]))
            continue
        if status != "OK":
            continue
        fields = {
            "schema_id": row[2],
            "event_id": row[3],
            "event_name": row[4],
            "customer_id": row[5],
            "ts_ms": row[6],
            "properties": dict(row[8]),
            "properties_json": row[9],
            "source": row[10],
        }
        wanted = {k: want[k] for k in fields} | {"schema_id": real_id}
        if fields != wanted or not same_decimal(row[7], want["event_value"]):
            bad.append((v["name"], fields, row[7], wanted, want["event_value"]))
    assert not bad


def test_an_unreachable_registry_fails_the_job(tmp_path: Path) -> None:
    t_env = table_env("http://127.0.0.1:9/apis/ccompat/v7", retry_s=2)  # port 9: discard, closed
    record = bytes.fromhex(load("decode.jsonl")[0]["payload_hex"])
    schema = DataTypes.ROW([DataTypes.FIELD("payload", DataTypes.BYTES())])
    t_env.create_temporary_view("records", t_env.from_elements([(bytearray(record),)], schema))
    with pytest.raises(Py4JJavaError) as failed:
        collect(
            t_env, "SELECT d.status FROM (SELECT DecodeConfluentAvro(payload) AS d FROM records)"
        )
    assert "did not answer" in str(
        failed.value.java_exception.getCause()
    ) or "did not answer" in str(failed.value)
