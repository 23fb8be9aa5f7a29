"""Stage 2: validation and every meter's measurement of an event, as generated SQL.

The rules are meterflow.decoding.validate's, in its order, and the first failing one names the
dead-letter reason: the decode's own verdict `decode_status` (UNDECODABLE, UNKNOWN_SCHEMA,
OVERSIZED, MISSING_FIELD), then the time bounds against the Kafka record time, then each meter that
selects the event, in file order: its quantity (MF_MEASURE: MISSING_QUANTITY,
NON_NUMERIC_QUANTITY, NAN_QUANTITY, INFINITE_QUANTITY, NEGATIVE_QUANTITY,
UNKNOWN_MULTIPLIER_KEY, QUANTITY_OUT_OF_RANGE) and its unique property. An event any selecting
meter cannot measure is dead-lettered whole.

Per meter i the row carries only what its aggregation needs: m{i}_d (dimensions JSON; NULL when
the meter does not select the event), m{i}_q (quantity), m{i}_u (unique key), m{i}_l (latest
key: event time, then event id, then the quantity, so that string MAX picks the LATEST event).
"""

from __future__ import annotations

from collections.abc import Sequence

from jobs.streaming.sql import literal
from meterflow.decoding import Limits
from meterflow.meters import Aggregation, Meter, PropertyFilter


def prop(name: str) -> str:
    return f"properties[{literal(name)}]"


def filter_sql(f: PropertyFilter) -> str:
    if f.op == "exists":
        return f"{prop(f.property)} IS {'NOT ' if f.exists else ''}NULL"
    values = ", ".join(literal(v) for v in sorted(f.values))
    member = f"COALESCE({prop(f.property)} IN ({values}), FALSE)"
    return member if f.op == "in" else f"NOT {member}"


def selects_sql(m: Meter) -> str:
    return " AND ".join([f"event_name = {literal(m.event_name)}", *map(filter_sql, m.filters)])


def dimensions_sql(m: Meter) -> str:
    if not m.group_by:
        return "'{}'"
    args = ", ".join(f"{literal(k)}, COALESCE({prop(k)}, '')" for k in sorted(m.group_by))
    return f"MF_JSON({args})"


def measure_sql(m: Meter) -> str | None:
    """MF_MEASURE's call for a meter with a quantity: ROW<reason, quantity>."""
    spec = m.quantity
    if spec is None:
        return None
    raw = "CAST(event_value AS STRING)" if spec.source == "value" else prop(spec.property or "")
    allow = "TRUE" if spec.allow_negative else "FALSE"
    mult = spec.multiply_by
    if mult is None:
        return f"MF_MEASURE({raw}, {allow}, FALSE, CAST(NULL AS STRING))"
    default = "CAST(NULL AS STRING)" if mult.default is None else literal(f"{mult.default:f}")
    whens = " ".join(
        f"WHEN {literal(k)} THEN {literal(f'{v:f}')}" for k, v in sorted(mult.table.items())
    )
    factor = f"CASE {prop(mult.property)} {whens} ELSE {default} END"
    return f"MF_MEASURE({raw}, {allow}, TRUE, {factor})"


def measured_sql(meters: Sequence[Meter], source: str) -> str:
    """`source` plus each quantity meter's measurement (mq{i}), computed once per event."""
    calls = [
        f"{call} AS mq{i}" for i, m in enumerate(meters) if (call := measure_sql(m)) is not None
    ]
    extra = "".join(f", {c}" for c in calls)
    return f"SELECT *{extra} FROM {source}"


def status_sql(meters: Sequence[Meter], limits: Limits) -> str:
    whens = [
        "WHEN decode_status <> 'OK' THEN decode_status",
        f"WHEN ts_ms > record_ts_ms + {limits.max_future_skew_ms} THEN 'TIMESTAMP_IN_FUTURE'",
        f"WHEN ts_ms < record_ts_ms - {limits.max_age_ms} THEN 'TIMESTAMP_TOO_OLD'",
    ]
    for i, m in enumerate(meters):
        sel = selects_sql(m)
        if m.quantity is not None:
            whens.append(f"WHEN {sel} AND mq{i}.reason IS NOT NULL THEN mq{i}.reason")
        if m.unique_property is not None:
            whens.append(
                f"WHEN {sel} AND {prop(m.unique_property)} IS NULL THEN 'MISSING_QUANTITY'"
            )
    return "CASE " + " ".join(whens) + " ELSE 'OK' END"


def detail_sql() -> str:
    """Why, in words; the time rules name both instants like the Python reference."""
    return (
        "CASE WHEN decode_status <> 'OK' THEN decode_detail "
        "WHEN verdict = 'TIMESTAMP_IN_FUTURE' THEN CONCAT('event time ', CAST(ts_ms AS STRING), "
        "' is ', CAST(ts_ms - record_ts_ms AS STRING), ' ms after the record time ', "
        "CAST(record_ts_ms AS STRING)) "
        "WHEN verdict = 'TIMESTAMP_TOO_OLD' THEN CONCAT('event time ', CAST(ts_ms AS STRING), "
        "' is ', CAST(record_ts_ms - ts_ms AS STRING), ' ms before the record time') "
        "WHEN verdict <> 'OK' THEN CONCAT('measuring the event: ', verdict) END"
    )


def meter_columns(m: Meter, i: int) -> list[tuple[str, str]]:
    """(column, SQL expression) of meter i, NULL when the meter does not select the event."""
    sel = selects_sql(m)
    cols = [(f"m{i}_d", f"CASE WHEN {sel} THEN {dimensions_sql(m)} END")]
    if m.aggregation.needs_quantity:
        cols.append((f"m{i}_q", f"CASE WHEN {sel} THEN mq{i}.quantity END"))
    if m.aggregation is Aggregation.UNIQUE_COUNT:
        cols.append((f"m{i}_u", f"CASE WHEN {sel} THEN {prop(m.unique_property or '')} END"))
    if m.aggregation is Aggregation.LATEST:
        key = (
            f"CONCAT(LPAD(CAST(ts_ms AS STRING), 15, '0'), '|', event_id, CHR(0), "
            f"CAST(mq{i}.quantity AS STRING))"
        )
        cols.append((f"m{i}_l", f"CASE WHEN {sel} THEN {key} END"))
    return cols


def validated_sql(meters: Sequence[Meter], limits: Limits, source: str) -> str:
    """One row per record: its verdict (`status` 'OK' or the reason), the event, its event time
    `ts` (the source's rowtime) and the per-meter columns."""
    per_meter = [c for i, m in enumerate(meters) for c in meter_columns(m, i)]
    meter_cols = "".join(f", {expr} AS {name}" for name, expr in per_meter)
    return (
        "SELECT verdict AS status, "
        + detail_sql()
        + " AS detail, payload, kafka_topic, kafka_partition, kafka_offset, record_ts_ms, "
        "event_id, event_name, customer_id, ts_ms, event_value, "
        "MF_JSON(properties) AS properties_json, source, schema_id, ts, pt"
        f"{meter_cols} FROM (SELECT *, {status_sql(meters, limits)} AS verdict "
        f"FROM ({measured_sql(meters, source)}))"
    )
