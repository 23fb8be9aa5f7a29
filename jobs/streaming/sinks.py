"""Stage 5: every output goes to Kafka in exactly-once transactions; `meterflow load` moves the
tables' topics into ClickHouse (commit after insert, idempotent by the tables' keys), so
ClickHouse being down never stops the job (decision 0010).

Each sink's value columns are named as the ClickHouse columns they load into; the loader passes
the JSON rows through (connectors/loader.py holds the row contract).
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors.kafka_admin import DLQ_MAX_MESSAGE_BYTES
from jobs.streaming.options import JobOptions
from jobs.streaming.sql import kafka_options, literal
from meterflow.settings import REPO_ROOT, Settings

EVENT_COLUMNS = (
    "customer_id STRING, event_id STRING, event_name STRING, timestamp_ms BIGINT, "
    "`value` DECIMAL(38, 12), properties STRING, source STRING, schema_id INT, "
    "kafka_topic STRING, kafka_partition INT, kafka_offset BIGINT"
)
# the validated columns an event row is made of, in EVENT_COLUMNS order
EVENT_SELECT = (
    "customer_id, event_id, event_name, ts_ms, event_value, properties_json, "
    "COALESCE(source, ''), schema_id, kafka_topic, kafka_partition, kafka_offset"
)


KEY = "customer_id"
# the period aggregation's group keys (rating.period_partials_sql)
PERIOD_KEY = (
    "customer_id", "subscription_id", "period_start", "period_end", "meter", "meter_version",
    "plan", "price_version", "currency",
)  # fmt: skip
# An upsert sink writes the newest row of each key once per flush (and at each checkpoint):
# a period rewritten by many window firings costs one message per interval, not one per firing.
UPSERT_FLUSH = ("10000", "1s")


@dataclass(frozen=True)
class Sink:
    name: str
    topic: str
    columns: str
    value_format: str  # json | debezium-json | raw | avro-confluent
    key: str | None = None  # a column that also becomes the Kafka key (raw)
    # an upsert sink (upsert-kafka): its key columns; only the newest row per key is written
    # per flush, and no retraction at all
    primary_key: tuple[str, ...] = ()
    # the producer's request limit when a record can exceed Kafka's default 1 MiB
    max_request_bytes: int | None = None


def sinks(settings: Settings) -> list[Sink]:
    return [
        Sink(
            "dlq_sink",
            settings.dlq_topic,
            "reason STRING, detail STRING, payload BYTES, `topic` STRING, `partition` INT, "
            "`offset` BIGINT, record_ts_ms BIGINT",
            "json",
            max_request_bytes=DLQ_MAX_MESSAGE_BYTES,
        ),
        Sink("accepted_sink", settings.accepted_topic, EVENT_COLUMNS, "json", "customer_id"),
        Sink(
            "late_events_sink",
            settings.late_events_topic,
            f"{EVENT_COLUMNS}, watermark_ms BIGINT",
            "json",
            "customer_id",
        ),
        Sink(
            "late_sink",
            settings.late_topic,
            "customer_id STRING, payload BYTES",
            "raw",
            "customer_id",
        ),
        Sink(
            "windows_sink",
            settings.windows_topic,
            "customer_id STRING, meter STRING, meter_version INT, dimensions STRING, "
            "window_start STRING, window_end STRING, event_count BIGINT, "
            "quantity DECIMAL(38, 12), revision BIGINT",
            "debezium-json",
            "customer_id",
        ),
        Sink(
            "alerts_sink",
            settings.alerts_topic,
            # NOT NULL as in the record schema, which the format writes with (v1.avsc)
            "alert_id STRING NOT NULL, customer_id STRING NOT NULL, "
            "subscription_id STRING NOT NULL, meter STRING NOT NULL, "
            "period_start TIMESTAMP(3) NOT NULL, period_end TIMESTAMP(3) NOT NULL, "
            "threshold_pct INT NOT NULL, quantity STRING NOT NULL, `limit` STRING NOT NULL, "
            "hard_cap BOOLEAN NOT NULL, window_start TIMESTAMP(3) NOT NULL",
            "avro-confluent",
            "customer_id",
        ),
        Sink(
            "alert_rows_sink",
            settings.alert_rows_topic,
            "alert_id STRING, customer_id STRING, subscription_id STRING, meter STRING, "
            "period_start STRING, period_end STRING, threshold_pct INT, "
            "quantity DECIMAL(38, 12), quota DECIMAL(38, 12), hard_cap INT, window_start STRING",
            "json",
            "customer_id",
        ),
        Sink(
            "period_cost_sink",
            settings.period_cost_topic,
            "customer_id STRING, subscription_id STRING, period_start BIGINT, "
            "period_end BIGINT, meter STRING, meter_version INT, plan STRING, "
            "price_version INT, currency STRING, period_quantity DECIMAL(38, 12), "
            "period_amount DECIMAL(38, 20), revision BIGINT",
            "json",
            primary_key=PERIOD_KEY,
        ),
    ]


def sink_ddl(sink: Sink, settings: Settings, opts: JobOptions) -> str:
    options = [
        f"'connector' = '{'upsert-kafka' if sink.primary_key else 'kafka'}'",
        f"'topic' = {literal(sink.topic)}",
        kafka_options(settings, "job"),
        "'sink.delivery-guarantee' = 'exactly-once'",
        f"'sink.transactional-id-prefix' = {literal(f'{opts.group_id}-{sink.name}')}",
        # the broker's default maximum; a transaction spans one checkpoint interval
        "'properties.transaction.timeout.ms' = '900000'",
        f"'value.format' = '{sink.value_format}'",
    ]
    if sink.max_request_bytes:
        options.append(f"'properties.max.request.size' = '{sink.max_request_bytes}'")
    if sink.value_format == "avro-confluent":
        # Confluent-framed Avro with the repo's alert schema, registered under <topic>-value
        schema = (REPO_ROOT / "schemas" / "alert" / "v1.avsc").read_text()
        options += [
            f"'value.avro-confluent.url' = {literal(settings.registry_url)}",
            f"'value.avro-confluent.schema' = {literal(schema)}",
        ]
    if sink.value_format in ("json", "debezium-json"):
        # exact decimals as plain JSON numbers (no exponent), which ClickHouse parses as written
        options.append(f"'value.{sink.value_format}.encode.decimal-as-plain-number' = 'true'")
    if sink.key:
        # keyed by customer (Kafka partitions by customer); a raw value is the payload alone
        include = "EXCEPT_KEY" if sink.value_format == "raw" else "ALL"
        options += [
            "'key.format' = 'raw'",
            f"'key.fields' = '{sink.key}'",
            f"'value.fields-include' = '{include}'",
        ]
    columns = sink.columns
    if sink.primary_key:
        rows, interval = UPSERT_FLUSH
        options += [
            "'key.format' = 'json'",
            "'key.json.encode.decimal-as-plain-number' = 'true'",
            "'value.fields-include' = 'ALL'",
            f"'sink.buffer-flush.max-rows' = '{rows}'",
            f"'sink.buffer-flush.interval' = '{interval}'",
        ]
        columns += f", PRIMARY KEY ({', '.join(sink.primary_key)}) NOT ENFORCED"
    return (
        f"CREATE TEMPORARY TABLE {sink.name} ({columns}) WITH (\n    "
        + ",\n    ".join(options)
        + "\n)"
    )
