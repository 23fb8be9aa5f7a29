-- Rating and the billing ledger. Amounts that are not yet rounded money (streamed telescoping
-- deltas) keep 18 places: prices have at most 6 and quantities 12, so every product is exact.

-- One row per rated window (its newest revision wins, like usage_windows): `amount` is the sum
-- of this window's telescoping deltas, so a period's rows sum to price(period quantity).
CREATE TABLE IF NOT EXISTS {db}.rated_usage
(
    customer_id     String,
    subscription_id String,
    period_start    DateTime,
    period_end      DateTime,
    meter           String,
    meter_version   UInt32,
    dimensions      String,
    window_start    DateTime,
    window_end      DateTime,
    plan            String,
    price_version   UInt32,
    currency        String,
    quantity        Decimal(38, 12),
    period_quantity Decimal(38, 12),
    amount          Decimal(38, 18),
    -- price(period quantity) and the period's event count as of this firing: the row with the
    -- greatest period_revision states the period's streamed amount on its own.
    period_amount   Decimal(38, 18),
    revision        UInt64,
    period_revision UInt64,
    written_at      DateTime
)
ENGINE = ReplacingMergeTree(revision)
PARTITION BY toYYYYMM(window_start)
ORDER BY (customer_id, meter, meter_version, dimensions, window_start);

-- Invoice headers. Written last, after the invoice's lines and credit applications: a header's
-- presence is what makes an invoice final, so a close that died half-way is simply redone.
CREATE TABLE IF NOT EXISTS {db}.invoices
(
    invoice_id      String,
    customer_id     String,
    subscription_id String,
    plan            String,
    price_version   UInt32,
    currency        String,
    period_start    DateTime,
    period_end      DateTime,
    subtotal        Decimal(38, 12),
    credits         Decimal(38, 12),
    total           Decimal(38, 12),
    line_count      UInt32,
    closed_at       DateTime
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(period_start)
ORDER BY (customer_id, invoice_id);

-- Lines: usage, minimum-commitment true-up, adjustments of earlier invoices, credits. Keyed by
-- (invoice, line_no): a redone close rewrites the same keys instead of appending twice.
CREATE TABLE IF NOT EXISTS {db}.invoice_lines
(
    invoice_id      String,
    line_no         UInt32,
    customer_id     String,
    kind            String,
    period_start    DateTime,
    period_end      DateTime,
    meter           String,
    meter_version   UInt32,
    dimensions      String,
    plan            String,
    price_version   UInt32,
    pricing         String,
    quantity        Decimal(38, 12),
    amount          Decimal(38, 12),
    event_count     UInt64,
    events_digest   String,
    refers_to       String,
    detail          String,
    closed_at       DateTime
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(period_start)
ORDER BY (customer_id, invoice_id, line_no);

-- Prepaid credit consumption; a grant's balance is its amount minus these.
CREATE TABLE IF NOT EXISTS {db}.credit_applications
(
    grant_id    String,
    invoice_id  String,
    customer_id String,
    currency    String,
    amount      Decimal(38, 12),
    applied_at  DateTime
)
ENGINE = ReplacingMergeTree
ORDER BY (customer_id, grant_id, invoice_id);
