"""The Python reference against every shared vector of the JVM functions (tests/vectors).

The same files drive java/'s JUnit tests, so both implementations are held to one set of
answers; the hand-written cases below pin a few answers independently of the generator.
"""

from __future__ import annotations

import decimal
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

VECTORS = Path(__file__).resolve().parent.parent / "vectors"

# Loaded by path: the unit tests are not a package, so `tests.vectors` is not importable here.
_spec = importlib.util.spec_from_file_location("vectors_reference", VECTORS / "reference.py")
assert _spec is not None and _spec.loader is not None
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)
python_decode = reference.python_decode
python_divide = reference.python_divide
python_json_map = reference.python_json_map
python_json_pairs = reference.python_json_pairs
python_measure = reference.python_measure


def load(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (VECTORS / name).read_text().splitlines() if line]


def ids(vectors: list[dict[str, Any]], key: str) -> list[str]:
    return [str(v.get(key))[:60] for v in vectors]


DECODE = load("decode.jsonl")
QUANTITY = load("quantity.jsonl")
JSON_OBJECT = load("json_object.jsonl")
DIVIDE = load("divide.jsonl")


@pytest.mark.parametrize("vec", DECODE, ids=ids(DECODE, "name"))
def test_decode_vector(vec: dict[str, Any]) -> None:
    payload = None if vec["payload_hex"] is None else bytes.fromhex(vec["payload_hex"])
    schemas = {int(k): t for k, t in vec["schemas"].items()}
    assert python_decode(payload, schemas, vec["max_record_bytes"]) == vec["expected"]


@pytest.mark.parametrize("vec", QUANTITY, ids=ids(QUANTITY, "raw"))
def test_quantity_vector(vec: dict[str, Any]) -> None:
    args = (vec["raw"], vec["allow_negative"], vec["has_multiplier"], vec["factor"])
    exp = vec["expected"]
    if exp["reason"] == "PYTHON_RAISES":
        # recorded so the difference from the JVM function stays visible (see the vector's jvm)
        with pytest.raises(getattr(decimal, exp["python_error"])):
            python_measure(*args)
        return
    assert python_measure(*args) == exp


@pytest.mark.parametrize("vec", JSON_OBJECT, ids=ids(JSON_OBJECT, "json"))
def test_json_object_vector(vec: dict[str, Any]) -> None:
    got = python_json_map(vec["map"]) if "map" in vec else python_json_pairs(vec["pairs"])
    assert got == vec["json"]


@pytest.mark.parametrize("vec", DIVIDE, ids=ids(DIVIDE, "sum"))
def test_divide_vector(vec: dict[str, Any]) -> None:
    assert python_divide(vec["sum"], vec["count"]) == vec["avg"]


def test_vectors_cover_every_status_and_reason() -> None:
    statuses = {(v.get("jvm") or v["expected"])["status"] for v in DECODE}
    assert statuses == {"OK", "UNDECODABLE", "UNKNOWN_SCHEMA", "OVERSIZED", "MISSING_FIELD"}
    reasons = {(v.get("jvm") or v["expected"])["reason"] for v in QUANTITY}
    assert reasons == {
        None,
        "MISSING_QUANTITY",
        "NON_NUMERIC_QUANTITY",
        "NAN_QUANTITY",
        "INFINITE_QUANTITY",
        "NEGATIVE_QUANTITY",
        "UNKNOWN_MULTIPLIER_KEY",
        "QUANTITY_OUT_OF_RANGE",
    }


def test_hand_written_answers() -> None:
    assert python_measure("0.0000000000005", False, False, None)["quantity"] == "0E-12"
    assert python_measure("0.0000000000015", False, False, None)["quantity"] == "2E-12"
    assert python_measure("1_000", False, False, None)["quantity"] == "1000.000000000000"
    assert python_measure("\u0661\u0662", False, False, None)["quantity"] == "12.000000000000"
    assert python_measure("-0", False, False, None)["reason"] is None
    assert python_measure("5", False, True, None)["reason"] == "UNKNOWN_MULTIPLIER_KEY"
    assert python_json_pairs(["\U0001f600", "", "\uffff", ""]) == (
        '{"\\uffff":"","\\ud83d\\ude00":""}'
    )
    assert python_divide("10.000000000000", 3) == "3.333333333333"
    assert python_decode(None, {})["status"] == "UNDECODABLE"
    assert python_decode(b"\x00\x00\x00\x00\x07\x00", {})["status"] == "UNKNOWN_SCHEMA"
