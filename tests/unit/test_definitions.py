"""The shared reader of definition files: error contexts, the float policy, the one YAML reader."""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
import yaml

from meterflow import definitions
from meterflow.credits import CreditConfigError, load_grants
from meterflow.definitions import (
    ItemContext,
    decimal,
    optional_decimal,
    positive_int,
    read_yaml,
    required_timestamp,
    unique_ids,
    unknown_fields,
)
from meterflow.meters import MeterConfigError, load_meters
from meterflow.price_book import PriceConfigError, load_price_book
from meterflow.settings import REPO_ROOT
from meterflow.subscriptions import SubscriptionConfigError, load_subscriptions


class E(ValueError):
    pass


FILE = ItemContext("f.yaml", E, "meters file")


def test_contexts_name_file_items_and_details():
    assert str(FILE.error("meters", "why")) == "f.yaml: meters file: field 'meters': why"
    assert str(ItemContext("f.yaml", E).error("plans", "why")) == "f.yaml: field 'plans': why"
    charge = ItemContext("f.yaml", E).item("plan", "x").detail("version", 2).item("charge", "c")
    assert str(charge.error("tiers[0].up_to", "why")) == (
        "f.yaml: plan 'x' version 2: charge 'c': field 'tiers[0].up_to': why"
    )
    assert type(charge.error("f", "why")) is E
    assert str(FILE.item("meter", "").error("id", "why")) == "f.yaml: meter '': field 'id': why"


@pytest.mark.parametrize(
    ("v", "expected"),
    [("1.50", D("1.50")), (" 2 ", D(2)), (7, D(7)), (D("0.1"), D("0.1")), ("1e-3", D("0.001"))],
)
def test_decimals_from_strings_and_ints(v, expected):
    assert decimal(FILE, "f", v) == expected


@pytest.mark.parametrize(
    ("v", "why"),
    [
        (0.1, 'must be a quoted decimal string like "1.5" or an integer, not the YAML float 0.1'),
        (True, 'must be a quoted decimal string like "1.5" or an integer, got True'),
        ([1], 'must be a quoted decimal string like "1.5" or an integer, got [1]'),
        (None, "missing"),
        ("abc", "'abc' is not a decimal"),
        ("NaN", "'NaN' is not finite"),
        ("-Infinity", "'-Infinity' is not finite"),
    ],
)
def test_decimal_errors(v, why):
    with pytest.raises(E) as err:
        decimal(FILE, "f", v)
    assert str(err.value) == f"f.yaml: meters file: field 'f': {why}"


@pytest.mark.parametrize("v", ["0", "-1", "NaN", "sNaN", 0])
def test_positive_decimals(v):
    with pytest.raises(E, match=r"field 'f': must be > 0, got "):
        decimal(FILE, "f", v, positive=True)


def test_optional_decimal_and_positive_int():
    assert optional_decimal(FILE, {"a": None}, "a") is None
    assert optional_decimal(FILE, {}, "a") is None
    assert optional_decimal(FILE, {"a": "1"}, "a") == 1
    assert positive_int(FILE, "v", 3) == 3
    for bad in (0, -1, True, "1", 1.0, None):
        with pytest.raises(E, match="must be an integer >= 1"):
            positive_int(FILE, "v", bad)


def test_timestamps_use_the_one_utc_parser():
    assert required_timestamp(FILE, "t", "2026-01-01") == datetime(2026, 1, 1, tzinfo=UTC)
    at = required_timestamp(FILE, "t", "2026-01-01T02:00:00+02:00")
    assert at == datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(E, match="field 't': 'soon' is not an ISO-8601"):
        required_timestamp(FILE, "t", "soon")


def test_unknown_fields_and_duplicates():
    unknown_fields(FILE, {"a": 1}, {"a", "b"})
    with pytest.raises(E, match=r"field 'c': unknown field \(allowed: \['a', 'b'\]\)"):
        unknown_fields(FILE, {"d": 1, "c": 1}, {"a", "b"})
    with pytest.raises(E, match=r"field '3': unknown plan field"):  # no int/str sort error
        unknown_fields(FILE, {"c": 1, 3: 1}, {"a"}, "plan")
    with pytest.raises(E, match=r"^f\.yaml: meter 'x': field 'id': defined twice$"):
        unique_ids(FILE, "meter", ["x", "y", "x"])


def test_read_yaml_names_the_file(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("a: [")
    with pytest.raises(E, match=f"^{re.escape(str(f))}: not valid YAML"):
        read_yaml(f, E)
    f.write_text("a: 1")
    assert read_yaml(str(f), E) == {"a": 1}


# The same bare float in each kind of file: refused everywhere, naming the file and field.
FLOATS: list[tuple[Any, type[ValueError], str, str]] = [
    (
        load_meters,
        MeterConfigError,
        "meters:\n  - {id: m, version: 1, event_name: e, aggregation: SUM,\n"
        "     quantity: {from: value, multiply_by: {property: k, table: {a: 0.1}}}}\n",
        "meter 'm': field 'quantity.multiply_by.table.a'",
    ),
    (
        load_price_book,
        PriceConfigError,
        "plans:\n  - id: p\n    currency: USD\n    versions:\n"
        "      - {version: 1, effective_from: 2026-01-01,\n"
        "         charges: {m: {model: per_unit, unit_price: 0.1}}}\n",
        "plan 'p' version 1: charge 'm': field 'unit_price'",
    ),
    (
        load_grants,
        CreditConfigError,
        "grants:\n  - {id: g, customer_id: c, amount: 0.1, currency: USD,\n"
        "     effective_at: 2026-01-01}\n",
        "grant 'g': field 'amount'",
    ),
]


@pytest.mark.parametrize(("load", "error", "text", "where"), FLOATS)
def test_bare_yaml_floats_are_refused_in_every_file(tmp_path, load, error, text, where):
    f = tmp_path / "defs.yaml"
    f.write_text(text)
    with pytest.raises(error) as err:
        load(f)
    assert str(err.value) == (
        f'{f}: {where}: must be a quoted decimal string like "1.5" or an integer, '
        "not the YAML float 0.1"
    )
    f.write_text(text.replace("0.1", '"0.1"'))
    load(f)


@pytest.mark.parametrize(
    ("load", "error"),
    [
        (load_meters, MeterConfigError),
        (load_price_book, PriceConfigError),
        (load_subscriptions, SubscriptionConfigError),
        (load_grants, CreditConfigError),
    ],
)
def test_every_loader_reads_yaml_through_the_one_reader(tmp_path, load, error):
    f = tmp_path / "bad.yaml"
    f.write_text("x: [")
    with pytest.raises(error, match=f"^{re.escape(str(f))}: not valid YAML"):
        load(f)


def test_shipped_definition_files_hold_no_bare_floats():
    def floats(node: Any) -> list[float]:
        if isinstance(node, dict):
            return [x for v in node.values() for x in floats(v)]
        if isinstance(node, list):
            return [x for v in node for x in floats(v)]
        return [node] if isinstance(node, float) else []

    files = sorted((REPO_ROOT / "schemas").glob("**/*.yaml"))
    assert files
    for f in files:
        assert floats(yaml.safe_load(f.read_text())) == [], f


def test_definitions_imports_no_loader():
    tree = ast.parse(Path(definitions.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    loaders = {f"meterflow.{m}" for m in ("meters", "price_book", "subscriptions", "credits")}
    assert not imported & loaders
