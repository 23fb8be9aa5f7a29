"""The Confluent-compatible registry and confluent-kafka's own clients, end to end."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from connectors.producer import produce_events
from connectors.registry import client as registry_client
from connectors.registry import register_event_schema
from meterflow.events import UsageEvent, schema_text


def test_subject_is_backward_compatible_and_registration_is_idempotent(scratch):
    s = scratch.settings
    reg = registry_client(s)
    assert reg.get_compatibility(s.events_subject) == "BACKWARD"
    first = reg.get_latest_version(s.events_subject).schema_id
    assert register_event_schema(s, schema_text(1)) == first
    assert len(reg.get_versions(s.events_subject)) == 1


def test_registry_refuses_a_backward_incompatible_schema(scratch):
    s = scratch.settings
    breaking = json.loads(schema_text(1))
    # a new required field without a default: v1 data could not be read with it
    breaking["fields"].append({"name": "tenant", "type": "string"})
    with pytest.raises(SchemaRegistryError) as err:
        registry_client(s).register_schema(
            s.events_subject, Schema(json.dumps(breaking), schema_type="AVRO")
        )
    assert err.value.http_status_code == 409


def test_events_round_trip_through_kafka_in_confluent_wire_format(scratch):
    s = scratch.settings
    ts = datetime(2026, 5, 4, 3, 2, 1, 123000, tzinfo=UTC)
    events = [
        UsageEvent("id-1", "llm_tokens", "cust-1", ts, Decimal("42.000000000001"), {"model": "a"}),
        UsageEvent("id-2", "api_call", "cust-2", ts, None, {}, "svc/2"),
    ]
    produce_events(s, events)

    consumer = Consumer(
        {
            **s.kafka_config("operator"),
            "group.id": f"rt-{scratch.run_id}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([s.events_topic])
    deser = AvroDeserializer(registry_client(s))
    got = {}
    try:
        while len(got) < len(events):
            msg = consumer.poll(30)
            assert msg is not None, f"timed out after {len(got)} of {len(events)} events"
            assert msg.error() is None, msg.error()
            assert msg.value()[0] == 0, "not Confluent wire format (magic byte)"
            rec = deser(msg.value(), SerializationContext(msg.topic(), MessageField.VALUE))
            assert msg.key().decode() == rec["customer_id"]
            got[rec["event_id"]] = rec
    finally:
        consumer.close()
    assert got["id-1"]["value"] == Decimal("42.000000000001")
    assert got["id-1"]["timestamp"] == ts
    assert got["id-1"]["properties"] == {"model": "a"}
    assert got["id-2"]["value"] is None and got["id-2"]["source"] == "svc/2"
