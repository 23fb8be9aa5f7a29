"""Thin adapters to Kafka, the schema registry and ClickHouse."""
