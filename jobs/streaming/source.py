"""Stage 1: the Kafka source, decoded inside it, with the watermark on validated event time.

The `meterflow-avro` format (java/: EventFormatFactory) decodes each record value into the
columns below and never fails on bad bytes; `decode_status` says why a record did not decode.
The watermark is declared here, on `ts`: the event time of records that decoded and whose
time is within the bounds around the Kafka record time, the epoch for every other record, so a
record with a bogus timestamp never moves it. (A record dead-lettered later, for its quantity,
has a valid time and counts for the watermark.) Declared in the source, the watermark is
per Kafka partition, and idle partitions do not hold it back.
"""

from __future__ import annotations

from jobs.streaming.options import JobOptions
from jobs.streaming.sql import interval, kafka_options, literal
from meterflow.decoding import Limits
from meterflow.events import schema_text
from meterflow.settings import Settings

# The format's columns (EventDeserializer), then Kafka's own.
DECODED_COLUMNS = (
    ("payload", "BYTES"),
    ("decode_status", "STRING"),
    ("decode_detail", "STRING"),
    ("schema_id", "INT"),
    ("event_id", "STRING"),
    ("event_name", "STRING"),
    ("customer_id", "STRING"),
    ("ts_ms", "BIGINT"),
    ("event_value", "DECIMAL(38, 12)"),
    ("properties", "MAP<STRING, STRING>"),
    ("source", "STRING"),
)
KAFKA_COLUMNS = (
    ("kafka_topic", "STRING METADATA FROM 'topic' VIRTUAL"),
    ("kafka_partition", "INT METADATA FROM 'partition' VIRTUAL"),
    ("kafka_offset", "BIGINT METADATA FROM 'offset' VIRTUAL"),
    ("record_ts", "TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL"),
)


def epoch_ms(ts: str) -> str:
    """Epoch milliseconds of a TIMESTAMP_LTZ(3) column (the session zone is UTC). Whole minutes
    first: TIMESTAMPDIFF returns INT, which would overflow in 2038 counted in seconds."""
    return (
        f"CAST(TIMESTAMPDIFF(MINUTE, TO_TIMESTAMP_LTZ(0, 3), {ts}) AS BIGINT) * 60000 "
        f"+ EXTRACT(SECOND FROM {ts}) * 1000 + EXTRACT(MILLISECOND FROM {ts})"
    )


def event_time_sql(limits: Limits) -> str:
    """The validated event time (the time rules of validation.status_sql), else the epoch."""
    rts = epoch_ms("record_ts")
    valid = (
        f"decode_status = 'OK' AND ts_ms <= {rts} + {limits.max_future_skew_ms} "
        f"AND ts_ms >= {rts} - {limits.max_age_ms}"
    )
    return (
        f"CAST(CASE WHEN {valid} THEN TO_TIMESTAMP_LTZ(ts_ms, 3) ELSE TO_TIMESTAMP_LTZ(0, 3) END "
        "AS TIMESTAMP_LTZ(3))"
    )


def source_ddl(settings: Settings, opts: JobOptions) -> str:
    startup = "'scan.startup.mode' = 'group-offsets',"
    bounded = "'scan.bounded.mode' = 'latest-offset'," if opts.bounded else ""
    if opts.replay is not None:
        # a replay reads the records whose Kafka timestamps fall in [from, to), then stops
        lo, hi = opts.replay
        startup = f"'scan.startup.mode' = 'timestamp', 'scan.startup.timestamp-millis' = '{lo}',"
        bounded = f"'scan.bounded.mode' = 'timestamp', 'scan.bounded.timestamp-millis' = '{hi}',"
    columns = ",\n        ".join(
        f"`{name}` {spec}" for name, spec in (*DECODED_COLUMNS, *KAFKA_COLUMNS)
    )
    return f"""
    CREATE TEMPORARY TABLE kafka_records (
        {columns},
        record_ts_ms AS {epoch_ms("record_ts")},
        ts AS {event_time_sql(opts.limits)},
        pt AS PROCTIME(),
        WATERMARK FOR ts AS ts - {interval(opts.out_of_orderness_s)}
    ) WITH (
        'connector' = 'kafka',
        'topic' = {literal(settings.events_topic)},
        {kafka_options(settings, "job")},
        'properties.group.id' = {literal(opts.group_id)},
        'properties.auto.offset.reset' = 'earliest',
        'properties.isolation.level' = 'read_committed',
        {startup}
        {bounded}
        'value.format' = 'meterflow-avro',
        'value.meterflow-avro.registry-url' = {literal(settings.registry_url)},
        'value.meterflow-avro.reader-schema' = {literal(schema_text(1))},
        'value.meterflow-avro.max-record-bytes' = '{opts.limits.max_record_bytes}'
    )"""
