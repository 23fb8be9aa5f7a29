-- Usage per (customer, meter, window). A window can be written more than once (a restart replays
-- it; later issues re-emit it with a higher revision for late data): ReplacingMergeTree keeps one
-- row per sorting key, the highest revision, and readers use FINAL.
CREATE TABLE IF NOT EXISTS {db}.usage_windows
(
    customer_id   String,
    meter         String,
    meter_version UInt32,
    window_start  DateTime,
    window_end    DateTime,
    event_count   UInt64,
    value_sum     Decimal(38, 12),
    revision      UInt64,
    written_at    DateTime
)
ENGINE = ReplacingMergeTree(revision)
PARTITION BY toYYYYMM(window_start)
ORDER BY (customer_id, meter, meter_version, window_start)
