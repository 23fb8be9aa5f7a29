-- `meterflow load` inserts the rows the metering job wrote to Kafka with JSONEachRow and names
-- the columns it sends; the columns it does not send take their DEFAULT. Without one they
-- would be 0000-00-00 00:00:00 (18.16 fills a column absent from the insert with its default
-- expression, but a key absent from a JSONEachRow row with the type's zero), so the load time
-- is set by ClickHouse. Changing a default rewrites no data.
ALTER TABLE {db}.events MODIFY COLUMN ingested_at DateTime DEFAULT now();
ALTER TABLE {db}.late_events MODIFY COLUMN ingested_at DateTime DEFAULT now();
ALTER TABLE {db}.usage_windows MODIFY COLUMN written_at DateTime DEFAULT now();
ALTER TABLE {db}.rated_usage MODIFY COLUMN written_at DateTime DEFAULT now();
ALTER TABLE {db}.alerts MODIFY COLUMN written_at DateTime DEFAULT now();
