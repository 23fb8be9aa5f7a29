"""`meterflow serve`: the HTTP API (FastAPI) -- ingest, usage and cost queries, entitlements and
invoices behind scoped keys. `ingest` (per-event validation) is pure; `app` is the HTTP layer;
`service` wires it to Kafka and ClickHouse (docs/decisions/0020-http-api.md)."""
