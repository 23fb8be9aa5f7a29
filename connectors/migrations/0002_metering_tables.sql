-- The metering job's tables. Replaces the walking skeleton's usage_windows, whose key had no
-- dimensions (nothing outside the skeleton read it).
DROP TABLE IF EXISTS {db}.usage_windows;

-- One row per (customer, meter, meter version, dimensions, window); revision = the window's
-- event count, which grows with every late-but-allowed re-emission, so FINAL returns the newest.
CREATE TABLE IF NOT EXISTS {db}.usage_windows
(
    customer_id   String,
    meter         String,
    meter_version UInt32,
    dimensions    String,
    window_start  DateTime,
    window_end    DateTime,
    event_count   UInt64,
    quantity      Decimal(38, 12),
    revision      UInt64,
    written_at    DateTime
)
ENGINE = ReplacingMergeTree(revision)
PARTITION BY toYYYYMM(window_start)
ORDER BY (customer_id, meter, meter_version, dimensions, window_start);

-- Every accepted (deduplicated, on-time) event once: audit, replay and the billing recompute.
CREATE TABLE IF NOT EXISTS {db}.events
(
    customer_id     String,
    event_id        String,
    event_name      String,
    timestamp_ms    Int64,
    event_time      DateTime MATERIALIZED toDateTime(intDiv(timestamp_ms, 1000)),
    value           Nullable(Decimal(38, 12)),
    properties      String,
    source          String,
    schema_id       UInt32,
    kafka_topic     String,
    kafka_partition UInt32,
    kafka_offset    UInt64,
    ingested_at     DateTime
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (customer_id, event_id);

-- Events that arrived beyond allowed lateness: not in any window, still billed at close.
CREATE TABLE IF NOT EXISTS {db}.late_events
(
    customer_id     String,
    event_id        String,
    event_name      String,
    timestamp_ms    Int64,
    event_time      DateTime MATERIALIZED toDateTime(intDiv(timestamp_ms, 1000)),
    value           Nullable(Decimal(38, 12)),
    properties      String,
    source          String,
    schema_id       UInt32,
    kafka_topic     String,
    kafka_partition UInt32,
    kafka_offset    UInt64,
    watermark_ms    Int64,
    ingested_at     DateTime
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (customer_id, event_id);
