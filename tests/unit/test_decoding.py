import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import fastavro
import pytest

from meterflow.aggregation import latest_key, latest_value
from meterflow.decoding import (
    Accepted,
    DeadLetter,
    Limits,
    SchemaCache,
    SchemaNotFound,
    decode,
)
from meterflow.events import UsageEvent, schema_text
from meterflow.meters import parse_meters
from meterflow.wire import confluent_frame

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T_MS = int(T.timestamp() * 1000)
METERS = parse_meters(
    {
        "meters": [
            {
                "id": "calls",
                "version": 2,
                "event_name": "api_call",
                "aggregation": "COUNT",
                "group_by": ["region"],
            },
            {
                "id": "tok",
                "version": 1,
                "event_name": "tokens",
                "aggregation": "SUM",
                "quantity": {"from": "value"},
            },
            {
                "id": "last",
                "version": 1,
                "event_name": "tokens",
                "aggregation": "LATEST",
                "quantity": {"from": "value"},
                "window": "hour",
            },
        ]
    },
    "inline",
)


def _fetch(schema_id: int) -> str:
    if schema_id != 1:
        raise SchemaNotFound(schema_id)
    return schema_text(1)


CACHE = SchemaCache(_fetch, schema_text(1))
SCHEMA = fastavro.parse_schema(json.loads(schema_text(1)))


def _bytes(ev: UsageEvent, schema_id: int = 1) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, SCHEMA, ev.to_record())
    return confluent_frame(schema_id, body.getvalue())


def _ev(**kw) -> UsageEvent:
    base = dict(
        event_id="e1",
        event_name="tokens",
        customer_id="c",
        timestamp=T,
        value=Decimal("2.5"),
        properties={"region": "eu"},
    )
    base.update(kw)
    return UsageEvent(**base)


def test_accepted_event_carries_one_measurement_per_selecting_meter():
    v = decode(_bytes(_ev()), T_MS, CACHE, METERS)
    assert isinstance(v, Accepted)
    assert (v.event_id, v.customer_id, v.timestamp_ms, v.value) == ("e1", "c", T_MS, Decimal("2.5"))
    by_id = {m.meter_id: m for m in v.measurements}
    assert set(by_id) == {"tok", "last"}
    assert by_id["tok"].quantity == Decimal("2.5") and by_id["tok"].window_s == 60
    assert by_id["last"].window_s == 3600
    assert latest_value(by_id["last"].latest_key) == Decimal("2.5")


def test_count_meter_gets_dimensions_and_no_quantity():
    v = decode(_bytes(_ev(event_name="api_call", value=None)), T_MS, CACHE, METERS)
    assert isinstance(v, Accepted)
    (m,) = v.measurements
    assert (m.meter_id, m.meter_version, m.dimensions, m.quantity) == (
        "calls",
        2,
        '{"region":"eu"}',
        None,
    )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (None, "UNDECODABLE"),
        (b"", "UNDECODABLE"),
        (b'{"json": true}', "UNDECODABLE"),
        (b"\x00\x00\x00\x00\x01\xff\xff", "UNDECODABLE"),
        (b"\x00\x00\x00\x00\x07\x02a", "UNKNOWN_SCHEMA"),
        (b"\x00" * 70_000, "OVERSIZED"),
    ],
)
def test_unreadable_records_are_dead_lettered_with_a_reason(payload, reason):
    v = decode(payload, T_MS, CACHE, METERS)
    assert isinstance(v, DeadLetter) and v.reason == reason and v.detail


@pytest.mark.parametrize(
    ("event", "record_ms", "reason"),
    [
        (_ev(event_id=" "), T_MS, "MISSING_FIELD"),
        (_ev(customer_id=""), T_MS, "MISSING_FIELD"),
        (_ev(), T_MS - 6 * 60_000, "TIMESTAMP_IN_FUTURE"),
        (_ev(timestamp=T - timedelta(days=36)), T_MS, "TIMESTAMP_TOO_OLD"),
        (_ev(value=None), T_MS, "MISSING_QUANTITY"),
        (_ev(value=Decimal(-1)), T_MS, "NEGATIVE_QUANTITY"),
    ],
)
def test_invalid_events_are_dead_lettered_with_a_reason(event, record_ms, reason):
    v = decode(_bytes(event), record_ms, CACHE, METERS)
    assert isinstance(v, DeadLetter) and v.reason == reason


def test_time_bounds_are_inclusive_of_the_configured_skew():
    limits = Limits(max_future_skew_ms=1000)
    assert isinstance(decode(_bytes(_ev()), T_MS - 1000, CACHE, METERS, limits), Accepted)
    assert isinstance(decode(_bytes(_ev()), T_MS - 1001, CACHE, METERS, limits), DeadLetter)


def test_latest_key_orders_by_time_then_event_id():
    keys = [
        latest_key(5, "b", Decimal(1)),
        latest_key(5, "a", Decimal(9)),
        latest_key(40, "a", Decimal(2)),
    ]
    assert max(keys) == keys[2]
    assert max(keys[:2]) == keys[0]
