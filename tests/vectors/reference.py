"""The Python reference, called the way the JVM functions are specified (java/, decision 0009).

Each function maps one vector's inputs to the outputs the vector records; generate.py writes the
vectors with them and tests/unit/test_vectors.py re-checks every vector against them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from meterflow.aggregation import Partials, window_quantity
from meterflow.decoding import (
    Accepted,
    Limits,
    SchemaCache,
    SchemaNotFound,
    decode,
    dimensions_json,
)
from meterflow.events import QUANTUM, WIDE, schema_text
from meterflow.meters import Aggregation, Meter, Multiplier, QuantityError, QuantitySpec

# The JVM decoder stops before the time-bound checks (they are SQL): bounds nothing can exceed.
_NO_BOUNDS = {"max_future_skew_ms": 10**30, "max_age_ms": 10**30}
MAX_RECORD_BYTES = Limits().max_record_bytes


def python_decode(
    payload: bytes | None, schemas: Mapping[int, str], max_record_bytes: int = MAX_RECORD_BYTES
) -> dict[str, Any]:
    """decode() with no meters, as the fields DecodeConfluentAvro returns (values as text)."""

    def fetch(schema_id: int) -> str:
        if schema_id not in schemas:
            raise SchemaNotFound(schema_id)
        return schemas[schema_id]

    cache = SchemaCache(fetch, schema_text(1))
    v = decode(payload, 0, cache, [], Limits(max_record_bytes=max_record_bytes, **_NO_BOUNDS))
    if not isinstance(v, Accepted):
        return {"status": v.reason}
    return {
        "status": "OK",
        "schema_id": v.schema_id,
        "event_id": v.event_id,
        "event_name": v.event_name,
        "customer_id": v.customer_id,
        "ts_ms": v.timestamp_ms,
        "event_value": None if v.value is None else str(v.value),
        "properties": v.properties,
        "properties_json": json.dumps(v.properties, sort_keys=True, separators=(",", ":")),
        "source": v.source,
    }


def python_measure(
    raw: str | None, allow_negative: bool, has_multiplier: bool, factor: str | None
) -> dict[str, Any]:
    """Meter.measure of a property quantity + validate's quantize, as MeasureQuantity returns it.

    `raw` None is an absent property; `factor` None a key missing from the multiplier table
    (no default)."""
    mult = None
    if has_multiplier:
        table = {} if factor is None else {"k": Decimal(factor)}
        mult = Multiplier(property="mk", table=table)
    spec = QuantitySpec(
        source="property", property="q", allow_negative=allow_negative, multiply_by=mult
    )
    meter = Meter(id="m", version=1, event_name="e", aggregation=Aggregation.SUM, quantity=spec)
    props = {"mk": "k"}
    if raw is not None:
        props["q"] = raw
    try:
        q = meter.measure(None, props)
    except QuantityError as exc:
        return {"reason": exc.reason, "quantity": None}
    assert q is not None
    return {"reason": None, "quantity": str(q.quantize(QUANTUM, context=WIDE))}


def python_json_map(m: Mapping[str, str] | None) -> str:
    """jobs/metering.py's properties column (a missing map is the decoder's empty dict)."""
    return json.dumps(dict(m or {}), sort_keys=True, separators=(",", ":"))


def python_json_pairs(pairs: Sequence[str]) -> str:
    """decoding.dimensions_json of (key, value) pairs given flat, as the varargs form takes them."""
    it = iter(pairs)
    return dimensions_json(list(zip(it, it, strict=True)))


def python_divide(total: str, count: int) -> str:
    """AVG of one window (aggregation.window_quantity)."""
    return str(window_quantity(Aggregation.AVG, Partials(count, q_sum=Decimal(total))))
