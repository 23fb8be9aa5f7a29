"""The SDK's Prometheus metrics, registered together on the app's registry (or one given)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from meterflow.sdk.spool import Spool


@dataclass(frozen=True)
class SdkMetrics:
    tracked: Counter
    delivered: Counter
    errors: Counter
    depth: Gauge
    size: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry, spool: Spool) -> SdkMetrics:
        # Built unregistered, then registered together: a name clash (a second live client on
        # the same registry) leaves nothing half-registered behind.
        depth = Gauge("meterflow_sdk_spool_depth", "Events not yet acknowledged", registry=None)
        depth.set_function(lambda: spool.depth)
        size = Gauge("meterflow_sdk_spool_bytes", "Bytes of spool on disk", registry=None)
        size.set_function(lambda: spool.size_bytes)
        metrics = cls(
            Counter("meterflow_sdk_events_tracked", "Events accepted by track()", registry=None),
            Counter("meterflow_sdk_events_delivered", "Events acked by Kafka", registry=None),
            Counter(
                "meterflow_sdk_delivery_errors",
                "Failed attempts to deliver an event (it stays in the spool and is resent)",
                ["reason"],
                registry=None,
            ),
            depth,
            size,
        )
        done = []
        try:
            for collector in metrics.collectors:
                registry.register(collector)
                done.append(collector)
        except ValueError as exc:
            for collector in done:
                registry.unregister(collector)
            raise ValueError(
                f"{exc}: another UsageClient is registered there; pass registry=..."
            ) from exc
        return metrics

    @property
    def collectors(self) -> tuple[Counter | Gauge, ...]:
        return (self.tracked, self.delivered, self.errors, self.depth, self.size)

    def unregister(self, registry: CollectorRegistry) -> None:
        for collector in self.collectors:
            with contextlib.suppress(KeyError):
                registry.unregister(collector)
