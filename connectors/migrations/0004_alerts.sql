-- Usage alerts, one row per (customer, meter, period, threshold): a replayed firing rewrites the
-- same key, so an alert is stored once however often the job restarts.
CREATE TABLE IF NOT EXISTS {db}.alerts
(
    alert_id        String,
    customer_id     String,
    subscription_id String,
    meter           String,
    period_start    DateTime,
    period_end      DateTime,
    threshold_pct   UInt8,
    quantity        Decimal(38, 12),
    quota           Decimal(38, 12),
    hard_cap        UInt8,
    window_start    DateTime,
    written_at      DateTime
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(period_start)
ORDER BY (customer_id, meter, period_start, threshold_pct);
