"""The streaming job's SQL builders, tested as strings (the job itself runs in the integration
tests): what each stage generates from the meter definitions."""

from __future__ import annotations

from decimal import Decimal

import pytest

from jobs.streaming import dedup, sinks, source, validation, windows
from jobs.streaming.functions import register_sql
from jobs.streaming.sql import interval, literal
from meterflow.decoding import Limits
from meterflow.meters import Aggregation, load_meters, parse_meter
from meterflow.settings import REPO_ROOT, Settings

SCENARIO = load_meters(REPO_ROOT / "schemas" / "meters" / "scenario.yaml")


def meter(**fields):
    return parse_meter({"id": "m", "version": 1, "event_name": "e", **fields}, "<test>")


@pytest.mark.parametrize(
    ("text", "sql"),
    [
        ("plain", "'plain'"),
        ("it's", "'it''s'"),
        ("/health", "'/health'"),
        ("é", "U&'\\00E9'"),
        ("a'b\n", "U&'a\\0027b\\000A'"),
        ("\\", "'\\'"),  # printable ASCII: no escape character in a plain literal
        ("x\\é", "U&'x\\005C\\00E9'"),
        ("🙂", "U&'\\+01F642'"),
    ],
)
def test_literals_quote_every_character(text, sql):
    assert literal(text) == sql


def test_intervals_of_any_length():
    assert interval(5) == "INTERVAL '0 00:00:05' DAY TO SECOND"
    assert interval(300) == "INTERVAL '0 00:05:00' DAY TO SECOND"  # SECOND alone caps at 99
    assert interval(90061) == "INTERVAL '1 01:01:01' DAY TO SECOND"


def test_filters_follow_property_filter_semantics():
    m = meter(
        aggregation="COUNT",
        filters={"endpoint": {"not_in": ["/health"]}, "tier": {"in": ["b", "a"]}},
    )
    assert validation.selects_sql(m) == (
        "event_name = 'e' AND NOT COALESCE(properties['endpoint'] IN ('/health'), FALSE) "
        "AND COALESCE(properties['tier'] IN ('a', 'b'), FALSE)"
    )
    gone = meter(aggregation="COUNT", filters={"debug": {"exists": False}})
    assert validation.selects_sql(gone) == "event_name = 'e' AND properties['debug'] IS NULL"


def test_dimensions_are_sorted_keys_with_empty_defaults():
    m = meter(aggregation="COUNT", group_by=["region", "model"])
    assert validation.dimensions_sql(m) == (
        "MF_JSON('model', COALESCE(properties['model'], ''), "
        "'region', COALESCE(properties['region'], ''))"
    )
    assert validation.dimensions_sql(meter(aggregation="COUNT")) == "'{}'"


def test_measurements():
    assert validation.measure_sql(meter(aggregation="COUNT")) is None
    value = meter(aggregation="SUM", quantity={"from": "value"})
    assert validation.measure_sql(value) == (
        "MF_MEASURE(CAST(event_value AS STRING), FALSE, FALSE, CAST(NULL AS STRING))"
    )
    weighted = meter(
        aggregation="SUM",
        quantity={
            "from": "property",
            "property": "gpus",
            "allow_negative": True,
            "multiply_by": {"property": "model", "table": {"small": "1", "large": "4.5"}},
        },
    )
    assert validation.measure_sql(weighted) == (
        "MF_MEASURE(properties['gpus'], TRUE, TRUE, CASE properties['model'] "
        "WHEN 'large' THEN '4.5' WHEN 'small' THEN '1' ELSE CAST(NULL AS STRING) END)"
    )
    with_default = meter(
        aggregation="SUM",
        quantity={"multiply_by": {"property": "k", "table": {"a": "2"}, "default": "0.5"}},
    )
    assert validation.measure_sql(with_default).endswith("WHEN 'a' THEN '2' ELSE '0.5' END)")


def test_the_verdict_checks_rules_in_the_reference_order():
    sql = validation.status_sql(SCENARIO, Limits(max_future_skew_ms=1000, max_age_ms=2000))
    order = [
        "WHEN decode_status <> 'OK' THEN decode_status",
        "WHEN ts_ms > record_ts_ms + 1000 THEN 'TIMESTAMP_IN_FUTURE'",
        "WHEN ts_ms < record_ts_ms - 2000 THEN 'TIMESTAMP_TOO_OLD'",
        "properties['user_id'] IS NULL THEN 'MISSING_QUANTITY'",  # active_users (meter 1)
        "mq2.reason IS NOT NULL THEN mq2.reason",  # tokens
        "mq3.reason IS NOT NULL THEN mq3.reason",  # tokens_weighted
    ]
    positions = [sql.index(part) for part in order]
    assert positions == sorted(positions)
    assert sql.endswith(" ELSE 'OK' END")
    assert "mq0" not in sql  # a COUNT meter measures nothing


def test_each_meter_gets_only_the_columns_its_aggregation_needs():
    names = {
        m.id: [name for name, _ in validation.meter_columns(m, i)] for i, m in enumerate(SCENARIO)
    }
    assert names["calls"] == ["m0_d"]
    assert names["active_users"] == ["m1_d", "m1_u"]
    assert names["tokens"] == ["m2_d", "m2_q"]
    assert names["gpu_latest"] == ["m7_d", "m7_q", "m7_l"]


def test_latest_key_orders_by_time_then_event_id():
    latest = dict(validation.meter_columns(meter(aggregation="LATEST", quantity={}), 0))["m0_l"]
    assert "CONCAT(LPAD(CAST(ts_ms AS STRING), 15, '0'), '|', event_id, CHR(0), " in latest


@pytest.mark.parametrize(
    ("aggregation", "sql"),
    [
        (Aggregation.COUNT, "CAST(n AS DECIMAL(38, 12))"),
        (Aggregation.UNIQUE_COUNT, "CAST(uc AS DECIMAL(38, 12))"),
        (Aggregation.SUM, "s"),
        (Aggregation.MIN, "mn"),
        (Aggregation.MAX, "mx"),
        (Aggregation.AVG, "MF_DIV(s, n)"),
        (
            Aggregation.LATEST,
            "CAST(SUBSTRING(lk FROM POSITION(CHR(0) IN lk) + 1) AS DECIMAL(38, 12))",
        ),
    ],
)
def test_window_quantities(aggregation, sql):
    assert windows.quantity_sql(aggregation) == sql


def test_one_exploded_row_per_meter_and_windows_per_size():
    exploded = windows.exploded_sql(SCENARIO, "on_time")
    # one row per meter, grouped under the event name the meter selects, and one empty row
    # for events no meter selects
    assert exploded.count("CAST(ROW(") == len(SCENARIO) + 1
    assert "CASE e.event_name WHEN 'api_call' THEN ARRAY[CAST(ROW('calls', 3, 60, m0_d, " in (
        exploded
    )
    assert "WHEN 'llm_tokens' THEN ARRAY[CAST(ROW('tokens', 1, 60, m2_d, m2_q, " in exploded
    assert "CAST(ROW('tokens_weighted', 2, 3600, m3_d, m3_q, " in exploded
    assert exploded.endswith("WHERE x.dims IS NOT NULL")
    minute = windows.partials_sql(SCENARIO, 60, "metered")
    hour = windows.partials_sql(SCENARIO, 3600, "metered")
    assert "WHERE window_s = 60 " in minute and "WHERE window_s = 3600 " in hour
    # the distinct count only where a UNIQUE_COUNT meter of that size needs it
    assert "CASE WHEN meter IN ('active_users') THEN COUNT(DISTINCT u) END AS uc" in hour
    assert "CAST(NULL AS BIGINT) AS uc" in minute
    assert "GROUP BY customer_id, meter, meter_version, dims, TUMBLE(ts, " in minute
    out = windows.windows_sql(SCENARIO, "window_partials")
    assert "WHEN 'calls' THEN CAST(n AS DECIMAL(38, 12))" in out
    assert "WHEN 'active_users' THEN CAST(uc AS DECIMAL(38, 12))" in out
    assert "n AS event_count" in out and "n AS revision" in out


def test_lateness_and_dedup():
    assert "ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY pt ASC)" in dedup.unique_sql("t")
    late = dedup.classified_sql("u", 300)
    assert "COALESCE(ts < CURRENT_WATERMARK(ts) - INTERVAL '0 00:05:00' DAY TO SECOND, FALSE)" in (
        late
    )


def test_sinks_are_transactional_and_keyed_by_customer():
    settings = Settings(events_topic="ev")
    ddls = {s.name: sinks.sink_ddl(s, settings, _opts()) for s in sinks.sinks(settings)}
    for ddl in ddls.values():
        assert "'sink.delivery-guarantee' = 'exactly-once'" in ddl
    assert "'topic' = 'ev-dlq'" in ddls["dlq_sink"]
    assert "'value.format' = 'debezium-json'" in ddls["windows_sink"]
    assert "'value.fields-include' = 'EXCEPT_KEY'" in ddls["late_sink"]
    assert "'value.fields-include' = 'ALL'" in ddls["accepted_sink"]


def test_the_source_decodes_and_puts_the_watermark_on_validated_time():
    ddl = source.source_ddl(Settings(events_topic="ev"), _opts())
    assert "'properties.isolation.level' = 'read_committed'" in ddl
    assert "'value.format' = 'meterflow-avro'" in ddl
    assert "WATERMARK FOR ts AS ts - INTERVAL '0 00:00:05' DAY TO SECOND" in ddl
    limits = Limits(max_future_skew_ms=1000, max_age_ms=2000)
    valid = source.event_time_sql(limits)
    assert "decode_status = 'OK' AND ts_ms <= " in valid
    assert "+ 1000 AND ts_ms >= " in valid and "- 2000 THEN TO_TIMESTAMP_LTZ(ts_ms, 3)" in valid
    assert valid.endswith("ELSE TO_TIMESTAMP_LTZ(0, 3) END AS TIMESTAMP_LTZ(3))")
    assert all("LANGUAGE JAVA" in stmt for stmt in register_sql())


def test_multiplier_factors_are_written_exactly():
    m = meter(
        aggregation="SUM",
        quantity={"multiply_by": {"property": "k", "table": {"a": "0.000000000001"}}},
    )
    assert m.quantity.multiply_by.table["a"] == Decimal("1E-12")
    assert "WHEN 'a' THEN '0.000000000001'" in validation.measure_sql(m)


def _opts():
    from jobs.streaming.options import JobOptions

    return JobOptions(group_id="g")
