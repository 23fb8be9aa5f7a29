"""Names that reach generated SQL are refused at load unless they match meterflow.identifiers."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from meterflow.credits import parse_grants
from meterflow.identifiers import NAME, PROPERTY, TOPIC, IdentifierKind
from meterflow.meters import MeterConfigError, parse_meters
from meterflow.price_book import PriceConfigError, parse_price_book
from meterflow.settings import Settings
from meterflow.subscriptions import SubscriptionConfigError, parse_subscriptions

# What an injection or a copy-paste accident looks like; none may reach generated SQL.
HOSTILE = [
    'a"b',
    "a'b",
    "a`b",
    "a;b",
    "a b",
    "a\\b",
    "a\nb",
    "ok\n",
    "x'); DROP TABLE events; --",
    "métré",
    "caf\u00e9",
    "a\u200bb",  # zero-width space
    "",
    " ",
]
TOO_LONG_NAME = "a" * 64
TOO_LONG_PROPERTY = "a" * 129


# ---------------------------------------------------------------------------------- patterns


@pytest.mark.parametrize(
    "value",
    # every meter and plan id of the shipped files and tests, and test database names
    [
        "api_calls",
        "llm_tokens",
        "llm_weighted_tokens",
        "gpu_max",
        "tokens_weighted",
        "scenario_min",
        "p",
        "m0",
        "meterflow",
        "meterflow_test_0a1b2c3d4e",
        "it_0a1b2c3d4e",
        "bench_0a1b2c3d_lat",
        "a" * 63,
    ],
)
def test_name_accepts_what_the_repo_uses(value):
    assert NAME.problem(value) is None


@pytest.mark.parametrize(
    "value", [*HOSTILE, TOO_LONG_NAME, "Calls", "1calls", "_calls", "api-calls", "api.calls"]
)
def test_name_refuses(value):
    assert NAME.problem(value) is not None


@pytest.mark.parametrize(
    "value", ["region", "model", "user_id", "gpus", "http.status", "x-region", "_x", "User_Id"]
)
def test_property_accepts_usual_event_keys(value):
    assert PROPERTY.problem(value) is None


@pytest.mark.parametrize("value", [*HOSTILE, TOO_LONG_PROPERTY, "-x", ".x", "9lives", "a:b"])
def test_property_refuses(value):
    assert PROPERTY.problem(value) is not None


@pytest.mark.parametrize(
    "value",
    [
        "usage-events",
        "usage-events-3f2b8c1e-1d2c-4b5a-9e8f-0a1b2c3d4e5f",
        "it-events-0a1b2c3d4e",
        "bench-lat-0a1b2c3d",
        "dedup-0a1b2c3d",
        "Usage.Events_v2",
        "t" * 228,
    ],
)
def test_topic_accepts_kafka_names(value):
    assert TOPIC.problem(value) is None


@pytest.mark.parametrize("value", [*HOSTILE, "t" * 229, ".", "..", "a/b", "a:b"])
def test_topic_refuses(value):
    assert TOPIC.problem(value) is not None


def test_derived_topics_fit_kafkas_limit():
    longest = "t" * 228
    assert TOPIC.problem(longest) is None
    assert TOPIC.problem(longest + "t") is not None
    derived = Settings(events_topic=longest).all_topics
    # the loader dead-letters rows of each topic it loads to <topic>-load-dlq
    assert max(len(t) for t in [*derived, *(f"{t}-load-dlq" for t in derived)]) == 249


@pytest.mark.parametrize("kind", [NAME, PROPERTY, TOPIC])
def test_the_problem_is_one_line_with_a_short_value(kind: IdentifierKind):
    problem = kind.problem("x\n" + "é" * 1000)
    assert problem is not None
    assert "\n" not in problem
    assert kind.pattern in problem
    assert len(problem) < 250
    assert "(1002 characters)" in problem


# ------------------------------------------------------------------------------------ meters


def _meter_error(meter: dict[str, Any]) -> str:
    with pytest.raises(MeterConfigError) as err:
        parse_meters({"meters": [meter]}, "meters.yaml")
    assert "\n" not in str(err.value)
    return str(err.value)


def test_meter_id_error_names_file_meter_and_field(meter_def):
    assert _meter_error(meter_def(id='a"b')) == (
        "meters.yaml: meter 'a\"b': field 'id': must match ^[a-z][a-z0-9_]{0,62}$ "
        "(lower-case letters, digits and _, a letter first, at most 63), got 'a\"b'"
    )


@pytest.mark.parametrize("bad", [*HOSTILE, TOO_LONG_NAME, "Calls"])
def test_meter_ids_are_names(meter_def, bad):
    msg = _meter_error(meter_def(id=bad))
    assert msg.startswith(f"meters.yaml: meter {bad!r}: field 'id': ")


def _property_cases(bad: str) -> list[tuple[dict[str, Any], str]]:
    table = {"small": "1"}
    return [
        ({"quantity": {"from": "property", "property": bad}}, "quantity.property"),
        (
            {"quantity": {"from": "value", "multiply_by": {"property": bad, "table": table}}},
            "quantity.multiply_by.property",
        ),
        (
            {"aggregation": "UNIQUE_COUNT", "quantity": None, "unique_property": bad},
            "unique_property",
        ),
        ({"filters": {bad: {"in": ["eu"]}}}, f"filters.{bad}"),
        ({"filters": {bad: {"exists": True}}}, f"filters.{bad}"),
        ({"group_by": ["region", bad]}, "group_by[1]"),
    ]


@pytest.mark.parametrize("bad", [b for b in HOSTILE if b] + [TOO_LONG_PROPERTY])
def test_meter_property_names_are_checked_wherever_they_appear(meter_def, bad):
    for fields, fld in _property_cases(bad):
        meter = meter_def(**fields)
        if meter.get("quantity") is None:
            del meter["quantity"]
        msg = _meter_error(meter)
        assert msg.startswith(f"meters.yaml: meter 'm': field {fld!r}: "), msg


def test_empty_group_by_entries_keep_their_message(meter_def):
    assert "must be a list of property names" in _meter_error(meter_def(group_by=[""]))


def test_meter_values_that_are_data_stay_free_form(meter_def):
    (m,) = parse_meters(
        {
            "meters": [
                meter_def(
                    event_name="api call / v2",
                    quantity={
                        "from": "property",
                        "property": "http.bytes",
                        "multiply_by": {"property": "x-tier", "table": {"Gold Plan": "2"}},
                    },
                    filters={"endpoint": {"not_in": ["/health", "it's"]}},
                    group_by=["Region", "_shard"],
                )
            ]
        },
        "meters.yaml",
    )
    assert m.event_name == "api call / v2"
    assert m.group_by == ("Region", "_shard")


# ------------------------------------------------------------------------------- price books


def _book(plan_id: str = "p", meter: str = "m") -> dict[str, Any]:
    version = {
        "version": 1,
        "effective_from": "2026-01-01",
        "charges": {meter: {"model": "per_unit", "unit_price": "1"}},
    }
    return {"plans": [{"id": plan_id, "currency": "USD", "versions": [version]}]}


@pytest.mark.parametrize("bad", [*HOSTILE, TOO_LONG_NAME, "Gold"])
def test_plan_ids_are_names(bad):
    with pytest.raises(PriceConfigError) as err:
        parse_price_book(_book(plan_id=bad), "prices.yaml")
    assert str(err.value).startswith(f"prices.yaml: plan {bad!r}: field 'id': ")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad", [*HOSTILE, TOO_LONG_NAME, "API_CALLS"])
def test_charged_meter_ids_are_names(bad):
    with pytest.raises(PriceConfigError) as err:
        parse_price_book(_book(meter=bad), "prices.yaml")
    assert str(err.value).startswith("prices.yaml: plan 'p' version 1: field 'charges': ")
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- subscriptions


def _sub(**fields: Any) -> dict[str, Any]:
    base = {"id": "sub-a", "customer_id": "cust-042", "plan": "starter", "start": "2026-01-01"}
    base.update(fields)
    return base


@pytest.mark.parametrize("bad", [*HOSTILE, TOO_LONG_NAME, "Starter"])
def test_subscribed_plan_ids_are_names(bad):
    for fields, fld in [
        ({"plan": bad}, "plan"),
        ({"plan_changes": [{"plan": bad, "requested_at": "2026-02-01"}]}, "plan_changes[0].plan"),
    ]:
        with pytest.raises(SubscriptionConfigError) as err:
            parse_subscriptions({"subscriptions": [_sub(**fields)]}, "subs.yaml")
        assert str(err.value).startswith(f"subs.yaml: subscription 'sub-a': field {fld!r}: ")
        assert "\n" not in str(err.value)


def test_customer_subscription_and_grant_ids_stay_free_form():
    (s,) = parse_subscriptions(
        {"subscriptions": [_sub(id="Sub 42/a", customer_id="cust-042 (ACME, Inc.)")]}, "s.yaml"
    )
    assert (s.id, s.customer_id) == ("Sub 42/a", "cust-042 (ACME, Inc.)")
    grant = {
        "id": "grant-cust-042-welcome",
        "customer_id": "cust-042",
        "amount": "1",
        "currency": "USD",
        "effective_at": "2026-01-01",
    }
    (g,) = parse_grants({"grants": [grant]}, "credits.yaml")
    assert (g.id, g.customer_id) == ("grant-cust-042-welcome", "cust-042")


# ---------------------------------------------------------------------------------- settings


def test_default_settings_are_valid():
    s = Settings()
    assert NAME.problem(s.clickhouse_database) is None
    assert all(TOPIC.problem(t) is None for t in s.all_topics)


@pytest.mark.parametrize("bad", [*HOSTILE, TOO_LONG_NAME, "Meterflow", "meterflow-test"])
def test_database_name_is_checked_and_names_its_variable(bad, monkeypatch):
    monkeypatch.setenv("METERFLOW_DB", bad)
    with pytest.raises(ValueError, match=r"^METERFLOW_DB: ") as err:
        Settings()
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"^METERFLOW_DB: "):
        replace(Settings(clickhouse_database="ok"), clickhouse_database=bad)


@pytest.mark.parametrize("bad", [*HOSTILE, "t" * 243, ".", ".."])
def test_events_topic_is_checked_and_names_its_variable(bad, monkeypatch):
    monkeypatch.setenv("METERFLOW_EVENTS_TOPIC", bad)
    with pytest.raises(ValueError, match=r"^METERFLOW_EVENTS_TOPIC: ") as err:
        Settings()
    assert "\n" not in str(err.value)


def test_test_and_benchmark_settings_are_accepted(monkeypatch):
    monkeypatch.setenv("METERFLOW_DB", "meterflow_test_0a1b2c3d")
    monkeypatch.setenv("METERFLOW_EVENTS_TOPIC", "usage-events-3f2b8c1e-1d2c-4b5a-9e8f")
    s = Settings()
    s = replace(s, events_topic="it-events-0a1b2c3d4e", clickhouse_database="it_0a1b2c3d4e")
    assert s.dlq_topic == "it-events-0a1b2c3d4e-dlq"
