"""meterflow: real-time usage metering and billing.

This package holds the pure domain logic (no Flink, Kafka or ClickHouse imports) and the CLI.
Adapters live in `connectors`, streaming and batch jobs in `jobs`.
"""
