"""Streaming metering job.

    Kafka (raw Confluent Avro bytes + topic/partition/offset)
      -> decode + validate + measure (Python, Arrow batches)   --invalid--> dead-letter topic
      -> watermark on event time (bounded out-of-orderness, idleness)
      -> deduplicate by event_id within a horizon (Flink state with TTL)
      -> lateness: event time < watermark - allowed lateness   --late--> late topic + late_events
      -> raw events -> ClickHouse events
      -> per meter, per window size: tumbling window aggregate, re-fired for late-but-allowed
         events -> ClickHouse usage_windows (revision = event count)
      -> rating: per (customer, meter, meter version) and billing period, each firing's
         telescoping amount price(after) - price(before) with the plan version in force
         -> rated_usage, quota alerts (jobs/rating_operator.py)
      -> credit alerts: a customer's cost so far against its prepaid credit -> alerts + topic

Every Kafka record ends in exactly one of: events (accepted), dead letters, late, or is dropped
as a duplicate by the dedup operator (its numRecordsIn - numRecordsOut).

Stages hand rows on by field name: Table -> DataStream rows carry their field names, and the
Python UDFs' positional columns are named from the one tuple that also writes their SQL call.

Run on the local mini-cluster:   python -m jobs.metering [--bounded] [--restore latest]
Submit to a cluster:             flink run -py jobs/metering.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from pyflink.common import Configuration, Types
from pyflink.datastream import (
    DataStream,
    StreamExecutionEnvironment,
)
from pyflink.table import DataTypes, Schema, StreamTableEnvironment, Table
from pyflink.table.expressions import col
from pyflink.table.udf import FunctionContext, ScalarFunction, udf

from jobs.job_args import (
    DEFAULT_CHECKPOINTS,
    RESTART_STRATEGY,
    add_job_args,
    optional_path,
    replay_range,
    resolve_checkpoint,
)
from jobs.rating_operator import (
    ALERT_COLUMNS,
    ALERT_FIELDS,
    ALERTS,
    RATED_COLUMNS,
    RATED_FIELDS,
    CreditAlerts,
    RateWindows,
    dec,
    row_type,
)
from jobs.streaming.environment import JARS_DIR, LOOPBACK
from jobs.streaming.sql import interval, kafka_options
from meterflow.credits import DEFAULT_CREDITS_FILE
from meterflow.decoding import Limits
from meterflow.meters import DEFAULT_METERS_FILE, Aggregation, Meter, load_meters
from meterflow.price_book import DEFAULT_PRICES_FILE
from meterflow.settings import Settings
from meterflow.subscriptions import DEFAULT_SUBSCRIPTIONS_FILE

Q = DataTypes.DECIMAL(38, 12)


@dataclass(frozen=True)
class JobOptions:
    bounded: bool = False  # read up to the offsets present at start, close every window, stop
    parallelism: int = 2
    out_of_orderness_s: int = 5
    allowed_lateness_s: int = 300
    idle_timeout_s: int = 5
    dedup_horizon_s: int = 3600
    checkpoint_interval_s: int = 10
    checkpoint_dir: Path = DEFAULT_CHECKPOINTS
    restore_from: str | None = None  # a checkpoint path, or "latest"
    group_id: str = "meterflow-metering"
    meters_file: Path = DEFAULT_METERS_FILE
    # Real-time rating needs both; without them windows are metered but not rated.
    prices_file: Path | None = DEFAULT_PRICES_FILE
    subscriptions_file: Path | None = DEFAULT_SUBSCRIPTIONS_FILE
    credits_file: Path | None = DEFAULT_CREDITS_FILE  # credit-balance alerts ('none': off)
    limits: Limits = field(default_factory=Limits)
    replay: tuple[int, int] | None = None  # Kafka record time range [from, to) in ms


# ----------------------------------------------------------------------------- environment


def table_env(opts: JobOptions) -> tuple[StreamExecutionEnvironment, StreamTableEnvironment]:
    # On a local mini-cluster PyFlink runs every Python UDF inside this client process
    # ("loopback"), so all Python work of all operators and subtasks shares one GIL. Separate
    # worker processes let the decode and sink stages use every core.
    os.environ.setdefault("_python_worker_execution_mode", "process")
    jars = sorted(JARS_DIR.glob("*.jar"))
    if len(jars) < 2:
        raise SystemExit(f"Flink connector jars missing in {JARS_DIR}: run 'make setup'")
    conf = Configuration()
    settings = {
        "parallelism.default": str(opts.parallelism),
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
        "table.local-time-zone": "UTC",
        # The Kafka connector's admin client logs while a bounded job shuts down, after Flink
        # closed the user-code classloader; the leak check turns that into an error trace.
        "classloader.check-leaked-classloader": "false",
        # A silent partition must not hold back the watermark of the others.
        "table.exec.source.idle-timeout": f"{opts.idle_timeout_s}s",
        # Dedup horizon: an id is forgotten this long after it was first seen.
        "table.exec.state.ttl": f"{opts.dedup_horizon_s}s",
        # Windows stay open for allowed lateness after they fire; each late-but-allowed event
        # re-fires its window at once (a higher revision).
        "table.exec.emit.allow-lateness": f"{opts.allowed_lateness_s}s",
        "table.exec.emit.late-fire.enabled": "true",
        "table.exec.emit.late-fire.delay": "0s",
        # Exactly-once results: offsets and operator state in checkpoints, kept after a crash.
        "execution.checkpointing.interval": f"{opts.checkpoint_interval_s}s",
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.dir": opts.checkpoint_dir.resolve().as_uri(),
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "3",
        # Chained operators hand rows on without a defensive copy each (the SQL runtime does
        # not mutate its inputs); the copies showed up as the top Java frames of the job.
        "pipeline.object-reuse": "true",
        # Python UDFs: a bundle ends in a synchronous Java<->Python flush, so small bundles (the
        # default 1,000) leave both sides idle in turn. Larger bundles of mid-sized Arrow batches
        # measured ~1.7x the throughput; a bundle is still flushed every second (latency) and
        # before every checkpoint (exactly-once).
        "python.fn-execution.arrow.batch.size": "5000",
        "python.fn-execution.bundle.size": "100000",
        "python.fn-execution.bundle.time": "1000",
        # Python keyed state (the rating operator's) goes to the Java state backend for every
        # key not in the worker's cache (default 1,000 keys); with 1,000 customers x 8 meters
        # a larger cache gave 2.4x the rating throughput (1,012 -> 2,417 events/s, single runs).
        "python.state.cache-size": "100000",
        **LOOPBACK,
        **RESTART_STRATEGY,
        # Prometheus scrape endpoint of this job's metrics. A local mini-cluster loads metric
        # reporters from its classpath only, so infra/setup.sh copies the reporter PyFlink ships
        # under plugins/ into pyflink/lib. A port range so several jobs can run side by side:
        # each takes the first free port (FLINK_PROM_PORTS, infra/ports.env).
        "metrics.reporter.prom.factory.class": (
            "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
        ),
        "metrics.reporter.prom.port": os.environ.get("FLINK_PROM_PORTS", "9250-9260"),
    }
    if opts.restore_from:
        settings["execution.state-recovery.path"] = resolve_checkpoint(
            opts.restore_from, opts.checkpoint_dir
        )
    for k, v in settings.items():
        conf.set_string(k, v)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    # Appended, not set as pipeline.jars: under `flink run` that setting would replace the jars
    # the CLI ships (flink-python's operators among them).
    env.add_jars(*(j.as_uri() for j in jars))
    t_env = StreamTableEnvironment.create(env)
    for k, v in settings.items():
        if k.startswith("table."):
            t_env.get_config().set(k, v)
    return env, t_env


# ----------------------------------------------------------------------------- source


# The Kafka source table's columns in table order, which is the order the decode UDF gets them in.
KAFKA_RECORD_FIELDS = (
    ("payload", "BYTES"),
    ("topic", "STRING METADATA VIRTUAL"),
    ("partition", "INT METADATA VIRTUAL"),
    ("offset", "BIGINT METADATA VIRTUAL"),
    ("record_ts", "TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL"),
)
KAFKA_RECORD_COLUMNS = tuple(name for name, _ in KAFKA_RECORD_FIELDS)


def source_ddl(settings: Settings, opts: JobOptions) -> str:
    bounded = "'scan.bounded.mode' = 'latest-offset'," if opts.bounded else ""
    startup = "'scan.startup.mode' = 'group-offsets',"
    if opts.replay is not None:
        # a replay reads the records whose Kafka timestamps fall in [from, to), then stops
        lo, hi = opts.replay
        startup = f"'scan.startup.mode' = 'timestamp', 'scan.startup.timestamp-millis' = '{lo}',"
        bounded = f"'scan.bounded.mode' = 'timestamp', 'scan.bounded.timestamp-millis' = '{hi}',"
    columns = ",\n        ".join(f"`{name}` {spec}" for name, spec in KAFKA_RECORD_FIELDS)
    return f"""
    CREATE TEMPORARY TABLE kafka_records (
        {columns}
    ) WITH (
        'connector' = 'kafka',
        'topic' = '{settings.events_topic}',
        {kafka_options(settings, "job")},
        'properties.group.id' = '{opts.group_id}',
        'properties.auto.offset.reset' = 'earliest',
        'properties.isolation.level' = 'read_committed',
        {startup}
        {bounded}
        'value.format' = 'raw'
    )
    """


# ----------------------------------------------------------------------------- decode stage

BASE_FIELDS: list[tuple[str, object]] = [
    ("status", DataTypes.STRING()),  # "OK" or the dead-letter reason code
    ("detail", DataTypes.STRING()),
    ("payload", DataTypes.BYTES()),
    ("kafka_topic", DataTypes.STRING()),
    ("kafka_partition", DataTypes.INT()),
    ("kafka_offset", DataTypes.BIGINT()),
    ("record_ts_ms", DataTypes.BIGINT()),
    ("event_id", DataTypes.STRING()),
    ("event_name", DataTypes.STRING()),
    ("customer_id", DataTypes.STRING()),
    ("ts", DataTypes.TIMESTAMP(3)),
    ("ts_ms", DataTypes.BIGINT()),
    ("event_value", Q),
    ("properties", DataTypes.STRING()),
    ("source", DataTypes.STRING()),
    ("schema_id", DataTypes.INT()),
]


# Per meter i only the columns its aggregation needs: m{i}_d (dimensions JSON; null when the
# meter does not select the event), m{i}_q (quantity), m{i}_u (unique key), m{i}_l (latest key).
# Rows are wide and cross Arrow, two DataStream conversions and two exchanges: width costs.
FEE = DataTypes.DECIMAL(38, 18)


def fee_meters(opts: JobOptions) -> frozenset[str]:
    """Meters some plan prices with a per-event clamp (percentage with min/max): their per-event
    fee is computed at decode time, where the single event is still at hand."""
    if opts.prices_file is None or opts.subscriptions_file is None:
        return frozenset()
    from meterflow.price_book import load_price_book

    book = load_price_book(opts.prices_file)
    return frozenset(
        c.meter
        for plan in book.plans.values()
        for v in plan.versions
        for c in v.charges.values()
        if c.model.needs_events
    )


def meter_columns(m: Meter, fees: frozenset[str] = frozenset()) -> list[tuple[str, str, object]]:
    """(column suffix, Measurement attribute, SQL type) for one meter."""
    cols: list[tuple[str, str, object]] = [("d", "dimensions", DataTypes.STRING())]
    if m.id in fees:
        cols.append(("f", "fee", FEE))
    if m.aggregation.needs_quantity:
        cols.append(("q", "quantity", Q))
    if m.aggregation is Aggregation.UNIQUE_COUNT:
        cols.append(("u", "unique_key", DataTypes.STRING()))
    if m.aggregation is Aggregation.LATEST:
        cols.append(("l", "latest_key", DataTypes.STRING()))
    return cols


def decoded_fields(
    meters: Sequence[Meter], fees: frozenset[str] = frozenset()
) -> list[tuple[str, object]]:
    return BASE_FIELDS + [
        (f"m{i}_{suffix}", typ)
        for i, m in enumerate(meters)
        for suffix, _, typ in meter_columns(m, fees)
    ]


def by_name(names: Sequence[str], columns: Sequence[pd.Series]) -> dict[str, pd.Series]:
    """A pandas UDF's positional columns under the names of the one tuple that orders them."""
    return dict(zip(names, columns, strict=True))


def _epoch_ms(col: pd.Series) -> list[int]:
    """TIMESTAMP_LTZ column (tz-aware or naive UTC) -> epoch milliseconds."""
    values = pd.to_datetime(col, utc=True)
    # unit-safe: pandas may hand us datetime64 in ns, us or ms
    return ((values - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)).tolist()


class DecodeRecords(ScalarFunction):
    """Arrow batch of Kafka records -> one row per record: decoded event + measurements, or a
    dead-letter verdict. Deterministic given the record, so a replay decodes identically."""

    def __init__(
        self, settings: Settings, meters: Sequence[Meter], opts: JobOptions, fees: frozenset[str]
    ) -> None:
        self.settings, self.meters, self.limits = settings, list(meters), opts.limits
        self.fees = fees
        self.rating_files = (str(opts.subscriptions_file), str(opts.prices_file))
        self.index = {m.id: i for i, m in enumerate(self.meters)}
        self.columns = [
            [(f"m{i}_{suffix}", attr) for suffix, attr, _ in meter_columns(m, fees)]
            for i, m in enumerate(self.meters)
        ]

    def open(self, function_context: FunctionContext) -> None:
        from connectors.registry import schema_fetcher
        from meterflow.decoding import SchemaCache
        from meterflow.events import schema_text

        self.schemas = SchemaCache(schema_fetcher(self.settings), schema_text(1))
        self.rater = None
        if self.fees:
            from meterflow.price_book import load_price_book
            from meterflow.rating import Rater
            from meterflow.subscriptions import load_subscriptions

            subs, prices = self.rating_files
            self.rater = Rater(load_subscriptions(subs), load_price_book(prices))
        group = function_context.get_metric_group()
        self.records_in = group.counter("records_in")
        self.dead_letters = group.counter("records_dead_lettered")

    def fee(self, event, ms):
        """The per-event fee of a clamped percentage charge in force for this customer and
        event time (None when the customer's plan prices the meter otherwise)."""
        assert self.rater is not None
        at = datetime.fromtimestamp(event.timestamp_ms / 1000, UTC)
        rc = self.rater.context(event.customer_id, ms.meter_id, at)
        if rc is None or not rc.model.needs_events or ms.quantity is None:
            return None
        return rc.model.event_quantity(ms.quantity)

    def eval(self, batch: pd.DataFrame) -> pd.DataFrame:  # type: ignore[override]
        from meterflow.decoding import Accepted, decode

        names = [name for name, _ in decoded_fields(self.meters, self.fees)]
        cols: dict[str, list] = {name: [] for name in names if name != "ts"}
        # the batch's columns are unnamed (0, 1, ...): name them by the source table's order
        records = by_name(KAFKA_RECORD_COLUMNS, [batch.iloc[:, i] for i in range(batch.shape[1])])
        for payload, topic, part, off, rts in zip(
            records["payload"],
            records["topic"],
            records["partition"],
            records["offset"],
            _epoch_ms(records["record_ts"]),
            strict=True,
        ):
            rts_ms = int(rts)
            v = decode(payload, rts_ms, self.schemas, self.meters, self.limits)
            cols["payload"].append(payload)
            cols["kafka_topic"].append(topic)
            cols["kafka_partition"].append(int(part))
            cols["kafka_offset"].append(int(off))
            cols["record_ts_ms"].append(rts_ms)
            found: dict[int, object] = {}
            if isinstance(v, Accepted):
                cols["status"].append("OK")
                cols["detail"].append(None)
                cols["event_id"].append(v.event_id)
                cols["event_name"].append(v.event_name)
                cols["customer_id"].append(v.customer_id)
                cols["ts_ms"].append(v.timestamp_ms)
                cols["event_value"].append(v.value)
                cols["properties"].append(
                    json.dumps(v.properties, sort_keys=True, separators=(",", ":"))
                )
                cols["source"].append(v.source)
                cols["schema_id"].append(v.schema_id)
                for ms in v.measurements:
                    found[self.index[ms.meter_id]] = ms
            else:
                self.dead_letters.inc()
                cols["status"].append(v.reason)
                cols["detail"].append(v.detail)
                for name in (
                    "event_id",
                    "event_name",
                    "customer_id",
                    "ts_ms",
                    "event_value",
                    "properties",
                    "source",
                    "schema_id",
                ):
                    cols[name].append(None)
            for i, meter_cols in enumerate(self.columns):
                ms = found.get(i)
                for name, attr in meter_cols:
                    if ms is None:
                        cols[name].append(None)
                    elif attr == "fee":
                        cols[name].append(self.fee(v, ms))
                    else:
                        cols[name].append(getattr(ms, attr))
        self.records_in.inc(len(batch))
        out = pd.DataFrame(cols)
        # The rowtime column may not be null: dead letters get the epoch, which never advances
        # the watermark (max seen - bound) and never reaches an event-time operator.
        ts_ms = pd.Series([0 if t is None else t for t in cols["ts_ms"]], dtype="int64")
        out.insert(names.index("ts"), "ts", pd.to_datetime(ts_ms, unit="ms"))
        return out


def decoded_table(
    t_env: StreamTableEnvironment, settings: Settings, meters: Sequence[Meter], opts: JobOptions
) -> Table:
    fees = fee_meters(opts)
    fields = decoded_fields(meters, fees)
    row_type = DataTypes.ROW([DataTypes.FIELD(n, t) for n, t in fields])
    decode = udf(
        DecodeRecords(settings, meters, opts, fees), result_type=row_type, func_type="pandas"
    )
    t_env.execute_sql(source_ddl(settings, opts))
    decoded = t_env.from_path("kafka_records").map(decode)
    # Back through a DataStream to put the watermark on the *validated* event time: a record
    # with a bogus future timestamp is dead-lettered above and never moves the watermark.
    schema = Schema.new_builder()
    for name, typ in fields:
        schema.column(name, typ)
    schema.column_by_expression("pt", "PROCTIME()")
    schema.watermark("ts", f"ts - {interval(opts.out_of_orderness_s)}")
    return t_env.from_data_stream(t_env.to_data_stream(decoded), schema.build())


# ----------------------------------------------------------------------------- sinks


class ClickHouseBatchWriter(ScalarFunction):
    """Writes each Arrow batch it receives in one INSERT; returns 1 per row.

    Flink finishes a Python bundle before it completes a checkpoint, so every row before a
    barrier is in ClickHouse when the checkpoint is taken: at-least-once. Each target table is a
    ReplacingMergeTree whose key makes a replayed row a no-op: exactly-once results.
    """

    table = ""
    columns: tuple[str, ...] = ()
    # The UDF's arguments by name, in the order its SQL call passes them (`sql_call`).
    args: tuple[str, ...] = ()

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def is_deterministic(self) -> bool:
        return False  # a side effect: the planner must neither fold nor reuse it

    def open(self, function_context: FunctionContext) -> None:
        from connectors.clickhouse import connect

        self.ch = connect(self.settings, self.settings.clickhouse_database, role="loader")
        group = function_context.get_metric_group()
        self.rows_written = group.counter(f"{self.table}_rows")
        # Sink batch latency: cumulative INSERT milliseconds and INSERT count (their rates give
        # the mean batch latency), plus the last batch's milliseconds as a gauge.
        self.insert_ms = group.counter(f"{self.table}_insert_ms")
        self.inserts = group.counter(f"{self.table}_inserts")
        self.last_insert_ms = 0
        group.gauge(f"{self.table}_last_insert_ms", lambda: self.last_insert_ms)

    @classmethod
    def sql_call(cls, name: str, **exprs: str) -> str:
        """The SQL call of this writer registered as `name`: each argument the column named as
        in `args`, or the expression `exprs` gives for that name."""
        return f"{name}({', '.join(exprs.get(a, a) for a in cls.args)})"

    def rows(self, cols: Mapping[str, pd.Series]) -> list[tuple]:
        raise NotImplementedError

    def eval(self, *args: pd.Series) -> pd.Series:  # type: ignore[override]
        n = next(len(a) for a in args if isinstance(a, pd.Series))
        # the planner passes constant arguments (a literal meter version) as plain scalars
        cols = [a if isinstance(a, pd.Series) else pd.Series([a] * n) for a in args]
        rows = self.rows(by_name(self.args, cols))
        if rows:
            import time

            t0 = time.perf_counter()
            self.ch.execute(
                f"INSERT INTO {self.settings.clickhouse_database}.{self.table} "
                f"({', '.join(self.columns)}) VALUES",
                rows,
            )
            ms = round((time.perf_counter() - t0) * 1000)
            self.last_insert_ms = ms
            self.insert_ms.inc(ms)
            self.inserts.inc()
            self.rows_written.inc(len(rows))
        return pd.Series([1] * n, dtype="int64")


EVENT_COLUMNS = (
    "customer_id", "event_id", "event_name", "timestamp_ms", "value", "properties", "source",
    "schema_id", "kafka_topic", "kafka_partition", "kafka_offset",
)  # fmt: skip
# the decoded columns an event row is written from, in EVENT_COLUMNS order
EVENT_ARGS = (
    "customer_id", "event_id", "event_name", "ts_ms", "event_value", "properties", "source",
    "schema_id", "kafka_topic", "kafka_partition", "kafka_offset",
)  # fmt: skip


def _event_rows(
    cols: Mapping[str, pd.Series], now: datetime, extra_ints: Sequence[str] = ()
) -> list[tuple]:
    # column-wise conversions: Python-level work per event is the cost to watch here
    def ints(name: str) -> list[int]:
        return cols[name].astype("int64").tolist()

    sources = [s or "" for s in cols["source"]]
    fields = (cols["customer_id"], cols["event_id"], cols["event_name"], ints("ts_ms"),
              cols["event_value"], cols["properties"], sources, ints("schema_id"),
              cols["kafka_topic"], ints("kafka_partition"), ints("kafka_offset"),
              *(ints(name) for name in extra_ints), [now] * len(sources))  # fmt: skip
    return list(zip(*fields, strict=True))


def _naive_utc(x: object) -> datetime:
    t = pd.Timestamp(x)
    if t.tzinfo is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    return t.to_pydatetime()


class WriteEvents(ClickHouseBatchWriter):
    table = "events"
    columns = (*EVENT_COLUMNS, "ingested_at")
    args = EVENT_ARGS

    def rows(self, cols: Mapping[str, pd.Series]) -> list[tuple]:
        return _event_rows(cols, datetime.now(UTC).replace(tzinfo=None, microsecond=0))


class WriteLateEvents(WriteEvents):
    """The same rows as `events`, plus the watermark that judged each event late."""

    table = "late_events"
    columns = (*EVENT_COLUMNS, "watermark_ms", "ingested_at")
    args = (*EVENT_ARGS, "watermark_ms")

    def rows(self, cols: Mapping[str, pd.Series]) -> list[tuple]:
        now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        return _event_rows(cols, now, extra_ints=("watermark_ms",))


class WriteUsageWindows(ClickHouseBatchWriter):
    table = "usage_windows"
    columns = (
        "customer_id",
        "meter",
        "meter_version",
        "dimensions",
        "window_start",
        "window_end",
        "event_count",
        "quantity",
        "revision",
        "written_at",
    )
    # the window aggregation's columns (see `build`), all but the fee sum
    args = ("meter", "meter_version", "customer_id", "dims", "ws", "we", "n", "s", "mn", "mx",
            "uc", "lk")  # fmt: skip

    def __init__(self, settings: Settings, meters: Sequence[Meter]) -> None:
        super().__init__(settings)
        self.aggregations = {m.id: m.aggregation for m in meters}

    def rows(self, cols: Mapping[str, pd.Series]) -> list[tuple]:
        from meterflow.aggregation import Partials, window_quantity

        now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        out = []
        for meter, ver, cust, dims, ws, we, n, s, mn, mx, uc, lk in zip(
            cols["meter"], cols["meter_version"], cols["customer_id"], cols["dims"], cols["ws"],
            cols["we"], cols["n"], cols["s"], cols["mn"], cols["mx"], cols["uc"], cols["lk"],
            strict=True,
        ):  # fmt: skip
            p = Partials(int(n), dec(s), dec(mn), dec(mx), None if pd.isna(uc) else int(uc), lk)
            # A retraction (-U) of an older firing is written too; it carries a lower revision,
            # so FINAL still returns the newest.
            out.append(
                (
                    cust,
                    meter,
                    int(ver),
                    dims,
                    _naive_utc(ws),
                    _naive_utc(we),
                    int(n),
                    window_quantity(self.aggregations[meter], p),
                    int(n),
                    now,
                )
            )
        return out


def kafka_sink_ddl(
    name: str,
    topic: str,
    columns: str,
    fmt: str,
    settings: Settings,
    opts: JobOptions,
    key: str | None = None,
) -> str:
    key_opts = (
        f"'key.format' = 'raw', 'key.fields' = '{key}', 'value.fields-include' = 'EXCEPT_KEY',"
        if key
        else ""
    )
    return f"""
    CREATE TEMPORARY TABLE {name} ({columns}) WITH (
        'connector' = 'kafka',
        'topic' = '{topic}',
        {kafka_options(settings, "job")},
        'sink.delivery-guarantee' = 'exactly-once',
        'sink.transactional-id-prefix' = '{opts.group_id}-{name}',
        'properties.transaction.timeout.ms' = '900000',
        {key_opts}
        'value.format' = '{fmt}'
    )
    """


# ----------------------------------------------------------------------------- rating


def rate_windows(
    t_env: StreamTableEnvironment, windows: Table, settings: Settings, opts: JobOptions
) -> tuple[Table, DataStream, DataStream]:
    """Window firings -> (the same firings as a table, rated rows, quota alerts).

    One aggregation feeds both: its changelog goes back into a table on the Java side for the
    usage-window writer, and only the rating crosses into Python row by row."""
    changes: DataStream = t_env.to_changelog_stream(windows)
    rated = changes.key_by(
        lambda r: f"{r['customer_id']}\x1f{r['meter']}\x1f{r['meter_version']}",
        key_type=Types.STRING(),
    ).process(
        RateWindows(
            str(opts.meters_file),
            str(opts.subscriptions_file),
            str(opts.prices_file),
            settings,
            opts.allowed_lateness_s,
        ),
        output_type=row_type(RATED_FIELDS),
    )
    return t_env.from_changelog_stream(changes), rated, rated.get_side_output(ALERTS)


def credit_alerts(rated: DataStream, settings: Settings, opts: JobOptions) -> DataStream:
    """Rated rows of every meter -> alerts when a customer's cost so far this period reaches
    75/90/100 % of its usable prepaid credit."""
    return rated.key_by(lambda r: r["customer_id"], key_type=Types.STRING()).process(
        CreditAlerts(str(opts.credits_file), settings), output_type=row_type(ALERT_FIELDS)
    )


class WriteAlerts(ClickHouseBatchWriter):
    table = "alerts"
    columns = (
        "alert_id", "customer_id", "subscription_id", "meter", "period_start", "period_end",
        "threshold_pct", "quantity", "quota", "hard_cap", "window_start", "written_at",
    )  # fmt: skip
    args = tuple(c for c in ALERT_COLUMNS if c != "payload")  # the payload goes to the topic

    def rows(self, cols: Mapping[str, pd.Series]) -> list[tuple]:
        now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        return list(
            zip(
                cols["alert_id"],
                cols["customer_id"],
                cols["subscription_id"],
                cols["meter"],
                map(_naive_utc, cols["period_start"]),
                map(_naive_utc, cols["period_end"]),
                map(int, cols["threshold_pct"]),
                map(dec, cols["quantity"]),
                map(dec, cols["quota"]),
                (int(bool(x)) for x in cols["hard_cap"]),
                map(_naive_utc, cols["window_start"]),
                [now] * len(cols["alert_id"]),
                strict=True,
            )
        )


class WriteRatedUsage(ClickHouseBatchWriter):
    table = "rated_usage"
    columns = (
        "customer_id", "subscription_id", "period_start", "period_end", "meter",
        "meter_version", "dimensions", "window_start", "window_end", "plan", "price_version",
        "currency", "quantity", "period_quantity", "amount", "period_amount", "revision",
        "period_revision", "written_at",
    )  # fmt: skip

    args = RATED_COLUMNS

    def rows(self, cols: Mapping[str, pd.Series]) -> list[tuple]:
        now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        return list(
            zip(
                cols["customer_id"],
                cols["subscription_id"],
                map(_naive_utc, cols["period_start"]),
                map(_naive_utc, cols["period_end"]),
                cols["meter"],
                map(int, cols["meter_version"]),
                cols["dims"],
                map(_naive_utc, cols["ws"]),
                map(_naive_utc, cols["we"]),
                cols["plan"],
                map(int, cols["price_version"]),
                cols["currency"],
                map(dec, cols["quantity"]),
                map(dec, cols["period_quantity"]),
                map(dec, cols["amount"]),
                map(dec, cols["period_amount"]),
                map(int, cols["revision"]),
                map(int, cols["period_revision"]),
                [now] * len(cols["customer_id"]),
                strict=True,
            )
        )


# ----------------------------------------------------------------------------- pipeline


def shared(t_env: StreamTableEnvironment, table: Table) -> Table:
    """Materialise `table` once as a DataStream and read it back, keeping event time and the
    upstream watermarks, so that several consumers share one computation."""
    schema = Schema.new_builder()
    for name, typ in zip(
        table.get_schema().get_field_names(), table.get_schema().get_field_data_types(), strict=True
    ):
        if name != "pt":
            schema.column(name, typ)
    # `et`: the stream record's event time (what `ts` was), again a rowtime attribute
    schema.column_by_metadata("et", DataTypes.TIMESTAMP_LTZ(3), "rowtime")
    schema.watermark("et", "SOURCE_WATERMARK()")
    return t_env.from_data_stream(
        t_env.to_data_stream(table.drop_columns(col("pt"))), schema.build()
    )


def window_union_sql(
    meters: Sequence[Meter], window_s: int, fees: frozenset[str] = frozenset()
) -> str:
    """One projection per meter of this window size (the caller only asks for sizes in use)."""
    parts = []
    for i, m in enumerate(meters):
        if m.window.seconds != window_s:
            continue
        have = {suffix for suffix, _, _ in meter_columns(m, fees)}
        f = f"m{i}_f" if "f" in have else "CAST(NULL AS DECIMAL(38, 18))"
        q = f"m{i}_q" if "q" in have else "CAST(NULL AS DECIMAL(38, 12))"
        u = f"m{i}_u" if "u" in have else "CAST(NULL AS STRING)"
        lk = f"m{i}_l" if "l" in have else "CAST(NULL AS STRING)"
        parts.append(
            f"SELECT '{m.id}' AS meter, {m.version} AS meter_version, customer_id, "
            f"m{i}_d AS dims, {q} AS q, {u} AS u, {lk} AS l, {f} AS f, et "
            f"FROM on_time WHERE m{i}_d IS NOT NULL"
        )
    return "\nUNION ALL\n".join(parts)


def build(settings: Settings, meters: Sequence[Meter], opts: JobOptions):
    env, t_env = table_env(opts)
    t_env.create_temporary_view("decoded", decoded_table(t_env, settings, meters, opts))
    stmts = t_env.create_statement_set()

    # dead letters: reason, original bytes and where they came from
    t_env.execute_sql(
        kafka_sink_ddl(
            "dlq_sink",
            settings.dlq_topic,
            "reason STRING, detail STRING, payload BYTES, `topic` STRING, `partition` INT, "
            "`offset` BIGINT, record_ts_ms BIGINT",
            "json",
            settings,
            opts,
        )
    )
    stmts.add_insert_sql(
        "INSERT INTO dlq_sink SELECT status, detail, payload, kafka_topic, kafka_partition, "
        "kafka_offset, record_ts_ms FROM decoded WHERE status <> 'OK'"
    )

    # first copy of each event_id wins; later copies within the horizon are dropped here
    t_env.execute_sql(
        "CREATE TEMPORARY VIEW unique_events AS SELECT * FROM ("
        " SELECT *, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY pt ASC) AS rn"
        " FROM decoded WHERE status = 'OK') WHERE rn = 1"
    )
    lateness = interval(opts.allowed_lateness_s)
    classified = t_env.sql_query(
        "SELECT *, "
        f"COALESCE(ts < CURRENT_WATERMARK(ts) - {lateness}, FALSE) AS is_late, "
        # the watermark that judged an event late, kept with it (only computed for late rows)
        f"CASE WHEN ts < CURRENT_WATERMARK(ts) - {lateness} THEN TIMESTAMPDIFF(SECOND, "
        "TIMESTAMP '1970-01-01 00:00:00', CURRENT_WATERMARK(ts)) END AS wm_s "
        "FROM unique_events"
    )
    # One dedup for every consumer: without this cut the planner pushes each consumer's
    # projection into its own copy of the Deduplicate operator (and its state).
    t_env.create_temporary_view("classified", shared(t_env, classified))
    t_env.execute_sql("CREATE TEMPORARY VIEW on_time AS SELECT * FROM classified WHERE NOT is_late")
    t_env.execute_sql("CREATE TEMPORARY VIEW late AS SELECT * FROM classified WHERE is_late")

    t_env.execute_sql("CREATE TEMPORARY TABLE written (n BIGINT) WITH ('connector' = 'blackhole')")
    for name, fn in (
        ("write_events", WriteEvents(settings)),
        ("write_late_events", WriteLateEvents(settings)),
        ("write_usage_windows", WriteUsageWindows(settings, meters)),
    ):
        t_env.create_temporary_function(
            name, udf(fn, result_type=DataTypes.BIGINT(), func_type="pandas")
        )
    stmts.add_insert_sql(
        f"INSERT INTO written SELECT {WriteEvents.sql_call('write_events')} FROM on_time"
    )
    late_events = WriteLateEvents.sql_call(
        "write_late_events", watermark_ms="COALESCE(CAST(wm_s AS BIGINT) * 1000, -1)"
    )
    stmts.add_insert_sql(f"INSERT INTO written SELECT {late_events} FROM late")
    t_env.execute_sql(
        kafka_sink_ddl(
            "late_sink",
            settings.late_topic,
            "customer_id STRING, payload BYTES",
            "raw",
            settings,
            opts,
            key="customer_id",
        )
    )
    stmts.add_insert_sql("INSERT INTO late_sink SELECT customer_id, payload FROM late")

    t_env.create_temporary_function(
        "write_rated_usage",
        udf(WriteRatedUsage(settings), result_type=DataTypes.BIGINT(), func_type="pandas"),
    )
    t_env.create_temporary_function(
        "write_alerts",
        udf(WriteAlerts(settings), result_type=DataTypes.BIGINT(), func_type="pandas"),
    )
    t_env.execute_sql(
        kafka_sink_ddl(
            "alerts_sink",
            settings.alerts_topic,
            "customer_id STRING, payload BYTES",
            "raw",
            settings,
            opts,
            key="customer_id",
        )
    )
    rated_streams: list[DataStream] = []
    alert_streams: list[DataStream] = []
    for window_s in sorted({m.window.seconds for m in meters}):
        union = window_union_sql(meters, window_s, fee_meters(opts))
        size = interval(window_s)
        windows = t_env.sql_query(f"""
            SELECT meter, meter_version, customer_id, dims,
                   TUMBLE_START(et, {size}) AS ws, TUMBLE_END(et, {size}) AS we,
                   COUNT(*) AS n,
                   -- as text: PyFlink's DataStream bridge has no DECIMAL type info
                   CAST(SUM(q) AS STRING) AS s, CAST(MIN(q) AS STRING) AS mn,
                   CAST(MAX(q) AS STRING) AS mx,
                   COUNT(DISTINCT u) AS uc, MAX(l) AS lk,
                   CAST(SUM(f) AS STRING) AS fs
            FROM ({union})
            GROUP BY meter, meter_version, customer_id, dims, TUMBLE(et, {size})""")
        if opts.prices_file is None or opts.subscriptions_file is None:
            t_env.create_temporary_view(f"windows_{window_s}", windows)
        else:
            fired, rated, alerts = rate_windows(t_env, windows, settings, opts)
            t_env.create_temporary_view(f"windows_{window_s}", fired)
            rated_streams.append(rated)
            alert_streams.append(alerts)
        stmts.add_insert_sql(
            f"INSERT INTO written SELECT {WriteUsageWindows.sql_call('write_usage_windows')} "
            f"FROM windows_{window_s}"
        )
    if rated_streams:
        rated_all = rated_streams[0].union(*rated_streams[1:])
        t_env.create_temporary_view("rated", t_env.from_data_stream(rated_all))
        stmts.add_insert_sql(
            f"INSERT INTO written SELECT {WriteRatedUsage.sql_call('write_rated_usage')} FROM rated"
        )
        if opts.credits_file is not None:
            alert_streams.append(credit_alerts(rated_all, settings, opts))
        alerts_all = alert_streams[0].union(*alert_streams[1:])
        t_env.create_temporary_view("alerts", t_env.from_data_stream(alerts_all))
        stmts.add_insert_sql(
            f"INSERT INTO written SELECT {WriteAlerts.sql_call('write_alerts')} FROM alerts"
        )
        stmts.add_insert_sql("INSERT INTO alerts_sink SELECT customer_id, payload FROM alerts")
    stmts.attach_as_datastream()
    return env


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_job_args(p, JobOptions)
    p.add_argument("--credits", type=optional_path, default=DEFAULT_CREDITS_FILE)
    a = p.parse_args(argv)
    replay = replay_range(p, a)
    opts = JobOptions(
        bounded=a.bounded,
        parallelism=a.parallelism,
        out_of_orderness_s=a.out_of_orderness,
        allowed_lateness_s=a.allowed_lateness,
        dedup_horizon_s=a.dedup_horizon,
        checkpoint_interval_s=a.checkpoint_interval,
        checkpoint_dir=a.checkpoint_dir / a.group_id,
        restore_from=a.restore,
        group_id=a.group_id,
        # absolute: Python workers on a cluster may not run in this directory
        meters_file=a.meters.resolve(),
        prices_file=a.prices,
        subscriptions_file=a.subscriptions,
        credits_file=a.credits,
        replay=replay,
    )
    env = build(Settings(), load_meters(opts.meters_file), opts)
    env.execute(f"meterflow-metering[{opts.group_id}]")


if __name__ == "__main__":
    main()
