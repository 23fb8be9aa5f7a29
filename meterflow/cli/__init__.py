"""Operator tooling around the pipeline: the `meterflow` command (`main`), invoice reports
(`reports`: explain, shadow re-rate, reconciliation) and the ledger's Prometheus exporter."""
