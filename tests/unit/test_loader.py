"""The loader's pure parts: routes and row contract, row extraction, batching, error
classification and bad-row isolation (with a fake inserter; the real one is tested against
ClickHouse in tests/integration/test_loader.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from connectors.clickhouse import migrations
from connectors.loader import (
    DEBEZIUM_JSON,
    JSON_ROWS,
    ROW_CONTRACT,
    UPSERT_JSON,
    Backoff,
    BadRow,
    Batch,
    DataError,
    Route,
    Unavailable,
    classify,
    debezium_row,
    dlq_record,
    insert_isolating,
    json_row,
    routes,
)
from meterflow.settings import Settings


@dataclass
class Msg:
    """A stand-in for confluent_kafka.Message (the loader only calls these)."""

    _value: bytes | None
    _offset: int = 0
    _partition: int = 0
    _topic: str = "t-accepted"

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return b"k"

    def value(self) -> bytes | None:
        return self._value


# ----------------------------------------------------------------------------- routes, contract


def test_routes_derive_from_the_events_topic():
    s = Settings(events_topic="ev")
    got = {(r.topic, r.table, r.fmt, r.dlq_topic) for r in routes(s)}
    assert got == {
        ("ev-accepted", "events", JSON_ROWS, "ev-accepted-load-dlq"),
        ("ev-late-events", "late_events", JSON_ROWS, "ev-late-events-load-dlq"),
        ("ev-windows", "usage_windows", DEBEZIUM_JSON, "ev-windows-load-dlq"),
        ("ev-period-cost", "period_cost", UPSERT_JSON, "ev-period-cost-load-dlq"),
        ("ev-alert-rows", "alerts", JSON_ROWS, "ev-alert-rows-load-dlq"),
    }


def test_a_route_needs_a_known_format_and_a_contract():
    with pytest.raises(ValueError, match="format"):
        Route("x", "events", "csv")
    with pytest.raises(ValueError, match="contract"):
        Route("x", "invoices", JSON_ROWS)


@pytest.fixture(scope="module")
def chdb_tables(tmp_path_factory):
    from chdb import session

    s = session.Session(str(tmp_path_factory.mktemp("chdb")))
    s.query("CREATE DATABASE IF NOT EXISTS mf")
    for mig in migrations():
        for stmt in mig.statements("mf"):
            s.query(stmt)
    yield s
    s.close()


@pytest.mark.parametrize("table", sorted(ROW_CONTRACT))
def test_contract_is_every_column_the_table_does_not_fill_itself(chdb_tables, table):
    described = json.loads(chdb_tables.query(f"DESCRIBE TABLE mf.{table}", "JSON").bytes())
    cols = described["data"]
    sent = [(c["name"], c["type"]) for c in cols if not c["default_type"]]
    assert sent == [(c.name, c.clickhouse_type) for c in ROW_CONTRACT[table]]
    # what the loader leaves out is filled by ClickHouse: the load time or a materialization
    filled = {c["name"]: c["default_type"] for c in cols if c["default_type"]}
    assert set(filled.values()) <= {"DEFAULT", "MATERIALIZED"}


# ----------------------------------------------------------------------------- extraction


def test_json_rows_pass_through_unparsed():
    v = b'{"a":1}'
    assert json_row(v) is v
    assert json_row(b' {"a":1}\n') == b'{"a":1}'


@pytest.mark.parametrize("value", [None, b"", b"[1]", b"42", b'"x"', b'{"a":1'])
def test_json_rows_must_be_one_object(value):
    with pytest.raises(BadRow):
        json_row(value)


ROW = {"customer_id": "c", "quantity": 1.5, "dimensions": '{"op":"c"}', "revision": 2}


def flink_change(op: str, before: dict | None, after: dict | None) -> bytes:
    """As Flink's debezium-json serializer writes it: compact, before/after/op."""
    doc = {"before": before, "after": after, "op": op}
    return json.dumps(doc, separators=(",", ":")).encode()


def test_debezium_insert_is_sliced_without_parsing():
    after = json.dumps(ROW, separators=(",", ":")).encode()
    assert debezium_row(flink_change("c", None, ROW)) == after


def test_debezium_delete_and_retraction_are_skipped():
    assert debezium_row(flink_change("d", ROW, None)) is None
    assert debezium_row(None) is None


@pytest.mark.parametrize(
    "value",
    [
        json.dumps({"op": "u", "before": ROW, "after": ROW}).encode(),
        json.dumps({"after": ROW, "before": None, "op": "r"}, indent=1).encode(),
        json.dumps({"schema": {}, "payload": {"before": None, "after": ROW, "op": "c"}}).encode(),
    ],
)
def test_other_debezium_shapes_are_parsed(value):
    assert json.loads(debezium_row(value)) == ROW


@pytest.mark.parametrize(
    "value",
    [b"{nope", b"[]", b'{"after":{}}', b'{"op":"x","after":{}}', b'{"op":"c","after":null}'],
)
def test_bad_debezium_changes_are_bad_rows(value):
    with pytest.raises(BadRow):
        debezium_row(value)


def test_a_string_containing_the_suffix_does_not_fool_the_slice():
    row = {**ROW, "dimensions": '{"x":"},\\"op\\":\\"c\\"}"}'}
    assert json.loads(debezium_row(flink_change("c", None, row))) == row


# ----------------------------------------------------------------------------- batching


def test_batch_tracks_rows_rejections_skips_and_next_offsets():
    b = Batch("usage_windows", ("a",))
    for i, v in enumerate([flink_change("c", None, ROW), b"junk", flink_change("d", ROW, None)]):
        b.add(Msg(v, _offset=10 + i, _partition=1), debezium_row)
    b.add(Msg(flink_change("c", None, ROW), _offset=4, _partition=0), debezium_row)
    assert len(b.rows) == 2 and len(b.rejected) == 1 and b.skipped == 1 and len(b) == 4
    assert b.next_offsets == {("t-accepted", 1): 13, ("t-accepted", 0): 5}
    assert [m.offset() for m in b.sources] == [10, 4]
    b.clear()
    assert len(b) == 0 and b.next_offsets == {} and b.started is None


def test_batch_is_due_by_size_or_age():
    b = Batch("events", ("a",))
    assert not b.due(2, 1.0, now=1e12)  # empty: never
    b.add(Msg(b"{}"), json_row)
    start = b.started
    assert start is not None
    assert not b.due(2, 1.0, now=start + 0.5)
    assert b.due(2, 1.0, now=start + 1.0)
    b.add(Msg(b"{}", _offset=1), json_row)
    assert b.due(2, 1.0, now=start)


def test_backoff_doubles_up_to_its_cap():
    delays = iter(Backoff(0.5, 3.0).delays())
    assert [next(delays) for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


# ----------------------------------------------------------------------------- classification

OLD_PARSE = (
    b'Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected , before: "x"}: '
    b"(at row 3)\n, e.what() = DB::Exception\n"
)
OLD_DECIMAL = (
    b"Code: 69, e.displayText() = DB::Exception: Decimal value is too small: (while read the "
    b"value of key d), e.what() = DB::Exception\n"
)
NEW_PARSE = (
    b"Code: 117. DB::Exception: Unknown field found while parsing JSONEachRow format: w: "
    b"(at row 12)\n: While executing ParallelParsingBlockInputFormat. (INCORRECT_DATA)"
)


def test_success_is_200():
    assert classify(200, b"") is None


@pytest.mark.parametrize(("body", "row"), [(OLD_PARSE, 3), (OLD_DECIMAL, None), (NEW_PARSE, 12)])
def test_data_errors_name_their_row_when_clickhouse_does(body, row):
    err = classify(500, body)
    assert isinstance(err, DataError) and err.row == row
    assert "e.what()" in err.message or "INCORRECT_DATA" in err.message


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b"Code: 252, e.displayText() = DB::Exception: Too many parts (300)."),
        (404, b"Code: 60, e.displayText() = DB::Exception: Table x.events doesn't exist."),
        (500, b"Code: 241, e.displayText() = DB::Exception: Memory limit exceeded"),
        (503, b"Service Unavailable"),
        (502, b""),
    ],
)
def test_everything_else_is_transient(status, body):
    assert isinstance(classify(status, body), Unavailable)


# ----------------------------------------------------------------------------- isolation


class FakeClickHouse:
    """Rejects any slice holding a row marked bad, naming the first one (1-based) when
    `names_row`, or a wrong row when `lies`; records what was stored."""

    def __init__(self, names_row: bool = True, lies: bool = False) -> None:
        self.names_row, self.lies = names_row, lies
        self.stored: list[bytes] = []
        self.calls = 0

    def insert(self, rows: Sequence[bytes]) -> None:
        self.calls += 1
        bad = [i for i, r in enumerate(rows) if r.startswith(b"bad")]
        if bad:
            row = (len(rows) if self.lies else bad[0] + 1) if self.names_row else None
            raise DataError(27, f"cannot parse {rows[bad[0]]!r}", row)
        self.stored.extend(rows)


def rows_with_bad(n: int, bad: set[int]) -> list[bytes]:
    return [b"bad%d" % i if i in bad else b"ok%d" % i for i in range(n)]


@pytest.mark.parametrize("names_row", [True, False])
@pytest.mark.parametrize("bad", [set(), {0}, {999}, {3, 4, 500}, set(range(0, 1000, 97))])
def test_every_good_row_stored_once_every_bad_row_reported(names_row, bad):
    rows = rows_with_bad(1000, bad)
    ch = FakeClickHouse(names_row=names_row)
    rejected = insert_isolating(rows, ch.insert)
    assert [i for i, _ in rejected] == sorted(bad)
    assert all(f"bad{i}" in why for i, why in rejected)
    assert sorted(ch.stored) == sorted(r for r in rows if not r.startswith(b"bad"))


def test_a_named_row_costs_a_few_inserts_bisecting_a_log():
    rows = rows_with_bad(50_000, {31_337})
    named, bisected = FakeClickHouse(), FakeClickHouse(names_row=False)
    insert_isolating(rows, named.insert)
    insert_isolating(rows, bisected.insert)
    assert named.calls == 4  # whole batch, prefix, the row alone, the rest
    assert bisected.calls <= 2 * 17 + 1


def test_a_wrong_row_number_still_isolates_exactly():
    rows = rows_with_bad(200, {17, 150})
    ch = FakeClickHouse(lies=True)
    assert [i for i, _ in insert_isolating(rows, ch.insert)] == [17, 150]
    assert len(ch.stored) == 198


def test_transient_failures_are_not_isolation():
    def down(_rows: Sequence[bytes]) -> None:
        raise Unavailable("connection refused")

    with pytest.raises(Unavailable):
        insert_isolating([b"{}"], down)


# ----------------------------------------------------------------------------- dead letters


def test_dead_letter_names_position_reason_and_value():
    doc = json.loads(dlq_record(Msg(b'{"a":"x"}', _offset=7, _partition=1), "events", "bad"))
    assert doc == {
        "source_topic": "t-accepted",
        "partition": 1,
        "offset": 7,
        "table": "events",
        "error": "bad",
        "value": '{"a":"x"}',
    }


def test_dead_letter_of_non_utf8_bytes_is_base64():
    doc = json.loads(dlq_record(Msg(b"\xff\xfe"), "events", "bad"))
    assert "value" not in doc and base64.b64decode(doc["value_base64"]) == b"\xff\xfe"
