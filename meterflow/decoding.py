"""Decode and validate one Kafka record: a Confluent-framed Avro record -> an accepted event
with its per-meter measurements (dimensions, quantity, unique key, LATEST key), or a dead-letter
verdict with a reason code. Also the writer-schema cache the decoding resolves through.

Pure: the schema lookup is passed in, so this runs the same in the Flink job, in tests and in
the billing recompute. Time bounds are checked against the Kafka record timestamp, not the wall
clock, so replaying a topic classifies every record exactly as the first run did.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import fastavro

from meterflow.aggregation import latest_key
from meterflow.events import QUANTUM, WIDE
from meterflow.meters import Aggregation, Meter, QuantityError
from meterflow.wire import split_confluent_frame

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
REQUIRED_STRINGS = ("event_id", "event_name", "customer_id")


class SchemaNotFound(LookupError):
    """The registry answered that this schema id does not exist (not a transient failure)."""


@dataclass(frozen=True)
class Limits:
    max_record_bytes: int = 64 * 1024
    max_future_skew_ms: int = 5 * 60 * 1000
    max_age_ms: int = 35 * 24 * 3600 * 1000  # a billing period plus grace


@dataclass(frozen=True)
class Measurement:
    meter_id: str
    meter_version: int
    window_s: int
    dimensions: str  # canonical JSON object, sorted keys
    quantity: Decimal | None
    unique_key: str | None
    # LATEST tie-break: greatest event time, then greatest event_id (aggregation.latest_key)
    latest_key: str | None


@dataclass(frozen=True)
class Accepted:
    event_id: str
    event_name: str
    customer_id: str
    timestamp_ms: int
    value: Decimal | None
    properties: dict[str, str]
    source: str | None
    schema_id: int
    measurements: tuple[Measurement, ...]


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    detail: str


Verdict = Accepted | DeadLetter


class SchemaCache:
    """Writer schemas by id, resolved against the reader schema the code is written for."""

    def __init__(self, fetch: Callable[[int], str], reader_schema: str) -> None:
        self._fetch = fetch
        self._reader = fastavro.parse_schema(json.loads(reader_schema))
        self._writers: dict[int, Any] = {}

    def writer(self, schema_id: int) -> Any:
        w = self._writers.get(schema_id)
        if w is None:
            w = fastavro.parse_schema(json.loads(self._fetch(schema_id)))
            self._writers[schema_id] = w
        return w

    @property
    def reader(self) -> Any:
        return self._reader


def dimensions_json(dims: Sequence[tuple[str, str]]) -> str:
    return json.dumps(dict(dims), sort_keys=True, separators=(",", ":"))


def decode(
    payload: bytes | None,
    record_ts_ms: int,
    schemas: SchemaCache,
    meters: Sequence[Meter],
    limits: Limits = Limits(),
) -> Verdict:
    if payload is None:
        return DeadLetter("UNDECODABLE", "record has no value (tombstone)")
    if len(payload) > limits.max_record_bytes:
        return DeadLetter("OVERSIZED", f"{len(payload)} bytes > {limits.max_record_bytes}")
    frame = split_confluent_frame(payload)
    if frame is None:
        return DeadLetter("UNDECODABLE", "not Confluent wire format (magic byte 0 + schema id)")
    schema_id, body = frame
    try:
        writer = schemas.writer(schema_id)
    except SchemaNotFound:
        return DeadLetter("UNKNOWN_SCHEMA", f"schema id {schema_id} is not in the registry")
    try:
        rec = fastavro.schemaless_reader(io.BytesIO(body), writer, schemas.reader)
    except Exception as exc:  # fastavro raises many types for corrupt input
        return DeadLetter("UNDECODABLE", f"avro decode with schema {schema_id}: {exc!r}"[:500])
    return validate(rec, schema_id, record_ts_ms, meters, limits)


def validate(
    rec: Mapping[str, Any],
    schema_id: int,
    record_ts_ms: int,
    meters: Sequence[Meter],
    limits: Limits = Limits(),
) -> Verdict:
    for name in REQUIRED_STRINGS:
        v = rec.get(name)
        if not isinstance(v, str) or not v.strip():
            return DeadLetter("MISSING_FIELD", f"{name} is missing or empty")
    ts = rec.get("timestamp")
    if not isinstance(ts, datetime):
        return DeadLetter("MISSING_FIELD", "timestamp is missing")
    ts_ms = (ts - EPOCH) // _MS
    if ts_ms > record_ts_ms + limits.max_future_skew_ms:
        return DeadLetter(
            "TIMESTAMP_IN_FUTURE",
            f"event time {ts_ms} is {ts_ms - record_ts_ms} ms after the record time {record_ts_ms}",
        )
    if ts_ms < record_ts_ms - limits.max_age_ms:
        return DeadLetter(
            "TIMESTAMP_TOO_OLD",
            f"event time {ts_ms} is {record_ts_ms - ts_ms} ms before the record time",
        )
    props = rec.get("properties") or {}
    value = rec.get("value")
    if value is not None:
        value = Decimal(value)
    measurements = []
    event_name = rec["event_name"]
    try:
        for m in meters:
            if not m.selects(event_name, props):
                continue
            q = m.measure(value, props)
            if q is not None:
                q = q.quantize(QUANTUM, context=WIDE)  # the scale every stored quantity has
            measurements.append(
                Measurement(
                    meter_id=m.id,
                    meter_version=m.version,
                    window_s=m.window.seconds,
                    dimensions=dimensions_json(m.dimensions(props)),
                    quantity=q,
                    unique_key=m.unique_key(props),
                    latest_key=(
                        latest_key(ts_ms, rec["event_id"], q)
                        if m.aggregation is Aggregation.LATEST and q is not None
                        else None
                    ),
                )
            )
    except QuantityError as exc:
        # An event any selecting meter cannot measure is dead-lettered whole: counting it for
        # some meters and not others would make the meters disagree about the same usage.
        return DeadLetter(exc.reason, exc.detail)
    return Accepted(
        event_id=rec["event_id"],
        event_name=event_name,
        customer_id=rec["customer_id"],
        timestamp_ms=ts_ms,
        value=value,
        properties=dict(props),
        source=rec.get("source"),
        schema_id=schema_id,
        measurements=tuple(measurements),
    )
