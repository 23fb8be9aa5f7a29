"""Alerts topic consumer for the webhook sender, and the alerts table reader."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from clickhouse_driver import Client
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from connectors.registry import client as registry_client
from connectors.webhook import DeliveryError, RetryPolicy, deliver
from meterflow.settings import Settings

DEFAULT_POLICY = RetryPolicy()


@dataclass(frozen=True)
class SendResult:
    sent: int
    attempts: int


def send_alerts(
    settings: Settings,
    post: Callable[[dict], None],
    group_id: str = "meterflow-alerts-webhook",
    policy: RetryPolicy = DEFAULT_POLICY,
    idle_s: float = 5.0,
    join_timeout_s: float = 60.0,
) -> SendResult:
    """Deliver every committed alert after this group's offset, in order, committing each after
    a successful POST. Returns when no alert arrived for `idle_s`. Raises DeliveryError (offset
    not committed) when the receiver keeps failing."""
    topic = settings.alerts_topic
    deser = AvroDeserializer(registry_client(settings))
    c = Consumer(
        {
            **settings.kafka_config("alerts"),
            "group.id": group_id,
            "isolation.level": "read_committed",  # only alerts of completed checkpoints
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    assigned: list[TopicPartition] = []
    # "idle" only counts once the group has its partitions: joining a group on a fresh broker
    # (creating __consumer_offsets) can take longer than the idle time.
    c.subscribe([topic], on_assign=lambda _c, parts: assigned.extend(parts))
    join_deadline = time.monotonic() + join_timeout_s
    sent = attempts = 0
    try:
        while True:
            msg = c.poll(idle_s)
            if msg is None:
                if not assigned and time.monotonic() < join_deadline:
                    continue
                return SendResult(sent, attempts)
            if msg.error():
                raise DeliveryError(f"alerts topic: {msg.error()}")
            alert = deser(msg.value(), SerializationContext(topic, MessageField.VALUE))
            attempts += deliver(lambda a=alert: post(a), policy)
            c.commit(
                offsets=[TopicPartition(topic, msg.partition(), msg.offset() + 1)],
                asynchronous=False,
            )
            sent += 1
    finally:
        c.close()


@dataclass(frozen=True)
class StoredAlert:
    customer_id: str
    meter: str
    period_start: datetime
    threshold_pct: int
    quantity: Decimal
    quota: Decimal
    hard_cap: bool


def stored_alerts(ch: Client, db: str, customer_id: str | None = None) -> list[StoredAlert]:
    """The alerts table, one row per (customer, meter, period, threshold), in that order."""
    where = "WHERE customer_id = %(c)s" if customer_id else ""
    rows = ch.execute(
        "SELECT customer_id, meter, period_start, threshold_pct, quantity, quota, hard_cap "
        f"FROM {db}.alerts FINAL {where} "
        "ORDER BY customer_id, meter, period_start, threshold_pct",
        {"c": customer_id},
    )
    return [
        StoredAlert(c, m, ps.replace(tzinfo=UTC), int(pct), q, quota, bool(cap))
        for c, m, ps, pct, q, quota, cap in rows
    ]
