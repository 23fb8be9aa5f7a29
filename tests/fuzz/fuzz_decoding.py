"""Coverage-guided fuzzing of the reference decoder (meterflow/decoding.py) with atheris.

    .venv/bin/python tests/fuzz/fuzz_decoding.py [libFuzzer flags] [CORPUS_DIR ...]

(`make fuzz` runs it for a bounded time.) One input is one Kafka record:

    bytes 0..7   the Kafka record timestamp, a big-endian signed 64-bit integer (ms)
    byte  8      options: bit 0 = a tombstone (no value), bit 1 = max_record_bytes 64
    bytes 9..    the record value (the Confluent-framed Avro record)

The seeds (written into the first corpus directory, default build/fuzz/decoding/corpus) are the
payloads of tests/vectors/decode.jsonl plus events encoded the way producers encode them
(UsageEvent.to_record + fastavro's schemaless writer + the Confluent frame), each with a record
timestamp near its event time, so mutations start from real Avro that passes the time bounds and
reaches the meters. The schema lookup is fixed: ids 1 and 2 are the repo's v1 and v2, ids from
101 the odd writer schemas of the vectors (other decimal scales, plain-long, micros and nullable
timestamps, renamed or namespaced records, a missing timestamp) and a few more a registry could
hold (local, date and time timestamps, a value that is plain bytes or a string, a newer writer
with extra fields of every kind for the reader to skip); every other id is SchemaNotFound. The
meters are the repo's (schemas/meters/*.yaml) and a few inline ones that reach every quantity
path.

The contract checked for every input: decode() returns a verdict and never raises; a dead letter
has a known reason code and a text detail; an accepted event has non-blank string ids, an event
time within the limits around the record timestamp, a value that the event's decimal(38, 12)
holds, string properties, the schema id it was framed with, and measurements whose quantities
are finite Decimals at scale 12 below 1e26.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import atheris

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

with atheris.instrument_imports(include=["meterflow"]):
    from meterflow.aggregation import latest_value
    from meterflow.decoding import (
        DEAD_LETTER_REASONS,
        Accepted,
        DeadLetter,
        Limits,
        SchemaCache,
        SchemaNotFound,
        decode,
    )
    from meterflow.meters import load_meters, parse_meters

import fastavro  # noqa: E402  (after the instrumented imports)

from meterflow.events import (  # noqa: E402
    AVRO_LIMIT,
    QUANTITY_SCALE,
    QUANTUM,
    WIDE,
    UsageEvent,
    demo_events,
    schema_text,
)
from meterflow.wire import confluent_frame, split_confluent_frame  # noqa: E402
from tests.fuzz.corpus import split_args, write_seeds  # noqa: E402

DEFAULT_CORPUS = ROOT / "build" / "fuzz" / "decoding" / "corpus"
VECTORS = ROOT / "tests" / "vectors" / "decode.jsonl"
HEADER = 9
SMALL_LIMIT = 64
MAX_SEED_BYTES = 4096  # libFuzzer's -max_len follows the longest seed: keep inputs small

REASONS = frozenset(DEAD_LETTER_REASONS)

# ------------------------------------------------------------------------------- fixtures


def _variant(edit) -> str:
    s = json.loads(schema_text(1))
    edit(s["fields"], s)
    return json.dumps(s, separators=(",", ":"))


def _odd_writers() -> list[str]:
    """Writer schemas a registry could hold for the topic besides v1 and v2: every distinct one
    of the decode vectors, then a few more kinds of timestamp."""
    out: list[str] = []
    for line in VECTORS.read_text().splitlines():
        for text in json.loads(line)["schemas"].values():
            if text not in (schema_text(1), schema_text(2)) and text not in out:
                out.append(text)
    for kind, logical in [
        ("long", "local-timestamp-millis"),
        ("long", "local-timestamp-micros"),
        ("int", "date"),
        ("int", "time-millis"),
        ("long", "time-micros"),
        ("long", "timestamp-nanos"),
        ("long", "local-timestamp-nanos"),
        ("int", "timestamp-millis"),  # not valid on an int: ignored
        ("long", "date"),  # nor this on a long
    ]:

        def edit(fs, _s, kind=kind, logical=logical):
            next(f for f in fs if f["name"] == "timestamp")["type"] = {
                "type": kind,
                "logicalType": logical,
            }

        text = _variant(edit)
        if text not in out:
            out.append(text)
    # a value without the decimal logical type: fastavro hands the reader its raw bytes
    for value_type in ("bytes", "string"):

        def edit_value(fs, _s, value_type=value_type):
            next(f for f in fs if f["name"] == "value")["type"] = ["null", value_type]

        text = _variant(edit_value)
        if text not in out:
            out.append(text)
    # strings with the uuid logical type (same encoding; fastavro would make uuid.UUIDs)
    uuid = {"type": "string", "logicalType": "uuid"}
    for edit_uuid in (
        lambda fs, _s: _named(fs, "event_id").update(type=uuid),
        lambda fs, _s: _named(fs, "properties").update(type={"type": "map", "values": uuid}),
        lambda fs, _s: _named(fs, "source").update(type=["null", uuid]),
    ):
        out.append(_variant(edit_uuid))
    out.append(WIDE_WRITER)
    return out


def _named(fields: list[dict], name: str) -> dict:
    return next(f for f in fields if f["name"] == name)


# a newer producer's schema: v1 plus fields of every kind that a v1 reader skips
WIDE_EXTRA = [
    {"name": "x_map", "type": {"type": "map", "values": "long"}, "default": {}},
    {"name": "x_array", "type": {"type": "array", "items": "string"}, "default": []},
    {"name": "x_fixed", "type": {"type": "fixed", "name": "X4", "size": 4}},
    {"name": "x_enum", "type": {"type": "enum", "name": "XE", "symbols": ["A", "B", "C"]}},
    {
        "name": "x_record",
        "type": {
            "type": "record",
            "name": "XR",
            "fields": [{"name": "d", "type": "double"}, {"name": "f", "type": "float"}],
        },
    },
    {"name": "x_bytes", "type": ["null", "bytes", "boolean", "int"], "default": None},
]
WIDE_VALUES = {
    "x_map": {"a": 1, "b": -(2**40)},
    "x_array": ["p", "", "q"],
    "x_fixed": b"\x00\x01\x02\x03",
    "x_enum": "C",
    "x_record": {"d": 1.5, "f": -2.0},
    "x_bytes": b"\xff\x00",
}
WIDE_WRITER = _variant(lambda fs, _s: fs.extend(WIDE_EXTRA))


SCHEMAS: dict[int, str] = {1: schema_text(1), 2: schema_text(2)}
SCHEMAS.update({101 + i: text for i, text in enumerate(_odd_writers())})
_ID_BY_TEXT = {text: i for i, text in SCHEMAS.items()}
WIDE_ID = _ID_BY_TEXT[WIDE_WRITER]


def _fetch(schema_id: int) -> str:
    if schema_id not in SCHEMAS:
        raise SchemaNotFound(schema_id)
    return SCHEMAS[schema_id]


EXTRA_METERS = parse_meters(
    {
        "meters": [
            {
                "id": "fz_prop",
                "version": 1,
                "event_name": "fz",
                "aggregation": "SUM",
                "quantity": {"from": "property", "property": "q", "allow_negative": True},
                "group_by": ["region", "model"],
            },
            {
                "id": "fz_weighted",
                "version": 1,
                "event_name": "fz",
                "aggregation": "MAX",
                "quantity": {
                    "from": "property",
                    "property": "q",
                    "allow_negative": True,
                    "multiply_by": {"property": "model", "table": {"a": "0.001", "b": "1e20"}},
                },
                "filters": {"model": {"exists": True}},
            },
            {
                "id": "fz_value",
                "version": 1,
                "event_name": "fz",
                "aggregation": "LATEST",
                "quantity": {"from": "value", "allow_negative": True},
                "filters": {"region": {"in": ["eu", "us"]}},
            },
            {
                "id": "fz_unique",
                "version": 1,
                "event_name": "fz",
                "aggregation": "UNIQUE_COUNT",
                "unique_property": "user",
                "filters": {"user": {"exists": True}, "region": {"not_in": ["x"]}},
            },
        ]
    },
    "fuzz",
)
METERS = (
    load_meters(ROOT / "schemas" / "meters" / "default.yaml")
    + load_meters(ROOT / "schemas" / "meters" / "scenario.yaml")
    + EXTRA_METERS
)
METER_IDS = {(m.id, m.version) for m in METERS}
CACHE = SchemaCache(_fetch, schema_text(1))

# ---------------------------------------------------------------------------------- seeds

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_input(record_ts_ms: int, payload: bytes | None, *, small_limit: bool = False) -> bytes:
    options = (1 if payload is None else 0) | (2 if small_limit else 0)
    head = record_ts_ms.to_bytes(8, "big", signed=True) + bytes([options])
    return head + (payload or b"")


def decode_input(data: bytes) -> tuple[int, bytes | None, Limits]:
    head = data[:HEADER].ljust(HEADER, b"\x00")
    record_ts = int.from_bytes(head[:8], "big", signed=True)
    options = head[8]
    payload = None if options & 1 else data[HEADER:]
    limits = Limits(max_record_bytes=SMALL_LIMIT) if options & 2 else Limits()
    return record_ts, payload, limits


def _producer_bytes(ev: UsageEvent, schema_id: int) -> bytes:
    out = io.BytesIO()
    parsed = fastavro.parse_schema(json.loads(SCHEMAS[schema_id]))
    rec = ev.to_record()
    if schema_id == 2:
        rec["unit"] = "tokens"
    elif schema_id == WIDE_ID:
        rec.update(WIDE_VALUES)
    fastavro.schemaless_writer(out, parsed, rec)
    return confluent_frame(schema_id, out.getvalue())


def _events() -> list[UsageEvent]:
    evs = list(demo_events(6, start=T0, event_names=("api_call", "llm_tokens", "gpu")))
    d = Decimal
    for name, value, props in [
        ("api_call", None, {"region": "eu", "endpoint": "/v1/x", "user_id": "u1"}),
        ("api_call", None, {"region": "eu", "endpoint": "/health"}),
        ("llm_tokens", d("12.5"), {"model": "large", "region": "us"}),
        ("llm_tokens", d("-3"), {"model": "small"}),
        ("llm_tokens", d("1e25"), {"model": "large"}),
        ("gpu", None, {"gpus": "8", "region": "eu"}),
        ("gpu", None, {"gpus": " 1e3 ", "region": "us"}),
        ("gpu", None, {"gpus": "NaN"}),
        ("fz", d("0.000000000001"), {"q": "42.5", "model": "a", "region": "eu", "user": "u"}),
        ("fz", d("99999999999999999999999999"), {"q": "-1e30", "model": "b"}),
        ("fz", None, {"q": "\u0661\u0662", "model": "c", "region": "us", "user": ""}),
    ]:
        evs.append(
            UsageEvent(
                event_id=f"seed-{len(evs)}",
                event_name=name,
                customer_id="cust-001",
                timestamp=T0 + timedelta(seconds=len(evs)),
                value=value,
                properties=props,
                source="fuzz",
            )
        )
    return evs


T0_MS = (T0 - EPOCH) // timedelta(milliseconds=1)
_NO_BOUNDS = Limits(max_future_skew_ms=10**30, max_age_ms=10**30)


def _record_ms(payload: bytes | None) -> int:
    """The record timestamp a seed gets: 1 s after its event time when it decodes."""
    v = decode(payload, 0, CACHE, [], _NO_BOUNDS)
    return (v.timestamp_ms if isinstance(v, Accepted) else T0_MS) + 1000


def seeds() -> list[bytes]:
    out: list[bytes] = []
    for line in VECTORS.read_text().splitlines():
        vec = json.loads(line)
        hexed = vec["payload_hex"]
        payload = None if hexed is None else bytes.fromhex(hexed)
        if payload is not None:
            if len(payload) > MAX_SEED_BYTES:
                continue
            frame = split_confluent_frame(payload)
            if frame is not None and str(frame[0]) in vec["schemas"]:
                # the vector's schema under this lookup's id for it
                text = vec["schemas"][str(frame[0])]
                payload = confluent_frame(_ID_BY_TEXT[text], frame[1])
        small = vec["max_record_bytes"] <= SMALL_LIMIT
        out.append(encode_input(_record_ms(payload), payload, small_limit=small))
    for ev in _events():
        for schema_id in (1, 2, WIDE_ID):
            payload = _producer_bytes(ev, schema_id)
            out.append(encode_input(_record_ms(payload), payload))
    # v1 bodies under every other writer id: most odd writers differ from v1 in types only
    first = _producer_bytes(_events()[0], 1)
    for schema_id in SCHEMAS:
        payload = confluent_frame(schema_id, first[5:])
        out.append(encode_input(_record_ms(payload), payload))
    return out


# ------------------------------------------------------------------------------- contract


def _check_quantity(q: object, what: str) -> None:
    assert isinstance(q, Decimal), (what, q)
    assert q.is_finite(), (what, q)
    assert abs(q) < AVRO_LIMIT, (what, q)


def check(verdict: object, payload: bytes | None, record_ts: int, limits: Limits) -> None:
    if isinstance(verdict, DeadLetter):
        assert verdict.reason in REASONS, verdict
        assert isinstance(verdict.detail, str) and verdict.detail, verdict
        verdict.detail.encode("utf-8")  # it goes to the dead-letter topic as JSON text
        return
    assert isinstance(verdict, Accepted), f"not a verdict: {verdict!r}"
    assert payload is not None and len(payload) <= limits.max_record_bytes
    for name in ("event_id", "event_name", "customer_id"):
        v = getattr(verdict, name)
        assert isinstance(v, str) and v.strip(), (name, v)
    ts = verdict.timestamp_ms
    assert isinstance(ts, int) and not isinstance(ts, bool), ts
    assert record_ts - limits.max_age_ms <= ts <= record_ts + limits.max_future_skew_ms, ts
    if verdict.value is not None:
        _check_quantity(verdict.value, "value")
        # what the event's decimal(38, 12) holds, and so what every consumer can store
        assert verdict.value == verdict.value.quantize(QUANTUM, context=WIDE), verdict.value
    assert isinstance(verdict.properties, dict), verdict.properties
    for k, v in verdict.properties.items():
        assert isinstance(k, str) and isinstance(v, str), (k, v)
    assert verdict.source is None or isinstance(verdict.source, str), verdict.source
    frame = split_confluent_frame(payload)
    assert frame is not None and verdict.schema_id == frame[0] and frame[0] in SCHEMAS
    for m in verdict.measurements:
        assert (m.meter_id, m.meter_version) in METER_IDS, m
        assert m.window_s in (60, 3600, 86400), m
        dims = json.loads(m.dimensions)
        assert isinstance(dims, dict) and all(isinstance(v, str) for v in dims.values()), m
        if m.quantity is not None:
            _check_quantity(m.quantity, m.meter_id)
            assert m.quantity.as_tuple().exponent == -QUANTITY_SCALE, m
        assert m.unique_key is None or isinstance(m.unique_key, str), m
        assert m.latest_key is None or isinstance(m.latest_key, str), m
        if m.latest_key is not None:
            assert latest_value(m.latest_key) == m.quantity, m


# ----------------------------------------------------------------------- outcome features
#
# Most of decoding happens in compiled code (fastavro's reader, decimal) that atheris does not
# instrument, so the decoder's own lines alone tell the fuzzer little. An instrumented chain of
# comparisons per outcome (reason, writer schema, fastavro's error type, meters measured, value
# sign, sizes) gives every new kind of outcome a new edge: inputs that reach one stay in the
# corpus and are mutated further.


def _ladder(name: str, keys: list[object]) -> Callable[[object], int]:
    lines = [f"def {name}(k):"]
    for i, key in enumerate(keys):
        lines += [f"    if k == {key!r}:", f"        return {i}"]
    lines.append("    return -1")
    namespace: dict[str, Any] = {}
    exec("\n".join(lines), namespace)  # generated code: one branch per key
    return atheris.instrument_func(namespace[name])


_AVRO_ERRORS = [
    "EOFError",
    "ValueError",
    "UnicodeDecodeError",
    "IndexError",
    "OverflowError",
    "SchemaResolutionError",
    "MemoryError",
    "TypeError",
    "KeyError",
    "StopIteration",
    "OSError",
]
_by_reason = _ladder("by_reason", sorted(REASONS))
_by_schema = _ladder("by_schema", sorted(SCHEMAS))
_by_avro_error = _ladder("by_avro_error", _AVRO_ERRORS)
_by_meter = _ladder("by_meter", sorted({m.id for m in METERS}))
_by_bucket = _ladder("by_bucket", list(range(-1, 20)))
_by_sign = _ladder("by_sign", ["none", "neg", "zero", "pos", "neg0"])


def _bucket(n: int) -> int:
    return -1 if n < 0 else min(n.bit_length(), 19)


def outcome(verdict: Accepted | DeadLetter, payload: bytes | None) -> None:
    if payload is not None:
        frame = split_confluent_frame(payload)
        if frame is not None:
            _by_schema(frame[0])
        _by_bucket(_bucket(len(payload)))
    if isinstance(verdict, DeadLetter):
        _by_reason(verdict.reason)
        if verdict.detail.startswith("avro decode"):
            _by_avro_error(verdict.detail.partition(": ")[2].partition("(")[0])
        return
    v = verdict.value
    if v is None:
        _by_sign("none")
    else:
        _by_sign(
            "zero"
            if v.is_zero() and not v.is_signed()
            else "neg0"
            if v.is_zero()
            else "neg"
            if v < 0
            else "pos"
        )
    _by_bucket(_bucket(len(verdict.properties)))
    for m in verdict.measurements:
        _by_meter(m.meter_id)


def test_one_input(data: bytes) -> None:
    record_ts, payload, limits = decode_input(data)
    verdict = decode(payload, record_ts, CACHE, METERS, limits)
    check(verdict, payload, record_ts, limits)
    outcome(verdict, payload)


def main(argv: list[str]) -> None:
    dirs, flags = split_args(argv, DEFAULT_CORPUS)
    n = write_seeds(Path(dirs[0]), seeds())
    print(f"fuzz_decoding: {n} inputs in {dirs[0]}, schema ids {sorted(SCHEMAS)}", flush=True)
    atheris.Setup([argv[0], *flags, *dirs], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
