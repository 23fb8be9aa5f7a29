"""What tests/fuzz found, one test each: inputs on which the reference decoder or a definition
loader raised instead of answering, or on which the decoder disagreed with the JVM one
(tests/fuzz/differential.py). The decoder cases are also vectors in tests/vectors/decode.jsonl
and quantity.jsonl, which the JVM functions are held to as well."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import fastavro
import pytest

from meterflow.credits import CreditConfigError, load_grants
from meterflow.decoding import (
    Accepted,
    DeadLetter,
    SchemaCache,
    SchemaNotFound,
    decode,
    fits_event_decimal,
)
from meterflow.events import schema_text
from meterflow.meters import MeterConfigError, load_meters, parse_meters
from meterflow.price_book import PriceConfigError, load_price_book
from meterflow.subscriptions import SubscriptionConfigError, load_subscriptions
from meterflow.wire import confluent_frame

T_MS = 1772366400000  # 2026-03-01T12:00Z


def _zigzag(n: int) -> bytes:
    u, out = (n << 1) ^ (n >> 63), bytearray()
    while True:
        b, u = u & 0x7F, u >> 7
        out.append(b | 0x80 if u else b)
        if not u:
            return bytes(out)


def _s(text: str) -> bytes:
    b = text.encode()
    return _zigzag(len(b)) + b


IDS = _s("e1") + _s("gpu") + _s("c1")
TS = _zigzag(T_MS)
TAIL = b"\x00\x00\x00"  # no value, no properties, no source


def _writer(edit) -> str:
    s = json.loads(schema_text(1))
    edit({f["name"]: f for f in s["fields"]}, s)
    return json.dumps(s)


def _decode(payload: bytes, writer: str | None = None, meters=()) -> Accepted | DeadLetter:
    schemas = {1: writer or schema_text(1), 2: schema_text(2)}

    def fetch(i: int) -> str:
        if i not in schemas:
            raise SchemaNotFound(i)
        return schemas[i]

    return decode(payload, T_MS, SchemaCache(fetch, schema_text(1)), list(meters))


def _reason(v: Accepted | DeadLetter) -> str:
    return "OK" if isinstance(v, Accepted) else v.reason


# ------------------------------------------------------------------ the decoder raised


def test_a_local_timestamp_writer_is_undecodable_not_a_type_error():
    # fastavro gives a naive datetime, which cannot be compared with the UTC epoch
    w = _writer(lambda f, _: f["timestamp"]["type"].update(logicalType="local-timestamp-millis"))
    assert _reason(_decode(confluent_frame(1, IDS + TS + TAIL), w)) == "UNDECODABLE"


@pytest.mark.parametrize("value_type", ["bytes", "string"])
def test_a_value_without_the_decimal_logical_type_is_undecodable(value_type):
    w = _writer(lambda f, _: f["value"].update(type=["null", value_type]))
    payload = confluent_frame(1, IDS + TS + b"\x02\x02\x01\x00\x00")
    assert _reason(_decode(payload, w)) == "UNDECODABLE"


GPU = parse_meters(
    {
        "meters": [
            {
                "id": "gpu",
                "version": 1,
                "event_name": "gpu",
                "aggregation": "SUM",
                "quantity": {"from": "property", "property": "q", "allow_negative": True},
            },
            {
                "id": "gpu_weighted",
                "version": 1,
                "event_name": "gpu",
                "aggregation": "SUM",
                "quantity": {
                    "from": "property",
                    "property": "q",
                    "multiply_by": {"property": "m", "table": {"k": "10"}, "default": "1"},
                },
            },
        ]
    },
    "inline",
)


@pytest.mark.parametrize(
    ("q", "meters"),
    [
        ("1e1000000", GPU),  # abs() overflowed the default context
        ("-1e1000000", GPU),
        ("1e999999999999999999", GPU),
        ("1e999999", GPU[1:]),  # 1e999999 x 10: the 80-digit multiply overflowed
    ],
)
def test_a_quantity_past_the_decimal_context_is_out_of_range_not_overflow(q, meters):
    props = _zigzag(2) + _s("q") + _s(q) + _s("m") + _s("k") + b"\x00"
    v = _decode(confluent_frame(1, IDS + TS + b"\x00" + props + b"\x00"), meters=meters)
    assert isinstance(v, DeadLetter) and v.reason == "QUANTITY_OUT_OF_RANGE"


# ------------------------------------------------------ the decoders disagreed (Python wrong)


def test_values_that_decimal_38_12_cannot_hold_are_undecodable():
    assert fits_event_decimal(Decimal("99999999999999999999999999.999999999999"))
    assert fits_event_decimal(Decimal("-0.000000000001")) and fits_event_decimal(
        Decimal("1.00E-12")
    )
    assert not fits_event_decimal(Decimal("1E+26"))
    assert not fits_event_decimal(Decimal("1E-13"))
    too_big = (10**38).to_bytes(17, "big", signed=True)
    payload = confluent_frame(1, IDS + TS + b"\x02" + _zigzag(17) + too_big + b"\x00\x00")
    assert _reason(_decode(payload)) == "UNDECODABLE"


@pytest.mark.parametrize(
    "unit",
    [
        b"\x02" + _zigzag(2),  # 2 bytes declared, none left
        b"\x02" + _zigzag(-1) + b"abc",  # a negative length
    ],
)
def test_a_record_truncated_in_a_skipped_field_is_undecodable(unit):
    assert _reason(_decode(confluent_frame(2, IDS + TS + TAIL + unit))) == "UNDECODABLE"
    # the same record, whole, is accepted
    assert _reason(_decode(confluent_frame(2, IDS + TS + TAIL + b"\x02" + _s("ms")))) == "OK"


def test_an_int_timestamp_beyond_32_bits_is_undecodable():
    w = _writer(lambda f, _: f["timestamp"].update(type="int"))
    assert _reason(_decode(confluent_frame(1, IDS + _zigzag(2**31) + TAIL), w)) == "UNDECODABLE"
    assert _reason(_decode(confluent_frame(1, IDS + _zigzag(5) + TAIL), w)) == "MISSING_FIELD"


def test_uuid_strings_stay_strings():
    uuid = {"type": "string", "logicalType": "uuid"}

    def edit(f, _):
        f["event_id"]["type"] = uuid
        f["properties"]["type"] = {"type": "map", "values": uuid}
        f["source"]["type"] = ["null", uuid]

    uid = "12345678-1234-5678-1234-56781234567A"
    props = _zigzag(1) + _s("k") + _s(uid) + b"\x00"
    v = _decode(
        confluent_frame(
            1, _s(uid) + _s("gpu") + _s("c1") + TS + b"\x00" + props + b"\x02" + _s("no-uuid")
        ),
        _writer(edit),
    )
    assert isinstance(v, Accepted)
    assert (v.event_id, v.properties, v.source) == (uid, {"k": uid}, "no-uuid")


def test_the_decoded_stream_of_a_writer_without_extra_fields_is_plain():
    # the exact-read check costs a call per read: only writers with skipped fields pay it
    body = io.BytesIO()
    rec = {
        "event_id": "e",
        "event_name": "n",
        "customer_id": "c",
        "timestamp": datetime(2026, 3, 1, 12, tzinfo=UTC),
        "value": None,
        "properties": {},
        "source": None,
    }
    fastavro.schemaless_writer(body, fastavro.parse_schema(json.loads(schema_text(1))), rec)
    cache = SchemaCache(lambda i: schema_text(i), schema_text(1))
    cache.writer(1)
    cache.writer(2)
    assert not cache.info(1).skips_fields and cache.info(2).skips_fields
    assert isinstance(decode(confluent_frame(1, body.getvalue()), T_MS, cache, []), Accepted)


# ---------------------------------------------------------------- the loaders raised

LOADERS = [
    (load_meters, MeterConfigError),
    (load_price_book, PriceConfigError),
    (load_subscriptions, SubscriptionConfigError),
    (load_grants, CreditConfigError),
]


@pytest.mark.parametrize(
    "text",
    [
        b"me\xffters: []",  # not UTF-8: UnicodeDecodeError from read_text()
        b"a: 2026-13-01",  # the constructors' ValueError ...
        b"a: 2026-01-01 25:00:00",
        b"a: " + b"1" * 5000,  # ... past Python's 4300-digit int limit
        b"a: !!timestamp bogus",  # AttributeError in PyYAML
        b"a: " + b"[" * 3000,  # RecursionError in PyYAML's composer
    ],
)
@pytest.mark.parametrize(("load", "error"), LOADERS)
def test_a_file_that_is_not_yaml_raises_the_loaders_error(tmp_path: Path, text, load, error):
    p = tmp_path / "defs.yaml"
    p.write_bytes(text)
    with pytest.raises(error) as exc:
        load(p)
    assert str(exc.value).startswith(f"{p}: not valid YAML: ")


def _plan(effective_from="2026-01-01", charge='{model: per_unit, unit_price: "1"}', minimum=None):
    extra = "" if minimum is None else f"\n    minimum: {minimum!r}"
    return f"""plans:
- id: p
  currency: USD
  versions:
  - version: 1
    effective_from: {effective_from}{extra}
    charges: {{m: {charge}}}
"""


def _sub(**fields):
    base = {"id": "s", "customer_id": "c", "plan": "p", "start": "2026-01-01"}
    return "subscriptions: [" + json.dumps({**base, **fields}) + "]"


def _grant(**fields):
    base = {"id": "g", "customer_id": "c", "currency": "USD", "amount": "5"}
    return "grants: [" + json.dumps({**base, "effective_at": "2026-01-01", **fields}) + "]"


WEIGHTED = (
    "meters: [{id: m, version: 1, event_name: e, aggregation: SUM, quantity: "
    '{from: value, multiply_by: {property: p, table: {a: "1e999999"}}}}]'
)


@pytest.mark.parametrize(
    ("load", "error", "text"),
    [
        # round_amount raised InvalidOperation; printing such numbers in full never ended
        (load_price_book, PriceConfigError, _plan(minimum="1e9999999999")),
        (load_price_book, PriceConfigError, _plan(minimum="-1e9999999999")),
        (load_price_book, PriceConfigError, _plan(minimum="1e-999999")),
        (
            load_price_book,
            PriceConfigError,
            _plan(charge='{model: per_unit, unit_price: "1e999999"}'),
        ),
        (load_meters, MeterConfigError, WEIGHTED),
        (load_grants, CreditConfigError, _grant(amount="1e999999999999")),
        # an unhashable model: TypeError from `in`
        (load_price_book, PriceConfigError, _plan(charge='{model: [per_unit], unit_price: "1"}')),
        (load_price_book, PriceConfigError, _plan(charge='{model: {a: 1}, unit_price: "1"}')),
        # in range as written, not in UTC: OverflowError from astimezone
        (load_price_book, PriceConfigError, _plan(effective_from='"0001-01-01T00:00:00+01:00"')),
        (load_price_book, PriceConfigError, _plan(effective_from="0001-01-01 00:00:00 +01:00")),
        (load_subscriptions, SubscriptionConfigError, _sub(start="0001-01-01T00:00:00+01:00")),
        (load_subscriptions, SubscriptionConfigError, _sub(end="9999-12-31T23:59:59-01:00")),
        (
            load_subscriptions,
            SubscriptionConfigError,
            _sub(plan_changes=[{"plan": "q", "requested_at": "9999-12-31T23:59:59-01:00"}]),
        ),
        (load_grants, CreditConfigError, _grant(effective_at="0001-01-01T00:00:00+01:00")),
        (load_grants, CreditConfigError, _grant(expires_at="9999-12-31T23:59:59-01:00")),
    ],
)
def test_out_of_range_values_raise_the_loaders_error(tmp_path: Path, load, error, text):
    p = tmp_path / "defs.yaml"
    p.write_text(text)
    with pytest.raises(error) as exc:
        load(p)
    message = str(exc.value)
    assert message.startswith(f"{p}: ") and len(message) < 400, message


def test_decimals_in_range_still_load(tmp_path: Path):
    p = tmp_path / "prices.yaml"
    p.write_text(_plan(charge='{model: per_unit, unit_price: "0.000000000001"}', minimum="1e20"))
    assert load_price_book(p).plan("p").versions[0].minimum == Decimal("1e20")
