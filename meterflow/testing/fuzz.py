"""A fuzz stream for the events topic: valid events mixed with every kind of bad record a
producer (buggy, hostile or merely old) can write — random bytes, mutated and truncated valid
Avro, wrong and unknown schema ids, huge strings and maps, multi-megabyte payloads, extreme
decimals, timestamps years away, unicode and control characters in ids, tombstones, duplicates.

It says nothing about what the job must make of each record: the test decodes what landed in
the topic with the Python reference decoder (`meterflow.decoding`) and holds the job to that.
Deterministic for a seed.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import fastavro

from meterflow.events import schema_text
from meterflow.wire import confluent_frame

EPOCH_MS_YEAR = 365 * 24 * 3600 * 1000

# the same wire format as the event schema, with `value` as plain bytes: any two's complement
# unscaled value can be written, including ones no decimal(38, 12) can hold
_RAW_VALUE = json.loads(schema_text(1))
for _f in _RAW_VALUE["fields"]:
    if _f["name"] == "value":
        _f["type"] = ["null", "bytes"]
_RAW_SCHEMA = fastavro.parse_schema(_RAW_VALUE)

# kind -> share of the stream (the 10 MB payloads are a count of their own)
MIX: dict[str, float] = {
    "valid": 0.28,
    "duplicate": 0.05,
    "random_bytes": 0.07,
    "framed_random": 0.07,
    "mutated": 0.20,
    "truncated": 0.07,
    "wrong_schema": 0.03,
    "unknown_schema": 0.03,
    "huge_string": 0.02,
    "huge_map": 0.01,
    "extreme_decimal": 0.05,
    "far_timestamp": 0.04,
    "odd_ids": 0.075,
    "tombstone": 0.005,
}
EVENT_NAMES = ("api_call", "llm_tokens", "storage_gb", "unmetered")
MODELS = ("small", "large", "huge")
# ids a careless or hostile producer sends: controls, NUL, separators, RTL marks, combining
# characters, emoji, whitespace of every kind (some of it not whitespace to every language)
ODD_CHARS = (
    "\x00", "\x01", "\x07", "\t", "\n", "\r", "\x1b", "\x1c", "\x1f", "\x7f", "\x85", "\xa0",
    "\u1680", "\u2000", "\u2003", "\u2028", "\u2029", "\u200b", "\u200e", "\u202e", "\u3000",
    "\ufeff", "\u0301", "\U0001f4b8", "\U0010ffff", "é", "ß", "İ", "'", '"', "\\", ";", "--",
    "%", "{", "}", "`", " ",
)  # fmt: skip


@dataclass(frozen=True)
class FuzzRecord:
    key: bytes | None
    value: bytes | None
    timestamp_ms: int  # the Kafka record timestamp
    kind: str


def body(record: dict[str, Any]) -> bytes:
    """Avro binary of an event in the v1 layout, `value` given as raw unscaled bytes."""
    out = io.BytesIO()
    fastavro.schemaless_writer(out, _RAW_SCHEMA, record)
    return out.getvalue()


def unscaled(n: int) -> bytes:
    """Big-endian two's complement, as Avro's decimal logical type stores the unscaled value."""
    return n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big", signed=True)


class _Gen:
    def __init__(self, rng: random.Random, schema_id: int, other_ids: tuple[int, ...]) -> None:
        self.rng = rng
        self.schema_id = schema_id
        self.other_ids = other_ids
        self.n = 0
        self.sent: list[FuzzRecord] = []  # valid records, for duplicates and mutations

    def text(self, n: int) -> str:
        return self.rng.randbytes((n + 1) // 2).hex()[:n]

    def event(self, record_ts: int) -> dict[str, Any]:
        r = self.rng
        self.n += 1
        name = r.choice(EVENT_NAMES)
        value = None
        if name != "api_call" or r.random() < 0.1:
            value = unscaled(r.randrange(-(10**15), 10**18) if r.random() < 0.05 else
                             r.randrange(0, 10**18))  # fmt: skip
        props = {"region": r.choice(("eu", "us", "ap")), "model": r.choice(MODELS)}
        if r.random() < 0.2:
            props["tokens"] = r.choice(("12", "0.5", "-3", "abc", "1e3", "NaN", ""))
        return {
            "event_id": f"fz-{self.n}-{self.text(6)}",
            "event_name": name,
            "customer_id": f"cust-{r.randrange(8)}",
            "timestamp": record_ts - r.randrange(0, 20_000),
            "value": value,
            "properties": props,
            "source": r.choice((None, "fuzz/1")),
        }

    def framed(self, rec: dict[str, Any], schema_id: int | None = None) -> bytes:
        return confluent_frame(self.schema_id if schema_id is None else schema_id, body(rec))

    def valid(self, ts: int, kind: str = "valid", rec: dict[str, Any] | None = None) -> FuzzRecord:
        rec = rec or self.event(ts)
        out = FuzzRecord(rec["customer_id"].encode(), self.framed(rec), ts, kind)
        if kind == "valid":
            self.sent.append(out)
        return out

    def random_key(self) -> bytes | None:
        r = self.rng
        return None if r.random() < 0.3 else r.randbytes(r.randrange(0, 40))

    def make(self, kind: str, ts: int) -> FuzzRecord:  # one case per kind
        r = self.rng
        match kind:
            case "valid":
                return self.valid(ts)
            case "duplicate" if self.sent:
                # a producer's retry: the same key and bytes, later
                prev = r.choice(self.sent)
                return FuzzRecord(prev.key, prev.value, ts, kind)
            case "random_bytes":
                return FuzzRecord(self.random_key(), r.randbytes(r.randrange(0, 300)), ts, kind)
            case "framed_random":
                frame = confluent_frame(self.schema_id, r.randbytes(r.randrange(0, 300)))
                return FuzzRecord(self.random_key(), frame, ts, kind)
            case "mutated" if self.sent:
                data = bytearray(r.choice(self.sent).value or b"")
                for _ in range(r.randrange(1, 5)):
                    op, at = r.randrange(4), r.randrange(len(data))
                    if op == 0:
                        data[at] ^= 1 << r.randrange(8)
                    elif op == 1:
                        data[at] = r.randrange(256)
                    elif op == 2:
                        data[at:at] = r.randbytes(r.randrange(1, 8))
                    elif len(data) > 6:
                        del data[at : at + r.randrange(1, 4)]
                return FuzzRecord(self.random_key(), bytes(data), ts, kind)
            case "truncated" if self.sent:
                data = r.choice(self.sent).value or b""
                return FuzzRecord(self.random_key(), data[: r.randrange(len(data))], ts, kind)
            case "wrong_schema":
                # a valid v1 body framed with another real schema id (v2, the alert schema)
                rec = self.event(ts)
                return FuzzRecord(b"k", self.framed(rec, r.choice(self.other_ids)), ts, kind)
            case "unknown_schema":
                rec = self.event(ts)
                bad = r.choice((2_000_000_000 + r.randrange(16), 2**31 - 1, 987_654))
                return FuzzRecord(b"k", self.framed(rec, bad), ts, kind)
            case "huge_string":
                rec = self.event(ts)
                where = r.choice(("event_id", "customer_id", "event_name", "prop", "source"))
                big = self.text(r.choice((1_000, 30_000, 65_000, 70_000, 200_000)))
                if where == "prop":
                    rec["properties"]["region"] = big
                else:
                    rec[where] = big
                return self.valid(ts, kind, rec)
            case "huge_map":
                rec = self.event(ts)
                rec["properties"] = {
                    f"k{i}-{self.text(4)}": self.text(12) for i in range(r.randrange(500, 4000))
                }
                return self.valid(ts, kind, rec)
            case "extreme_decimal":
                rec = self.event(ts)
                rec["event_name"] = "llm_tokens"
                rec["value"] = r.choice(
                    (
                        unscaled(10**38 - 1),
                        unscaled(-(10**38) + 1),
                        unscaled(10**38),
                        unscaled(2 ** (8 * r.randrange(17, 64)) - 1),
                        unscaled(-(2 ** (8 * r.randrange(17, 64)))),
                        unscaled(1),
                        unscaled(-1),
                        b"",
                        r.randbytes(r.randrange(1, 80)),
                    )
                )
                return self.valid(ts, kind, rec)
            case "far_timestamp":
                rec = self.event(ts)
                rec["timestamp"] = r.choice(
                    (
                        ts + r.randrange(1, 300) * EPOCH_MS_YEAR,
                        ts - r.randrange(1, 60) * EPOCH_MS_YEAR,
                        ts + 5 * 60 * 1000 + r.randrange(1, 5000),
                        ts - 35 * 24 * 3600 * 1000 - r.randrange(1, 5000),
                        0,
                        -1,
                        2**62,
                        -(2**62),
                        2**63 - 1,
                        -(2**63),
                    )
                )
                return self.valid(ts, kind, rec)
            case "odd_ids":
                rec = self.event(ts)
                for name in r.sample(("event_id", "customer_id", "event_name"), r.randrange(1, 4)):
                    odd = "".join(r.choice(ODD_CHARS) for _ in range(r.randrange(1, 6)))
                    rec[name] = r.choice((odd, rec[name] + odd, odd + rec[name]))
                rec["properties"][r.choice(ODD_CHARS)] = r.choice(ODD_CHARS)
                return self.valid(ts, kind, rec)
            case "tombstone":
                return FuzzRecord(self.random_key(), None, ts, kind)
        return self.valid(ts)  # a kind that needs earlier valid records before there are any


def fuzz_stream(
    count: int,
    schema_id: int,
    other_ids: tuple[int, ...],
    start_ms: int,
    seed: int = 1,
    ten_mb: int = 2,
) -> Iterator[FuzzRecord]:
    """`count` records (`ten_mb` of them 10 MB payloads), record times 10 ms apart from
    `start_ms`; `schema_id` is the registered event schema, `other_ids` other real ids."""
    rng = random.Random(seed)
    gen = _Gen(rng, schema_id, other_ids)
    kinds, weights = zip(*MIX.items(), strict=True)
    big_at = set(rng.sample(range(count), min(ten_mb, count)))
    for i in range(count):
        ts = start_ms + 10 * i
        if i in big_at:
            payload = confluent_frame(schema_id, rng.randbytes(10 * 1024 * 1024))
            yield FuzzRecord(b"big", payload, ts, "payload_10mb")
        else:
            yield gen.make(rng.choices(kinds, weights)[0], ts)


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)
