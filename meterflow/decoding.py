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
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import fastavro
from fastavro import _read_py  # the pure-Python reader: a decoder of our own can be passed in
from fastavro.io.binary_decoder import BinaryDecoder
from fastavro.schema import to_parsing_canonical_form

from meterflow.aggregation import latest_key
from meterflow.events import AVRO_LIMIT, QUANTUM, WIDE
from meterflow.meters import Aggregation, Meter, QuantityError
from meterflow.wire import split_confluent_frame

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
REQUIRED_STRINGS = ("event_id", "event_name", "customer_id")
# Every reason a record is dead-lettered for: the decoding's own, then the measuring's
# (meterflow.meters.QuantityError).
DEAD_LETTER_REASONS = (
    "UNDECODABLE",
    "UNKNOWN_SCHEMA",
    "MISSING_FIELD",
    "TIMESTAMP_IN_FUTURE",
    "TIMESTAMP_TOO_OLD",
    "OVERSIZED",
    "NON_NUMERIC_QUANTITY",
    "NAN_QUANTITY",
    "INFINITE_QUANTITY",
    "NEGATIVE_QUANTITY",
    "MISSING_QUANTITY",
    "UNKNOWN_MULTIPLIER_KEY",
    "QUANTITY_OUT_OF_RANGE",
)


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


@dataclass(frozen=True)
class WriterInfo:
    """What decode() needs to know of a writer schema besides the parsed schema."""

    # fields the reader lacks, which fastavro skips (see _ExactReads)
    skips_fields: bool
    # reader fields the writer has as an Avro int: fastavro reads any 64-bit varint there
    int_fields: tuple[str, ...]
    # the writer is the reader schema: what is read with resolution is what was written
    is_reader: bool = False


INT_MIN, INT_MAX = -(2**31), 2**31 - 1


def _without_uuid(schema: Any) -> Any:
    """The writer schema with the `uuid` logical type dropped from every string.

    fastavro turns such a string into a uuid.UUID (and fails on text that is not one), so a
    producer whose event_id is `{"type": "string", "logicalType": "uuid"}` had every event
    dead-lettered for a missing event_id, and UUID objects reached the properties and source
    (found with tests/fuzz/differential.py: the JVM decoder reads them as the strings they
    are).
    The logical type changes nothing in the encoding.
    """
    if isinstance(schema, list):
        return [_without_uuid(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _without_uuid(v) for k, v in schema.items()}
    if out.get("logicalType") == "uuid" and out.get("type") == "string":
        del out["logicalType"]
    return out


def _is_int(t: Any) -> bool:
    # with a logical type too: date and time-millis become objects, any other is ignored
    return t == "int" or (isinstance(t, dict) and t.get("type") == "int")


def _writer_info(writer: Any, reader_fields: frozenset[str]) -> WriterInfo:
    fields = writer.get("fields", ()) if isinstance(writer, dict) else ()
    ints = []
    for f in fields:
        t = f["type"]
        branches = t if isinstance(t, list) else [t]
        has_long = any(
            b == "long" or (isinstance(b, dict) and b.get("type") == "long") for b in branches
        )
        if f["name"] in reader_fields and not has_long and any(_is_int(b) for b in branches):
            ints.append(f["name"])
    return WriterInfo(
        skips_fields=any(f["name"] not in reader_fields for f in fields), int_fields=tuple(ints)
    )


class SchemaCache:
    """Writer schemas by id, resolved against the reader schema the code is written for."""

    def __init__(self, fetch: Callable[[int], str], reader_schema: str) -> None:
        self._fetch = fetch
        self._reader = fastavro.parse_schema(json.loads(reader_schema))
        self._reader_fields = frozenset(f["name"] for f in self._reader.get("fields", ()))
        self._writers: dict[int, tuple[Any, WriterInfo]] = {}

    def _entry(self, schema_id: int) -> tuple[Any, WriterInfo]:
        e = self._writers.get(schema_id)
        if e is None:
            w = fastavro.parse_schema(_without_uuid(json.loads(self._fetch(schema_id))))
            info = _writer_info(w, self._reader_fields)
            same = to_parsing_canonical_form(w) == to_parsing_canonical_form(self._reader)
            e = (w, replace(info, is_reader=same))
            self._writers[schema_id] = e
        return e

    def writer(self, schema_id: int) -> Any:
        return self._entry(schema_id)[0]

    def info(self, schema_id: int) -> WriterInfo:
        return self._entry(schema_id)[1]

    @property
    def reader(self) -> Any:
        return self._reader


_read = io.BytesIO.read


class _ExactReads(io.BytesIO):
    """A body whose every read gets the bytes it asks for, or raises EOFError.

    fastavro checks that when it reads a field, but skips a writer field the reader lacks (v2's
    `unit` read as v1) by reading its length's worth of bytes unchecked: a record truncated in
    such a field, or with a negative length there, decoded as valid (found by fuzzing against
    the JVM decoder, which refuses both). Only used for writers with such fields: the check
    costs a Python call per read.
    """

    __slots__ = ()

    def read(self, n: int | None = -1) -> bytes:
        data = _read(self, n)
        if n is None or len(data) != n:
            raise EOFError(f"expected {n} bytes, read {len(data)}")
        return data


def _canonical(body: bytes, writer: Any, read: Any = None) -> bool:
    """Whether `body` is the encoding fastavro itself writes for what it reads from it (`read`:
    what was read, when the writer is the reader schema; read again here otherwise). A negative
    union branch index never is (fastavro's writer only writes indexes from 0)."""
    try:
        if read is None:
            read = fastavro.schemaless_reader(io.BytesIO(body), writer)
        out = io.BytesIO()
        fastavro.schemaless_writer(out, writer, read)
        return out.getvalue() == body
    except Exception:
        return False


class NegativeBranch(ValueError):
    pass


class _NoNegativeBranch(BinaryDecoder):
    def read_index(self) -> int:
        index = self.read_long()
        if index < 0:
            raise NegativeBranch(f"negative union branch index {index}")
        return index


def _read_branches_strictly(body: bytes, writer: Any, reader: Any) -> None:
    """Read `body` again with fastavro's pure-Python reader, refusing a negative union branch
    index, which fastavro's reader takes as Python list indexing from the end (-1: the last
    branch) and Avro, like the JVM decoder, refuses (found by the fuzz stream through the job,
    tests/integration/test_fuzz_stream.py). Only for bodies that are not canonical (_canonical):
    valid but unusual encodings (multi-block maps, padded decimals, long varints) and corrupt
    ones; the pure-Python reader is several times slower."""
    named = _read_py._default_named_schemas()
    w = fastavro.parse_schema(writer, named["writer"], _force=True)
    r = fastavro.parse_schema(reader, named["reader"], _force=True)
    try:
        # "ignore": the pure-Python reader decodes the strings of skipped writer-only fields,
        # which the fast reader (and the JVM) leave unchecked
        options = {"handle_unicode_errors": "ignore"}
        _read_py.read_data(_NoNegativeBranch(io.BytesIO(body)), w, named, r, options)
    except NegativeBranch:
        raise
    except Exception:  # any other finding is the fast reader's to make, and it
        pass  # read these bytes without one


def fits_event_decimal(value: Decimal) -> bool:
    """Whether the event's decimal(38, 12) holds `value` exactly: below 1e26 in magnitude and
    nothing below 1e-12."""
    # copy_abs is exact; abs() would round in the default 28-digit context
    return value.copy_abs() < AVRO_LIMIT and value.quantize(QUANTUM, context=WIDE) == value


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
    info = schemas.info(schema_id)
    stream = _ExactReads(body) if info.skips_fields else io.BytesIO(body)
    try:
        rec = fastavro.schemaless_reader(stream, writer, schemas.reader)
        if not _canonical(body, writer, rec if info.is_reader else None):
            _read_branches_strictly(body, writer, schemas.reader)
    except Exception as exc:  # fastavro raises many types for corrupt input
        return DeadLetter("UNDECODABLE", f"avro decode with schema {schema_id}: {exc!r}"[:500])
    for name in info.int_fields:
        v = rec.get(name)
        if type(v) is int and not INT_MIN <= v <= INT_MAX:
            # an Avro int is 32-bit: the bytes are not valid for the writer schema, as the JVM
            # decoder says (found by fuzzing against it: a plain-int timestamp of 2^31)
            return DeadLetter(
                "UNDECODABLE", f"avro decode with schema {schema_id}: int {name} out of range: {v}"
            )
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
    if ts.utcoffset() is None:
        # local-timestamp-millis/-micros in the writer: fastavro gives a naive datetime, a wall
        # time in no zone, not an instant
        return DeadLetter("UNDECODABLE", f"timestamp is a local timestamp in schema {schema_id}")
    ts_ms = (ts - EPOCH) // _MS
    value = rec.get("value")
    if value is not None:
        # Checked before the time bounds, as the JVM decoder does (they come after it, in SQL).
        if not isinstance(value, Decimal):
            # a writer `value` without the decimal logical type: fastavro hands over raw bytes
            return DeadLetter("UNDECODABLE", f"value is not an Avro decimal in schema {schema_id}")
        if not fits_event_decimal(value):
            # e.g. a 39-digit unscaled value, or a writer scale above 12 with digits below 1e-12:
            # no consumer could store it (the Python job's Arrow conversion fails on it)
            return DeadLetter(
                "UNDECODABLE", f"value does not fit decimal(38, 12) in schema {schema_id}"
            )
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
