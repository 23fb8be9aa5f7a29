"""Ingest (pure): a JSON batch -> per-event verdicts, with the SDK's and the job's rules.

Each event is built by the SDK's `build_event` (the checks `UsageClient.track()` makes) and then
judged by the job's own `decoding.validate` against the meters, with the record time the
producer will give it: an event the API accepts is one the job accepts (unless its event_id
was seen within the dedup horizon), and a rejected one carries the dead-letter reason the job
would have given it, or INVALID_EVENT with the SDK's message.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from meterflow.decoding import Accepted, Limits, validate
from meterflow.events import UsageEvent
from meterflow.meters import Meter
from meterflow.sdk.errors import InvalidEvent
from meterflow.sdk.records import build_event, encode_event, epoch_ms

MAX_EVENTS = 1000
LIMITS = Limits()  # the SDK's and the job's defaults
# 1,000 events of a few hundred bytes each fit many times over; a body this size is a client
# bug, and reading it whole would let one request hold that much memory.
MAX_BODY_BYTES = 4 << 20
FIELDS = frozenset(
    {"event_id", "event_name", "customer_id", "timestamp", "value", "properties", "source"}
)
# reasons of our own (the others are the job's, meterflow.decoding.DEAD_LETTER_REASONS)
INVALID_EVENT, UNKNOWN_FIELD, DUPLICATE_IN_BATCH = (
    "INVALID_EVENT",
    "UNKNOWN_FIELD",
    "DUPLICATE_IN_BATCH",
)


class BadRequest(ValueError):
    """The request as a whole is unusable (HTTP 400, or 413 with `too_large`)."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


class _JsonFraction(str):
    """A JSON number with a fraction or exponent: a binary float in most clients' JSON
    libraries before it was sent, so its digits may not be the ones meant."""


@dataclass(frozen=True)
class Verdict:
    index: int
    event_id: str | None
    event: UsageEvent | None  # set when accepted
    reason: str | None = None
    detail: str | None = None

    @property
    def accepted(self) -> bool:
        return self.event is not None


def parse_body(body: bytes) -> list[Any]:
    """The `events` list of a request body; BadRequest for anything else."""
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(f"body is {len(body)} bytes, limit {MAX_BODY_BYTES}", too_large=True)
    try:
        doc = json.loads(body, parse_float=_JsonFraction, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BadRequest(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict) or set(doc) != {"events"} or not isinstance(doc["events"], list):
        raise BadRequest('body must be {"events": [event, ...]}')
    events = doc["events"]
    if not events:
        raise BadRequest("events is empty")
    if len(events) > MAX_EVENTS:
        raise BadRequest(f"{len(events)} events in one request, limit {MAX_EVENTS}", too_large=True)
    return events


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def judge_batch(
    items: Sequence[Any], meters: Sequence[Meter], now: datetime, limits: Limits = LIMITS
) -> list[Verdict]:
    """One verdict per item, in order. `now` is the record time the accepted events get."""
    out: list[Verdict] = []
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        v = judge(i, item, meters, now, limits)
        if v.accepted and v.event_id is not None:
            if v.event_id in first:
                # the job would keep the first copy only; say so rather than accept it twice
                v = Verdict(
                    i, v.event_id, None, DUPLICATE_IN_BATCH,
                    f"event_id repeats event {first[v.event_id]} of this request",
                )  # fmt: skip
            else:
                first[v.event_id] = i
        out.append(v)
    return out


def judge(
    index: int, item: Any, meters: Sequence[Meter], now: datetime, limits: Limits = LIMITS
) -> Verdict:
    if not isinstance(item, dict):
        return Verdict(index, None, None, INVALID_EVENT, "an event is a JSON object")
    raw_id = item.get("event_id")
    event_id = raw_id if type(raw_id) is str else None
    unknown = sorted(set(item) - FIELDS)
    if unknown:
        return Verdict(index, event_id, None, UNKNOWN_FIELD, f"unknown fields: {unknown}")
    try:
        event = build_event(
            _text(item, "event_name", required=True),
            _text(item, "customer_id", required=True),
            _value(item.get("value")),
            _properties(item.get("properties")),
            _timestamp(item.get("timestamp")),
            _text(item, "event_id"),
            _text(item, "source"),
            now=now,
            limits=limits,
        )
    except InvalidEvent as exc:
        return Verdict(index, event_id, None, INVALID_EVENT, str(exc))
    size = len(encode_event(event, epoch_ms(now)))
    if size > limits.max_record_bytes:  # the SDK's own size check (UsageClient.track)
        return Verdict(
            index, event.event_id, None, "OVERSIZED",
            f"event is {size} bytes encoded, limit {limits.max_record_bytes}",
        )  # fmt: skip
    verdict = validate(event.to_record(), 0, epoch_ms(now), meters, limits)
    if not isinstance(verdict, Accepted):
        return Verdict(index, event.event_id, None, verdict.reason, verdict.detail)
    return Verdict(index, event.event_id, event)


def _text(item: dict, name: str, *, required: bool = False) -> Any:
    v = item.get(name)
    if v is None and required:
        raise InvalidEvent(f"{name} is required")
    if v is not None and type(v) is not str:  # a _JsonFraction is a str too
        raise InvalidEvent(f"{name} must be a string, got {_json_type(v)}")
    return v


def _value(v: Any) -> Decimal | str | int | None:
    if isinstance(v, _JsonFraction):
        raise InvalidEvent(
            f'value {v} must be written as a decimal string ("{v}"), not a JSON number: most '
            "JSON libraries hold such numbers as binary floats"
        )
    if v is None or isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)):
        return v  # build_event parses strings and checks finiteness and range
    raise InvalidEvent(f"value must be a decimal string, got {_json_type(v)}")


def _properties(v: Any) -> dict[str, str] | None:
    if v is None:
        return None
    if not isinstance(v, dict) or not all(type(x) is str for x in v.values()):
        raise InvalidEvent("properties must be an object of strings")
    return v


def _timestamp(v: Any) -> datetime | None:
    """RFC 3339 with a zone (Z or an offset); absent means now, as track() does."""
    if v is None:
        return None
    if not isinstance(v, str):
        raise InvalidEvent(f"timestamp must be an RFC 3339 string, got {_json_type(v)}")
    try:
        ts = datetime.fromisoformat(v)
    except ValueError:
        raise InvalidEvent(f"timestamp {v!r} is not RFC 3339") from None
    if ts.utcoffset() is None:
        raise InvalidEvent(f"timestamp {v!r} has no zone: add Z or an offset")
    return ts


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "a boolean"
    return {dict: "an object", list: "an array", int: "a number", _JsonFraction: "a number"}.get(
        type(v), type(v).__name__
    )
