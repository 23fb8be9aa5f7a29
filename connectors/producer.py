"""Produces usage events in the Confluent Avro wire format, keyed by customer id."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaError, Message, Producer, SerializingProducer
from confluent_kafka.schema_registry import topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import StringSerializer

from connectors.registry import client as registry_client
from meterflow.events import UsageEvent, schema_text
from meterflow.settings import Settings


class DeliveryFailed(RuntimeError):
    pass


def event_producer_config(settings: Settings, schema_version: int = 1) -> dict:
    """The one producer configuration for usage events (CLI, tests and the SDK): idempotent,
    acks=all, key = customer id, value = Avro against the registered schema."""
    serializer = AvroSerializer(
        registry_client(settings),
        schema_text(schema_version),
        conf={
            "auto.register.schemas": False,  # schemas are registered by `meterflow init`
            # confluent-kafka 2.16's default strategy first asks the producer for the cluster
            # id, blocking up to 60 s while no broker answers (an SDK's first event in an
            # outage, an API request past its bound); the subject is the topic's, so say so
            "subject.name.strategy": topic_subject_name_strategy,
        },
    )
    return {
        **settings.kafka_config("producer"),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "key.serializer": StringSerializer("utf_8"),
        "value.serializer": serializer,
    }


def event_producer(settings: Settings, schema_version: int = 1) -> SerializingProducer:
    return SerializingProducer(event_producer_config(settings, schema_version))


def produce_events(
    settings: Settings, events: Iterable[UsageEvent], schema_version: int = 1
) -> int:
    """Send events and wait for every delivery; raise if any failed. Returns the count sent."""
    return _send_all(
        event_producer(settings, schema_version),
        settings.events_topic,
        ({"key": e.customer_id, "value": e.to_record()} for e in events),
    )


def produce_raw(
    settings: Settings,
    records: Iterable[tuple[bytes | None, bytes, int]],
    topic: str | None = None,
    role: str = "producer",
) -> int:
    """Send pre-serialized (key, value, record timestamp ms) records in order to `topic` (the
    events topic by default) as `role`; wait for all."""
    producer = Producer(
        {
            **settings.kafka_config(role),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "message.max.bytes": 20_000_000,  # the events topic takes up to 16 MiB
        }
    )
    return _send_all(
        producer,
        topic or settings.events_topic,
        ({"key": k, "value": v, "timestamp": ts} for k, v, ts in records),
    )


def _send_all(producer: Producer, topic: str, messages: Iterable[dict]) -> int:
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    sent = 0
    for msg in messages:
        while True:
            try:
                producer.produce(topic, on_delivery=on_delivery, **msg)
                break
            except BufferError:
                producer.poll(0.1)  # local queue full: let deliveries drain, then retry
        sent += 1
        if sent % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(120)
    if remaining or errors:
        raise DeliveryFailed(
            f"{len(errors)} deliveries failed, {remaining} unconfirmed: {errors[:3]}"
        )
    return sent
