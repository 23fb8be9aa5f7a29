import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import fastavro
import pytest

from meterflow.events import UsageEvent, demo_events, schema_text

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _roundtrip(record: dict) -> dict:
    schema = fastavro.parse_schema(json.loads(schema_text(1)))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    buf.seek(0)
    return fastavro.schemaless_reader(buf, schema)


def test_record_survives_avro_v1_exactly():
    ev = UsageEvent("e-1", "llm_tokens", "c-1", T0, Decimal("12.5"), {"model": "m1"}, "app/1")
    back = _roundtrip(ev.to_record())
    assert back == {
        "event_id": "e-1",
        "event_name": "llm_tokens",
        "customer_id": "c-1",
        "timestamp": T0,
        "value": Decimal("12.500000000000"),
        "properties": {"model": "m1"},
        "source": "app/1",
    }


def test_count_only_event_has_null_value():
    back = _roundtrip(UsageEvent("e-2", "api_call", "c-1", T0).to_record())
    assert back["value"] is None
    assert back["properties"] == {}


def test_quantity_keeps_twelve_decimal_places():
    back = _roundtrip(UsageEvent("e-3", "gpu", "c", T0, Decimal("0.000000000001")).to_record())
    assert back["value"] == Decimal("1E-12")


def test_naive_timestamp_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        UsageEvent("e", "n", "c", datetime(2026, 1, 1))


def test_demo_events_are_deterministic_and_inside_span():
    a = list(demo_events(500, start=T0, span=timedelta(minutes=3), seed=1))
    b = list(demo_events(500, start=T0, span=timedelta(minutes=3), seed=1))
    assert a == b
    assert len({e.event_id for e in a}) == 500
    assert all(T0 <= e.timestamp < T0 + timedelta(minutes=3) for e in a)
    assert {e.event_name for e in a} == {"api_call", "llm_tokens"}


def test_v2_reads_v1_data_backward_compatibility():
    v1 = fastavro.parse_schema(json.loads(schema_text(1)))
    v2 = fastavro.parse_schema(json.loads(schema_text(2)))
    buf = io.BytesIO()
    ev = UsageEvent("e-9", "api_call", "c-1", T0)
    fastavro.schemaless_writer(buf, v1, ev.to_record())
    buf.seek(0)
    back = fastavro.schemaless_reader(buf, v1, v2)
    assert back["unit"] is None and back["event_id"] == "e-9"
