"""`meterflow load`: the metering job's output topics -> ClickHouse, exactly once by table keys.

The job writes every output to Kafka with transactional sinks; this loader moves them into
ClickHouse (docs/decisions/0010-loader.md):

- consumes with isolation.level=read_committed (rows of aborted transactions are never seen)
  and enable.auto.commit=false;
- accumulates one batch per table (--max-rows rows or --max-wait seconds, whichever first);
- passes the JSON through: the batch is the message values joined by newlines, POSTed to
  ClickHouse's HTTP interface as `INSERT INTO db.table (columns) FORMAT JSONEachRow`;
- commits the consumed offsets synchronously only after ClickHouse acknowledged the insert.
  A crash between insert and commit re-delivers the batch: a no-op for FINAL reads, because
  every routed table is a ReplacingMergeTree keyed by the row's identity. No dedup here.
- A batch ClickHouse rejects for its data is split until the bad rows are isolated (using the
  row ClickHouse names, else bisecting); the good rows are inserted, each bad row goes to
  `<topic>-load-dlq` with its reason and position, then the offsets are committed.
  Any other failure (connection refused, timeout, 5xx, too many parts, unknown table) is
  retried with exponential backoff forever, without committing and without dead-lettering.

Rows of each table are the JSON objects described by ROW_CONTRACT below; the metering job's
SQL produces exactly those keys and encodings.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import os
import queue
import re
import signal
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from meterflow.settings import Settings

log = logging.getLogger("meterflow.loader")

# ----------------------------------------------------------------------------- row contract
# What ClickHouse 18.16's JSONEachRow accepts (measured on the server, and the same holds on
# current ClickHouse via chdb); anything else is a data error that ends in the load-dlq:
STRING = "JSON string; JSON escapes are decoded (a number or null is rejected)"
INT = (
    "JSON integer (or an integer in a JSON string); no fraction, no exponent, no bool. "
    "Out-of-range values WRAP silently on 18.16 (2^32 -> 0 in a UInt32): the producer keeps "
    "them in range. Unsigned columns reject a minus sign"
)
DECIMAL = (
    "unquoted JSON number, plain or with exponent (1.5, 1e3, 1.5E-3); at most 12 significant "
    "fractional digits (trailing zeros are fine) and 26 integer digits; a quoted number or "
    "null is rejected"
)
NULLABLE_DECIMAL = f"{DECIMAL}, or null"
DATETIME = (
    "JSON string 'YYYY-MM-DD hh:mm:ss' in UTC (the server's zone), or integer unix seconds; "
    "no 'T', no zone suffix, no fractional seconds (Flink: CAST to TIMESTAMP(0), "
    "json.timestamp-format.standard = 'SQL')"
)


@dataclass(frozen=True)
class Column:
    name: str
    clickhouse_type: str
    encoding: str


def _raw_event_columns() -> tuple[Column, ...]:
    return (
        Column("customer_id", "String", STRING),
        Column("event_id", "String", STRING),
        Column("event_name", "String", STRING),
        Column("timestamp_ms", "Int64", f"{INT}; event time, ms since the epoch"),
        Column("value", "Nullable(Decimal(38, 12))", NULLABLE_DECIMAL),
        Column("properties", "String", f"{STRING}; the properties map as JSON text"),
        Column("source", "String", STRING),
        Column("schema_id", "UInt32", INT),
        Column("kafka_topic", "String", STRING),
        Column("kafka_partition", "UInt32", INT),
        Column("kafka_offset", "UInt64", INT),
    )


# Every key of a row is required and no other key is allowed (an unknown key is a data error).
# A MISSING key is NOT detected by 18.16: it silently stores the type's zero, so the job must
# always emit every key (Flink's json format writes nulls, it never drops a key).
# Not sent, filled by ClickHouse: events/late_events.ingested_at and usage_windows.written_at
# (DEFAULT now(), migration 0005; the insert names its columns, so the default applies) and
# event_time (MATERIALIZED from timestamp_ms).
ROW_CONTRACT: dict[str, tuple[Column, ...]] = {
    "events": _raw_event_columns(),
    "late_events": (
        *_raw_event_columns(),
        Column("watermark_ms", "Int64", f"{INT}; the watermark that judged the event late"),
    ),
    "usage_windows": (
        Column("customer_id", "String", STRING),
        Column("meter", "String", STRING),
        Column("meter_version", "UInt32", INT),
        Column("dimensions", "String", f"{STRING}; flat JSON object text with sorted keys"),
        Column("window_start", "DateTime", DATETIME),
        Column("window_end", "DateTime", DATETIME),
        Column("event_count", "UInt64", INT),
        Column("quantity", "Decimal(38, 12)", DECIMAL),
        Column("revision", "UInt64", f"{INT}; the newest revision of a window wins under FINAL"),
    ),
    "alerts": (
        Column("alert_id", "String", STRING),
        Column("customer_id", "String", STRING),
        Column("subscription_id", "String", STRING),
        Column("meter", "String", STRING),
        Column("period_start", "DateTime", DATETIME),
        Column("period_end", "DateTime", DATETIME),
        Column("threshold_pct", "UInt8", INT),
        Column("quantity", "Decimal(38, 12)", f"{DECIMAL}; the period quantity when it fired"),
        Column("quota", "Decimal(38, 12)", DECIMAL),
        Column("hard_cap", "UInt8", f"{INT}; 1 or 0"),
        Column("window_start", "DateTime", DATETIME),
    ),
    "period_cost": (
        Column("customer_id", "String", STRING),
        Column("subscription_id", "String", STRING),
        Column("period_start", "DateTime", DATETIME),
        Column("period_end", "DateTime", DATETIME),
        Column("meter", "String", STRING),
        Column("meter_version", "UInt32", INT),
        Column("plan", "String", STRING),
        Column("price_version", "UInt32", INT),
        Column("currency", "String", STRING),
        Column("period_quantity", "Decimal(38, 12)", DECIMAL),
        Column("period_amount", "Nullable(Decimal(38, 20))", NULLABLE_DECIMAL),
        Column("revision", "UInt64", f"{INT}; the period's event count: the newest row wins"),
    ),
}

# ----------------------------------------------------------------------------- routes

JSON_ROWS = "json"  # each message value is one JSON object: the row
DEBEZIUM_JSON = "debezium-json"  # Flink's changelog JSON: {"before":…,"after":…,"op":…}
UPSERT_JSON = "upsert-json"  # Flink's upsert-kafka: the row, or a tombstone for a delete
FORMATS = (JSON_ROWS, DEBEZIUM_JSON, UPSERT_JSON)
LOAD_DLQ_SUFFIX = "-load-dlq"
KAFKA_TOPIC_MAX = 249


@dataclass(frozen=True)
class Route:
    topic: str
    table: str
    fmt: str

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise ValueError(f"route {self.topic}: unknown row format {self.fmt!r}")
        if self.table not in ROW_CONTRACT:
            raise ValueError(f"route {self.topic}: table {self.table!r} has no row contract")

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}{LOAD_DLQ_SUFFIX}"

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in ROW_CONTRACT[self.table])


def routes(settings: Settings) -> tuple[Route, ...]:
    """Topic -> table, one line each."""
    return (
        Route(settings.accepted_topic, "events", JSON_ROWS),
        Route(settings.late_events_topic, "late_events", JSON_ROWS),
        Route(settings.windows_topic, "usage_windows", DEBEZIUM_JSON),
        Route(settings.period_cost_topic, "period_cost", UPSERT_JSON),
        Route(settings.alert_rows_topic, "alerts", JSON_ROWS),
    )


# ----------------------------------------------------------------------------- row extraction


class BadRow(ValueError):
    """A message that cannot be a row whatever ClickHouse says: dead-lettered before insert."""


def _is_object(value: bytes) -> bool:
    return value.startswith(b"{") and value.endswith(b"}")


def json_row(value: bytes | None) -> bytes:
    """The row of a `json` message, unparsed. Only its shape is checked (two byte tests): an
    empty or non-object value would shift ClickHouse's row numbering, the rest is its job."""
    if value is None:
        raise BadRow("empty message (tombstone)")
    if _is_object(value):
        return value
    stripped = value.strip()
    if _is_object(stripped):
        return stripped
    raise BadRow("not a JSON object")


def upsert_row(value: bytes | None) -> bytes | None:
    """The row of an upsert, None for a tombstone: a delete that the newer row follows (the
    table keeps the highest revision of a key, so it is never the row to keep)."""
    return None if value is None else json_row(value)


# Flink's debezium-json writes exactly {"before":<row|null>,"after":<row|null>,"op":"c"|"d"}
# compact, in that order (UPDATE_AFTER as "c", UPDATE_BEFORE as "d"). For inserts the after
# object is the bytes between this prefix and suffix: a raw `"op":"c"}` can only be the outer
# key (a quote inside a JSON string is escaped), so slicing is exact. Anything else is parsed.
_DBZ_PREFIX = b'{"before":null,"after":'
_DBZ_INSERT_SUFFIXES = (b',"op":"c"}', b',"op":"r"}', b',"op":"u"}')
_DBZ_UPSERT_OPS = ("c", "r", "u")  # create, snapshot read, update: their `after` is the row
_DBZ_SKIP_OPS = ("d",)  # delete / retraction: the newer revision is its own message


def debezium_row(value: bytes | None) -> bytes | None:
    """The `after` row of an insert/update, None for a delete/retraction (skipped)."""
    if value is None:
        return None  # a tombstone after a delete: nothing to load
    if value.startswith(_DBZ_PREFIX):
        for suffix in _DBZ_INSERT_SUFFIXES:
            if value.endswith(suffix):
                after = value[len(_DBZ_PREFIX) : -len(suffix)]
                if _is_object(after):
                    return after
    return _debezium_parsed(value)


def _debezium_parsed(value: bytes) -> bytes | None:
    try:
        doc = json.loads(value)
    except ValueError as exc:
        raise BadRow(f"not JSON: {exc}") from None
    if isinstance(doc, dict) and "payload" in doc and "op" not in doc:
        doc = doc["payload"]  # debezium-json.schema-include = true
    if not isinstance(doc, dict) or not isinstance(doc.get("op"), str):
        raise BadRow("not a debezium-json change (no op)")
    op = doc["op"]
    if op in _DBZ_SKIP_OPS:
        return None
    if op not in _DBZ_UPSERT_OPS:
        raise BadRow(f"unknown debezium op {op!r}")
    after = doc.get("after")
    if not isinstance(after, dict):
        raise BadRow(f"op {op!r} without an after row")
    return json.dumps(after, separators=(",", ":"), ensure_ascii=False).encode()


EXTRACTORS: dict[str, Callable[[bytes | None], bytes | None]] = {
    JSON_ROWS: json_row,
    DEBEZIUM_JSON: debezium_row,
    UPSERT_JSON: upsert_row,
}

# ----------------------------------------------------------------------------- batches


class SourceMessage(Protocol):
    """What the loader reads of a Kafka message (confluent_kafka.Message)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...


@dataclass
class Batch:
    """Pending rows of one table: `rows[i]` came from `sources[i]`; `rejected` are messages
    dead-lettered without an insert; `next_offsets` covers every message added."""

    table: str
    columns: tuple[str, ...]
    rows: list[bytes] = field(default_factory=list)
    sources: list[SourceMessage] = field(default_factory=list)
    rejected: list[tuple[SourceMessage, str]] = field(default_factory=list)
    skipped: int = 0
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    started: float | None = None
    commit: list = field(default_factory=list)  # TopicPartitions, set when handed off

    def add(self, msg: SourceMessage, extract: Callable[[bytes | None], bytes | None]) -> None:
        if self.started is None:
            self.started = time.monotonic()
        try:
            row = extract(msg.value())
        except BadRow as exc:
            self.rejected.append((msg, str(exc)))
        else:
            if row is None:
                self.skipped += 1
            else:
                self.rows.append(row)
                self.sources.append(msg)
        self.next_offsets[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1

    def __len__(self) -> int:
        return len(self.rows) + len(self.rejected) + self.skipped

    def due(self, max_rows: int, max_wait_s: float, now: float) -> bool:
        if not len(self):
            return False
        return len(self.rows) >= max_rows or now - (self.started or now) >= max_wait_s

    def clear(self) -> None:
        self.rows, self.sources, self.rejected = [], [], []
        self.skipped, self.next_offsets, self.started, self.commit = 0, {}, None, []

    def fresh(self) -> Batch:
        return Batch(self.table, self.columns)


# ----------------------------------------------------------------------------- ClickHouse


class DataError(Exception):
    """ClickHouse rejected the rows themselves; `row` is the 1-based row it named, if any."""

    def __init__(self, code: int, message: str, row: int | None) -> None:
        super().__init__(message)
        self.code, self.message, self.row = code, message, row


class Unavailable(Exception):
    """Anything that is not the data's fault: retried forever."""


# Error codes that mean "this data cannot be stored" (ClickHouse's ErrorCodes.cpp):
# CANNOT_PARSE_TEXT, CANNOT_PARSE_ESCAPE_SEQUENCE, CANNOT_PARSE_QUOTED_STRING,
# CANNOT_PARSE_INPUT_ASSERTION_FAILED, ATTEMPT_TO_READ_AFTER_EOF, CANNOT_READ_ALL_DATA,
# CANNOT_PARSE_DATE, CANNOT_PARSE_DATETIME, TYPE_MISMATCH, ARGUMENT_OUT_OF_BOUND (decimal
# too big/small), CANNOT_CONVERT_TYPE, CANNOT_PARSE_NUMBER, INCORRECT_DATA (unknown or
# duplicate key), CANNOT_READ_ARRAY_FROM_TEXT, TOO_LARGE_STRING_SIZE,
# CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN, DECIMAL_OVERFLOW. Every other code (unknown table,
# too many parts, memory, timeouts...) is treated as transient: retrying never loses a row,
# dead-lettering a whole batch for a server problem would.
DATA_ERROR_CODES = frozenset(
    {6, 25, 26, 27, 32, 33, 38, 41, 53, 69, 70, 72, 117, 130, 131, 349, 407}
)
_CODE = re.compile(rb"Code: (\d+)")
_AT_ROW = re.compile(rb"\(at row (\d+)\)")


def classify(status: int, body: bytes) -> Exception | None:
    """None for success, else a DataError or an Unavailable for the HTTP response."""
    if status == 200:
        return None
    text = body.decode("utf-8", "replace").split("Stack trace")[0].strip()
    code = _CODE.search(body)
    if code and int(code.group(1)) in DATA_ERROR_CODES:
        row = _AT_ROW.search(body)
        return DataError(int(code.group(1)), text[:2000], int(row.group(1)) if row else None)
    return Unavailable(f"HTTP {status}: {text[:500]}")


class ClickHouseHttp:
    """One keep-alive HTTP connection to ClickHouse; inserts JSONEachRow bodies."""

    def __init__(
        self, host: str, port: int, user: str, password: str, timeout_s: float = 120.0
    ) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        # Basic auth, not the URL's user/password parameters: URLs end up in logs
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._headers = {"Content-Type": "text/plain", "Authorization": f"Basic {token}"}
        self._conn: http.client.HTTPConnection | None = None

    def insert(self, db: str, table: str, columns: Sequence[str], rows: Sequence[bytes]) -> None:
        sql = f"INSERT INTO {db}.{table} ({', '.join(columns)}) FORMAT JSONEachRow"
        path = "/?" + urllib.parse.urlencode({"query": sql})
        body = b"\n".join(rows)
        try:
            status, payload = self._post(path, body)
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timeout
            self.close()
            raise Unavailable(f"{type(exc).__name__}: {exc}") from None
        err = classify(status, payload)
        if err is not None:
            self.close()  # a failed insert may leave unread bytes: start clean
            raise err

    def _post(self, path: str, body: bytes) -> tuple[int, bytes]:
        reused = self._conn is not None
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        try:
            self._conn.request("POST", path, body=body, headers=self._headers)
            resp = self._conn.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            if not reused:
                raise
            # the server closed the idle keep-alive connection (keep_alive_timeout): once more
            # on a new one; a re-sent insert is harmless anyway (idempotent by table keys)
            self.close()
            return self._post(path, body)
        return resp.status, resp.read()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def clickhouse_http(settings: Settings) -> ClickHouseHttp:
    # Settings knows the native port only; the HTTP port comes from infra/ports.env's variable.
    port = int(os.environ.get("CLICKHOUSE_HTTP_PORT", "8123"))
    user, password = settings.clickhouse_credentials("loader")
    return ClickHouseHttp(settings.clickhouse_host, port, user, password)


# ----------------------------------------------------------------------------- isolation


def insert_isolating(
    rows: Sequence[bytes], insert: Callable[[Sequence[bytes]], None]
) -> list[tuple[int, str]]:
    """Insert `rows` through `insert` (which raises DataError for bad data and handles
    everything else itself); return (index, error) of every row rejected on its own.

    A rejected slice is split around the row ClickHouse named (the prefix before it, that row
    alone, the rest) or, without a usable row number, in halves. Every row ends either inserted
    or rejected alone, so a wrong row number only costs extra inserts. An insert is atomic (one
    block), so a rejected slice stored nothing."""
    bad: list[tuple[int, str]] = []
    todo = [(0, len(rows))]
    while todo:
        lo, hi = todo.pop()
        if lo >= hi:
            continue
        try:
            insert(rows[lo:hi])
        except DataError as exc:
            if hi - lo == 1:
                bad.append((lo, exc.message))
                continue
            todo.extend(reversed(_split(lo, hi, exc.row)))
    bad.sort()
    return bad


def _split(lo: int, hi: int, row: int | None) -> list[tuple[int, int]]:
    """The sub-slices to try next, in order."""
    if row is not None and 1 <= row <= hi - lo:
        k = lo + row - 1
        return [(lo, k), (k, k + 1), (k + 1, hi)]
    mid = (lo + hi) // 2
    return [(lo, mid), (mid, hi)]


# ----------------------------------------------------------------------------- retries


class Stopped(Exception):
    """SIGTERM/SIGINT while waiting: abandon the batch, commit nothing."""


@dataclass(frozen=True)
class Backoff:
    initial_s: float = 0.2
    max_s: float = 10.0

    def delays(self) -> Iterable[float]:
        delay = self.initial_s
        while True:
            yield delay
            delay = min(delay * 2, self.max_s)


# ----------------------------------------------------------------------------- metrics


class LoaderMetrics:
    def __init__(self, registry: CollectorRegistry, tables: Iterable[str]) -> None:
        by_table = ["table"]
        self.rows = Counter(
            "meterflow_loader_rows_inserted",
            "Rows ClickHouse acknowledged",
            by_table,
            registry=registry,
        )
        self.skipped = Counter(
            "meterflow_loader_rows_skipped",
            "Changelog deletes/retractions not loaded",
            by_table,
            registry=registry,
        )
        self.batches = Counter(
            "meterflow_loader_batches",
            "Batches inserted and committed",
            by_table,
            registry=registry,
        )
        self.latency = Histogram(
            "meterflow_loader_insert_duration_seconds",
            "Successful INSERT round trips",
            by_table,
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.retries = Counter(
            "meterflow_loader_insert_retries",
            "Failed attempts retried (ClickHouse or Kafka)",
            by_table,
            registry=registry,
        )
        self.dead = Counter(
            "meterflow_loader_dead_lettered",
            "Rows sent to the load-dlq topic",
            by_table,
            registry=registry,
        )
        self.last_insert = Gauge(
            "meterflow_loader_last_insert_timestamp_seconds",
            "Last acknowledged insert",
            by_table,
            registry=registry,
        )
        self.unavailable = Gauge(
            "meterflow_loader_clickhouse_unavailable",
            "1 while an insert is being retried (ClickHouse unavailable)",
            registry=registry,
        )
        self.commit_failures = Counter(
            "meterflow_loader_commit_failures",
            "Offset commits that failed after an insert (the rows are re-delivered: a no-op)",
            registry=registry,
        )
        self.lag = Gauge(
            "meterflow_loader_lag_records",
            "High watermark minus committed offset",
            ["topic", "partition"],
            registry=registry,
        )
        for t in tables:  # every series exists from the start, at 0
            for m in (self.rows, self.skipped, self.batches, self.retries, self.dead):
                m.labels(t)
            self.latency.labels(t)
            self.last_insert.labels(t)
        self.unavailable.set(0)


# ----------------------------------------------------------------------------- the loader


@dataclass(frozen=True)
class LoaderConfig:
    group_id: str = "meterflow-loader"
    max_rows: int = 50_000
    max_wait_s: float = 1.0
    once: bool = False
    idle_timeout_s: float = 15.0  # --once: give up waiting on an open transaction after this
    lag_interval_s: float = 5.0
    backoff: Backoff = Backoff()
    consume_batch: int = 10_000


def consumer_config(settings: Settings, group_id: str) -> dict:
    return {
        **settings.kafka_config("loader"),
        "group.id": group_id,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # While ClickHouse is down the loader retries without polling; librdkafka's maximum
        # keeps its group membership through a day of outage (the heartbeat thread runs on).
        "max.poll.interval.ms": 86_400_000,
        # A killed loader's partitions move to its successor after this (default 45 s).
        "session.timeout.ms": 10_000,
        "fetch.max.bytes": 64 * 1024 * 1024,
        "queued.max.messages.kbytes": 256 * 1024,
    }


class Loader:
    def __init__(
        self,
        settings: Settings,
        config: LoaderConfig,
        registry: CollectorRegistry,
        route_table: Sequence[Route] | None = None,
    ) -> None:
        from confluent_kafka import Consumer, Producer

        self.settings, self.config = settings, config
        self.routes = {r.topic: r for r in (route_table or routes(settings))}
        self.batches = {r.table: Batch(r.table, r.columns) for r in self.routes.values()}
        self.metrics = LoaderMetrics(registry, self.batches)
        self.clickhouse = clickhouse_http(settings)
        self.consumer = Consumer(consumer_config(settings, config.group_id))
        self.dlq = Producer(
            {
                **settings.kafka_config("loader"),
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
            }
        )
        self.stopping = False
        # Lag is measured in a thread of its own with its own client: committed offsets and
        # watermarks are broker round trips, and in the consuming thread they delayed every
        # batch behind them (~3 s added to event -> queryable at p50).
        self._assigned: frozenset[tuple[str, int]] = frozenset()
        self._lag_stop = threading.Event()
        self._lag_thread = threading.Thread(target=self._watch_lag, name="loader-lag", daemon=True)
        # One batch in flight: the insert thread waits on ClickHouse (no GIL held) while this
        # thread consumes the next batch. FIFO, so commits stay in offset order.
        self._handoff: queue.Queue[Batch | None] = queue.Queue(maxsize=1)
        self._worker = threading.Thread(target=self._work, name="loader-insert", daemon=True)
        self._failure: BaseException | None = None
        # Inserted (and dead-lettered) batches whose offsets the consuming thread commits: all
        # consumer calls stay on one thread (a commit from the insert thread can hang).
        self._inserted: queue.Queue[Batch] = queue.Queue()

    # -- lifecycle

    def stop(self, *_: object) -> None:
        self.stopping = True

    def run(self) -> int:
        """Until stopped (or drained, with --once); returns the exit status."""
        from connectors.kafka_admin import missing_topics

        topics = sorted(self.routes)
        dlqs = [r.dlq_topic for r in self.routes.values()]
        too_long = [t for t in [*topics, *dlqs] if len(t) > KAFKA_TOPIC_MAX]
        if too_long:
            raise ValueError(f"topic names longer than Kafka's {KAFKA_TOPIC_MAX}: {too_long}")
        # the loader may not create topics (nor may the broker auto-create them)
        missing = missing_topics(self.settings, "loader", [*topics, *dlqs])
        if missing:
            raise RuntimeError(
                f"topics missing, or the loader's principal may not see them: {missing} "
                "(`meterflow init` creates a deployment's topics and ACLs)"
            )
        self.consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        ends = self._end_offsets(topics) if self.config.once else {}
        log.info("loading %s into %s", topics, self.settings.clickhouse_database)
        self._worker.start()
        self._lag_thread.start()
        try:
            self._loop(ends)
            self._finish_worker()
        except Stopped:
            pass
        finally:
            signalled, self.stopping = self.stopping, True
            try:
                self._finish_worker()
            finally:
                self._lag_stop.set()
                self._lag_thread.join()
                self.clickhouse.close()
                self.consumer.close()
        if signalled:
            log.info("stopped: batches not yet inserted are abandoned, their offsets uncommitted")
        return 0

    def _loop(self, ends: dict[tuple[str, int], int]) -> None:
        last_progress = time.monotonic()
        while not self.stopping:
            msgs = self.consumer.consume(self.config.consume_batch, timeout=0.2)
            if msgs:
                last_progress = time.monotonic()
            self._add_all(msgs)
            self._commit_inserted()
            self._raise_worker_failure()
            now = time.monotonic()
            for batch in list(self.batches.values()):
                if batch.due(self.config.max_rows, self.config.max_wait_s, now):
                    self._submit(batch)
            if self.config.once and self._drained(ends, last_progress):
                for batch in list(self.batches.values()):
                    self._submit(batch)
                return

    # -- the insert thread

    def _submit(self, batch: Batch) -> None:
        """Hand `batch` to the insert thread, with the offsets it will commit."""
        from confluent_kafka import TopicPartition

        if not len(batch):
            return
        tps = [TopicPartition(t, p, o) for (t, p), o in batch.next_offsets.items()]
        # The consumer's position can be past the batch's last message (a transaction's commit
        # marker, an aborted transaction's records): every record below it has been read into
        # this batch (one table per topic), so committing it is exact and lets lag reach 0.
        for tp, pos in zip(tps, self.consumer.position(tps), strict=True):
            tp.offset = max(tp.offset, pos.offset)
        batch.commit = tps
        self.batches[batch.table] = batch.fresh()
        while True:
            self._raise_worker_failure()
            try:
                self._handoff.put(batch, timeout=0.2)
                return
            except queue.Full:  # the previous batch is still being inserted (or retried)
                self._commit_inserted()
                if self.stopping:
                    raise Stopped() from None

    def _work(self) -> None:
        while True:
            batch = self._handoff.get()
            if batch is None or self.stopping:
                return
            try:
                self._flush(batch)
            except Stopped:
                return
            except BaseException as exc:  # re-raised in the consuming thread
                self._failure = exc
                return

    def _raise_worker_failure(self) -> None:
        if self._failure is not None:
            raise RuntimeError("the insert thread failed") from self._failure

    def _finish_worker(self) -> None:
        """Let the in-flight batch finish (a stop abandons it at its next retry), then end."""
        if not self._worker.is_alive():
            self._commit_inserted()
            self._raise_worker_failure()
            return
        while True:
            try:
                self._handoff.put(None, timeout=0.2)
                break
            except queue.Full:
                if not self._worker.is_alive():
                    break
        self._worker.join()
        self._commit_inserted()  # what was inserted before the end or the stop
        self._raise_worker_failure()

    def _commit_inserted(self) -> None:
        while True:
            try:
                batch = self._inserted.get_nowait()
            except queue.Empty:
                return
            self._commit(batch)

    def _add_all(self, msgs: list) -> None:
        from confluent_kafka import KafkaException

        routes, batches, extractors = self.routes, self.batches, EXTRACTORS
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                log.warning("consumer: %s", err)
                continue
            route = routes[m.topic()]
            batches[route.table].add(m, extractors[route.fmt])

    def _on_assign(self, _consumer: object, partitions: list) -> None:
        self._assigned = self._assigned | {(tp.topic, tp.partition) for tp in partitions}

    def _on_revoke(self, _consumer: object, partitions: list) -> None:
        # Eager rebalancing revokes everything and the next assignment starts at the committed
        # offsets, so pending rows are simply re-read: drop them, never commit them.
        for batch in self.batches.values():
            batch.clear()
        self._assigned = self._assigned - {(tp.topic, tp.partition) for tp in partitions}
        for tp in partitions:
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(tp.topic, str(tp.partition))

    # -- --once

    def _end_offsets(self, topics: list[str]) -> dict[tuple[str, int], int]:
        from confluent_kafka import TopicPartition

        ends = {}
        md = self.consumer.list_topics(timeout=30).topics
        for t in topics:
            for p in md[t].partitions:
                _, hi = self.consumer.get_watermark_offsets(TopicPartition(t, p), timeout=30)
                ends[(t, p)] = hi
        return ends

    def _drained(self, ends: dict[tuple[str, int], int], last_progress: float) -> bool:
        from confluent_kafka import TopicPartition

        pending = {tp: end for tp, end in ends.items() if end > 0}
        if pending:
            tps = [TopicPartition(t, p) for t, p in pending]
            assigned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
            if not set(pending) <= assigned:
                return False
            positions = {(tp.topic, tp.partition): tp.offset for tp in self.consumer.position(tps)}
            committed = {
                (tp.topic, tp.partition): tp.offset
                for tp in self.consumer.committed(tps, timeout=30)
            }
            if any(max(positions[k], committed[k]) < end for k, end in pending.items()):
                if time.monotonic() - last_progress < self.config.idle_timeout_s:
                    return False
                log.warning(
                    "--once: nothing new for %.0fs before the end offsets (an open "
                    "transaction?); stopping at the committed data",
                    self.config.idle_timeout_s,
                )
        return True

    # -- flush: insert, dead-letter, commit

    def _flush(self, batch: Batch) -> None:
        if not len(batch):
            return
        table, m = batch.table, self.metrics
        bad = insert_isolating(batch.rows, lambda rows: self._insert(table, batch.columns, rows))
        rejected = [*batch.rejected, *((batch.sources[i], why) for i, why in bad)]
        if rejected:
            self._dead_letter(table, rejected)
        self._inserted.put(batch)  # committed by the consuming thread, in this order
        m.rows.labels(table).inc(len(batch.rows) - len(bad))
        m.skipped.labels(table).inc(batch.skipped)
        m.dead.labels(table).inc(len(rejected))
        m.batches.labels(table).inc()

    def _insert(self, table: str, columns: Sequence[str], rows: Sequence[bytes]) -> None:
        """One insert, retried until ClickHouse takes it or rejects the data (DataError)."""
        db = self.settings.clickhouse_database
        for delay in self.config.backoff.delays():
            t0 = time.perf_counter()
            try:
                self.clickhouse.insert(db, table, columns, rows)
            except Unavailable as exc:
                self._wait_retry(table, f"insert into {db}.{table}: {exc}", delay)
                continue
            self.metrics.latency.labels(table).observe(time.perf_counter() - t0)
            self.metrics.last_insert.labels(table).set(time.time())
            self.metrics.unavailable.set(0)
            return

    def _wait_retry(self, table: str, why: str, delay: float) -> None:
        self.metrics.retries.labels(table).inc()
        self.metrics.unavailable.set(1)
        log.warning("%s; retrying in %.1fs (offsets not committed)", why, delay)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            if self.stopping:
                raise Stopped()
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def _dead_letter(self, table: str, rejected: list[tuple[SourceMessage, str]]) -> None:
        """Every rejected row durably in its load-dlq topic before the offsets move on."""
        errors: list[str] = []

        def on_delivery(err: object, _msg: object) -> None:
            if err is not None:
                errors.append(str(err))

        for delay in self.config.backoff.delays():
            errors.clear()
            for msg, why in rejected:
                self.dlq.produce(
                    f"{msg.topic()}{LOAD_DLQ_SUFFIX}",
                    dlq_record(msg, table, why),
                    key=msg.key(),
                    on_delivery=on_delivery,
                )
            left = self.dlq.flush(30)
            if not errors and not left:
                for msg, why in rejected:
                    log.error(
                        "dead-lettered %s[%s]@%s: %s",
                        msg.topic(),
                        msg.partition(),
                        msg.offset(),
                        why[:300],
                    )
                return
            # re-sending all of them is fine: a dead letter is a report, read by people
            self._wait_retry(table, f"load-dlq delivery: {errors[:3]} ({left} unconfirmed)", delay)

    def _commit(self, batch: Batch) -> None:
        from confluent_kafka import KafkaException

        try:
            result = self.consumer.commit(offsets=batch.commit, asynchronous=False)
        except KafkaException as exc:
            self.metrics.commit_failures.inc()
            log.warning("offset commit failed (%s): the batch will be re-delivered", exc)
            return
        failed = [tp for tp in result or [] if tp.error is not None]
        if failed:
            self.metrics.commit_failures.inc()
            log.warning("offset commit failed for %s: re-delivered later", failed)

    # -- lag

    def _watch_lag(self) -> None:
        """Every lag_interval_s: high watermark minus the group's committed offset of each
        partition assigned to this loader. Its own consumer object (not a group member)."""
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        watcher = Consumer(consumer_config(self.settings, self.config.group_id))
        try:
            while True:
                mine = [TopicPartition(t, p) for t, p in sorted(self._assigned)]
                try:
                    for (t, p), n in committed_lag(watcher, mine, 5).items() if mine else ():
                        if (t, p) in self._assigned:  # not revoked meanwhile
                            self.metrics.lag.labels(t, str(p)).set(n)
                except KafkaException as exc:  # lag is informative: never stop loading for it
                    log.warning("lag refresh failed: %s", exc)
                if self._lag_stop.wait(self.config.lag_interval_s):
                    return
        finally:
            watcher.close()


def lag(settings: Settings, group_id: str) -> dict[tuple[str, int], int]:
    """Records of the routed topics that the loader group `group_id` has not yet committed,
    per partition (commit markers included: the loader commits past them, so 0 is reachable)."""
    with _lag_probe(settings, group_id) as probe:
        return probe()


@contextlib.contextmanager
def _lag_probe(settings: Settings, group_id: str) -> Iterator[Callable[[], dict]]:
    """One consumer for as many lag readings as the caller takes."""
    from confluent_kafka import Consumer, TopicPartition

    # assign-free: committed() and watermarks do not join the group or disturb its members
    c = Consumer(consumer_config(settings, group_id))
    try:
        md = c.list_topics(timeout=30).topics
        topics = sorted(r.topic for r in routes(settings))
        tps = [TopicPartition(t, p) for t in topics for p in md[t].partitions]
        yield lambda: committed_lag(c, tps, 30)
    finally:
        c.close()


def committed_lag(consumer: Any, tps: list, timeout_s: float) -> dict[tuple[str, int], int]:
    """High watermark minus the group's committed offset (the log start when none), per
    partition."""
    out = {}
    for tp in consumer.committed(tps, timeout=timeout_s):
        lo, hi = consumer.get_watermark_offsets(tp, timeout=timeout_s, cached=False)
        done = tp.offset if tp.offset >= 0 else lo
        out[(tp.topic, tp.partition)] = max(0, hi - done)
    return out


def wait_caught_up(settings: Settings, group_id: str, timeout_s: float) -> None:
    """Until the running loader of `group_id` has committed up to its topics' ends (read
    afresh each time: records still being written are waited for too); TimeoutError with what
    is left."""
    deadline = time.monotonic() + timeout_s
    with _lag_probe(settings, group_id) as probe:
        while True:
            left = {k: n for k, n in probe().items() if n}
            if not left:
                return
            if time.monotonic() > deadline:
                behind = sum(left.values())
                raise TimeoutError(f"loader {group_id} still {behind} records behind: {left}")
            time.sleep(0.5)


def dlq_record(msg: SourceMessage, table: str, error: str) -> bytes:
    """The load-dlq JSON: where the row came from, why ClickHouse refused it, the row itself."""
    value = msg.value() or b""
    doc: dict[str, object] = {
        "source_topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "table": table,
        "error": error,
    }
    try:
        doc["value"] = value.decode("utf-8")
    except UnicodeDecodeError:
        doc["value_base64"] = base64.b64encode(value).decode()
    return json.dumps(doc, ensure_ascii=False).encode()


def run(settings: Settings, config: LoaderConfig, metrics_port: int | None) -> int:
    """`meterflow load`: metrics on 127.0.0.1:metrics_port (None: none), SIGTERM/SIGINT stop."""
    logging.basicConfig(level=logging.INFO, format="[loader] %(levelname)s %(message)s")
    registry = CollectorRegistry()
    loader = Loader(settings, config, registry)
    if metrics_port is not None:
        start_http_server(metrics_port, addr="127.0.0.1", registry=registry)
    previous = {s: signal.signal(s, loader.stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return loader.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
