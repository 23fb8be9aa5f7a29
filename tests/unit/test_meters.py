from decimal import Decimal

import pytest

from meterflow.meters import (
    DEFAULT_METERS_FILE,
    Aggregation,
    MeterConfigError,
    QuantityError,
    Window,
    load_meters,
    parse_meters,
)


def _one(raw):
    return parse_meters({"meters": [raw]}, "meters.yaml")[0]


def test_shipped_meter_file_loads():
    meters = load_meters(DEFAULT_METERS_FILE)
    assert {m.id for m in meters} >= {"api_calls", "llm_tokens"}


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"aggregation": "SUMM"}, "aggregation"),
        ({"version": 0}, "version"),
        ({"version": "1"}, "version"),
        ({"window": "week"}, "window"),
        ({"quantity": None}, "quantity"),
        ({"aggregation": "COUNT"}, "quantity"),
        ({"quantity": {"from": "header"}}, "quantity.from"),
        ({"quantity": {"from": "property"}}, "quantity.property"),
        (
            {"quantity": {"from": "value", "multiply_by": {"property": "m", "table": {"a": 1.5}}}},
            "quantity.multiply_by.table.a",
        ),
        (
            {"quantity": {"from": "value", "multiply_by": {"property": "m", "table": {}}}},
            "quantity.multiply_by.table",
        ),
        ({"filters": {"region": {"like": "eu%"}}}, "filters.region"),
        ({"group_by": ["a", "a"]}, "group_by"),
        ({"unique_property": "u"}, "unique_property"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_config_errors_name_file_meter_and_field(meter_def, fields, field_name):
    with pytest.raises(MeterConfigError) as err:
        _one(meter_def(**fields))
    assert str(err.value).startswith("meters.yaml: meter 'm': field ")
    assert f"field {field_name!r}" in str(err.value)


def test_duplicate_meter_ids_are_refused():
    m = {"id": "x", "version": 1, "event_name": "e", "aggregation": "COUNT"}
    with pytest.raises(MeterConfigError, match="meter 'x': field 'id': defined twice"):
        parse_meters({"meters": [m, m]}, "f.yaml")


def test_invalid_yaml_names_the_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("meters: [\n")
    with pytest.raises(MeterConfigError, match=str(f)):
        load_meters(f)


def test_weighted_quantity_uses_table_then_default(meter_def):
    m = _one(
        meter_def(
            quantity={
                "from": "value",
                "multiply_by": {"property": "model", "table": {"big": "2.5"}, "default": "1"},
            }
        )
    )
    assert m.measure(Decimal(4), {"model": "big"}) == Decimal(10)
    assert m.measure(Decimal(4), {"model": "other"}) == Decimal(4)
    assert m.measure(Decimal(4), {}) == Decimal(4)


def test_weighted_quantity_without_default_refuses_unknown_keys(meter_def):
    multiply_by = {"property": "model", "table": {"a": "2"}}
    m = _one(meter_def(quantity={"from": "value", "multiply_by": multiply_by}))
    with pytest.raises(QuantityError) as err:
        m.measure(Decimal(1), {"model": "b"})
    assert err.value.reason == "UNKNOWN_MULTIPLIER_KEY"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("abc", "NON_NUMERIC_QUANTITY"),
        ("NaN", "NAN_QUANTITY"),
        ("-Infinity", "INFINITE_QUANTITY"),
        ("-1", "NEGATIVE_QUANTITY"),
        ("1e26", "QUANTITY_OUT_OF_RANGE"),
    ],
)
def test_bad_property_quantities_have_reason_codes(meter_def, text, reason):
    m = _one(meter_def(quantity={"from": "property", "property": "n"}))
    with pytest.raises(QuantityError) as err:
        m.measure(None, {"n": text})
    assert err.value.reason == reason


def test_negative_allowed_when_the_meter_says_so(meter_def):
    m = _one(meter_def(quantity={"from": "value", "allow_negative": True}))
    assert m.measure(Decimal(-3), {}) == Decimal(-3)


def test_filters_and_dimensions():
    m = parse_meters(
        {
            "meters": [
                dict(
                    id="m",
                    version=1,
                    event_name="e",
                    aggregation="COUNT",
                    filters={
                        "region": {"in": ["eu"]},
                        "endpoint": {"not_in": ["/health"]},
                        "beta": {"exists": False},
                    },
                    group_by=["region", "model"],
                )
            ]
        },
        "f.yaml",
    )[0]
    assert m.aggregation is Aggregation.COUNT and m.window is Window.MINUTE
    assert m.selects("e", {"region": "eu", "endpoint": "/a"})
    assert not m.selects("e", {"region": "us", "endpoint": "/a"})
    assert not m.selects("e", {"region": "eu", "endpoint": "/health"})
    assert not m.selects("e", {"region": "eu", "beta": "1"})
    assert not m.selects("other", {"region": "eu"})
    assert m.dimensions({"region": "eu"}) == (("region", "eu"), ("model", ""))
