"""Usage events as the SDK builds them from track() arguments and as they are stored in the
spool (JSON, with the time the client accepted them)."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from meterflow.decoding import Limits
from meterflow.events import UsageEvent
from meterflow.sdk.errors import InvalidEvent

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_event(event: UsageEvent, accepted_ms: int) -> bytes:
    return json.dumps(
        {
            "event_id": event.event_id,
            "event_name": event.event_name,
            "customer_id": event.customer_id,
            "timestamp_ms": epoch_ms(event.timestamp),
            "value": None if event.value is None else str(event.value),
            "properties": event.properties,
            "source": event.source,
            "accepted_ms": accepted_ms,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def decode_event(payload: bytes) -> tuple[UsageEvent, int]:
    d = json.loads(payload)
    event = UsageEvent(
        event_id=d["event_id"],
        event_name=d["event_name"],
        customer_id=d["customer_id"],
        timestamp=EPOCH + timedelta(milliseconds=d["timestamp_ms"]),
        value=None if d["value"] is None else Decimal(d["value"]),
        properties=d["properties"],
        source=d["source"],
    )
    return event, d["accepted_ms"]


def epoch_ms(ts: datetime) -> int:
    return (ts - EPOCH) // timedelta(milliseconds=1)


def build_event(
    event_name: str,
    customer_id: str,
    value: Decimal | int | float | str | None,
    properties: Mapping[str, str] | None,
    timestamp: datetime | None,
    event_id: str | None,
    source: str | None,
    *,
    now: datetime,
    limits: Limits,
) -> UsageEvent:
    """Validate track()'s arguments the way the pipeline will, without any I/O."""
    for name, text in (("event_name", event_name), ("customer_id", customer_id)):
        if not isinstance(text, str) or not text.strip():
            raise InvalidEvent(f"{name} must be a non-empty string, got {text!r}")
    if event_id is None:
        event_id = str(uuid.uuid4())
    elif not isinstance(event_id, str) or not event_id.strip():
        raise InvalidEvent(f"event_id must be a non-empty string, got {event_id!r}")
    if source is not None and not isinstance(source, str):
        raise InvalidEvent(f"source must be a string, got {source!r}")
    props = dict(properties or {})
    for k, v in props.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidEvent(f"properties must map strings to strings, got {k!r}: {v!r}")
    if timestamp is None:
        timestamp = now
    elif not isinstance(timestamp, datetime) or timestamp.tzinfo is None:
        raise InvalidEvent(f"timestamp must be a timezone-aware datetime, got {timestamp!r}")
    # Avro timestamp-millis: keep what will be stored, so a replay sends the identical event.
    timestamp = EPOCH + timedelta(milliseconds=epoch_ms(timestamp.astimezone(UTC)))
    skew_ms = epoch_ms(timestamp) - epoch_ms(now)
    if skew_ms > limits.max_future_skew_ms:
        raise InvalidEvent(f"timestamp {timestamp.isoformat()} is too far in the future")
    if -skew_ms > limits.max_age_ms:
        raise InvalidEvent(f"timestamp {timestamp.isoformat()} is older than the pipeline keeps")
    event = UsageEvent(
        event_id, event_name, customer_id, timestamp, _quantity(value), props, source
    )
    try:
        event.to_record()  # the exact conversion the sender will do: fail here, not in the spool
    except (InvalidOperation, ArithmeticError) as exc:
        raise InvalidEvent(f"value {value!r} does not fit the event's decimal(38,12)") from exc
    return event


def _quantity(value: Decimal | int | float | str | None) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float | str):
        raise InvalidEvent(f"value must be a Decimal, int, float or numeric string, got {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidEvent(f"value must be finite, got {value!r}")
        value = repr(value)  # 0.1 means 0.1, not its binary expansion
    try:
        q = Decimal(value)
    except InvalidOperation:
        raise InvalidEvent(f"value {value!r} is not a number") from None
    if not q.is_finite():
        raise InvalidEvent(f"value must be finite, got {value!r}")
    return q
