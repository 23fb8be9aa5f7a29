-- The streaming job's period cost (jobs/streaming/rating.py): one row per (customer, meter,
-- meter version, period), rewritten on every window firing with the period's quantity and
-- price so far; the newest (highest revision = the period's event count) wins under FINAL.
-- period_amount is NULL when the quantity is outside the SQL rating's exact domain: that line is
-- rated by the close alone.
CREATE TABLE IF NOT EXISTS {db}.period_cost
(
    customer_id     String,
    subscription_id String,
    period_start    DateTime,
    period_end      DateTime,
    meter           String,
    meter_version   UInt32,
    plan            String,
    price_version   UInt32,
    currency        String,
    period_quantity Decimal(38, 12),
    period_amount   Nullable(Decimal(38, 20)),
    revision        UInt64,
    written_at      DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(revision)
PARTITION BY toYYYYMM(period_start)
ORDER BY (customer_id, meter, meter_version, period_start);
