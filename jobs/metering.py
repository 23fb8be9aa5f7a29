"""Streaming metering job: Kafka (Confluent Avro) -> 1-minute tumbling usage -> ClickHouse.

Stages are separate functions so later stages (validation, dedup, late data, rating) slot in
between them:  source_ddl -> usage_windows -> sink_usage_windows.

Run on the local mini-cluster:   python -m jobs.metering [--bounded]
Submit to a cluster:             flink run -py jobs/metering.py
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import UTC

import pandas as pd
from pyflink.table import DataTypes, EnvironmentSettings, Table, TableEnvironment
from pyflink.table.udf import FunctionContext, ScalarFunction, udf

from meterflow.config import REPO_ROOT, Settings

JARS_DIR = REPO_ROOT / "build" / "flink-jars"


@dataclass(frozen=True)
class JobOptions:
    bounded: bool = False  # read up to the offsets present at start, close every window, stop
    parallelism: int = 2
    out_of_orderness_s: int = 5
    idle_timeout_s: int = 5
    checkpoint_interval_s: int = 10
    group_id: str = "meterflow-metering"


def table_env(opts: JobOptions) -> TableEnvironment:
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    jars = sorted(JARS_DIR.glob("*.jar"))
    if len(jars) < 2:
        raise SystemExit(f"Flink connector jars missing in {JARS_DIR}: run 'make setup'")
    conf = t_env.get_config()
    conf.set("pipeline.jars", ";".join(j.as_uri() for j in jars))
    conf.set("parallelism.default", str(opts.parallelism))
    conf.set("python.executable", sys.executable)
    conf.set("python.client.executable", sys.executable)
    conf.set("execution.checkpointing.interval", f"{opts.checkpoint_interval_s}s")
    conf.set("table.local-time-zone", "UTC")
    # The Kafka connector's admin client logs while a bounded job shuts down, after Flink closed
    # the user-code classloader; the leak check turns that into an error trace in the log.
    conf.set("classloader.check-leaked-classloader", "false")
    # A silent partition must not hold back the watermark of the others.
    conf.set("table.exec.source.idle-timeout", f"{opts.idle_timeout_s}s")
    return t_env


def source_ddl(settings: Settings, opts: JobOptions) -> str:
    bounded = "'scan.bounded.mode' = 'latest-offset'," if opts.bounded else ""
    return f"""
    CREATE TEMPORARY TABLE usage_events (
        event_id     STRING NOT NULL,
        event_name   STRING NOT NULL,
        customer_id  STRING NOT NULL,
        `timestamp`  TIMESTAMP(3) NOT NULL,
        `value`      DECIMAL(38, 12),
        properties   MAP<STRING NOT NULL, STRING NOT NULL> NOT NULL,
        source       STRING,
        WATERMARK FOR `timestamp` AS `timestamp` - INTERVAL '{opts.out_of_orderness_s}' SECOND
    ) WITH (
        'connector' = 'kafka',
        'topic' = '{settings.events_topic}',
        'properties.bootstrap.servers' = '{settings.kafka_bootstrap}',
        'properties.group.id' = '{opts.group_id}',
        'properties.auto.offset.reset' = 'earliest',
        'scan.startup.mode' = 'group-offsets',
        {bounded}
        'value.format' = 'avro-confluent',
        'value.avro-confluent.url' = '{settings.registry_url}'
    )
    """


def usage_windows(t_env: TableEnvironment) -> Table:
    """COUNT and SUM per (customer, event name) over 1-minute event-time tumbling windows."""
    return t_env.sql_query(
        """
        SELECT customer_id, event_name AS meter, window_start, window_end,
               COUNT(*) AS event_count,
               CAST(SUM(COALESCE(`value`, 0)) AS DECIMAL(38, 12)) AS value_sum
        FROM TABLE(TUMBLE(TABLE usage_events, DESCRIPTOR(`timestamp`), INTERVAL '1' MINUTE))
        GROUP BY customer_id, event_name, window_start, window_end
        """
    )


class WriteUsageWindows(ScalarFunction):
    """Writes each Arrow batch of window rows to ClickHouse in one INSERT; returns rows written.

    Flink finishes a Python bundle before a checkpoint completes, so every row before a
    checkpoint barrier is in ClickHouse when the checkpoint is taken: at-least-once. The table's
    ReplacingMergeTree key makes a replayed window a no-op, which gives exactly-once results.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ch = None

    def is_deterministic(self) -> bool:
        return False  # it has a side effect: the planner must neither fold nor reuse it

    def open(self, function_context: FunctionContext) -> None:
        from connectors.clickhouse import connect

        self.ch = connect(self.settings)

    def eval(  # type: ignore[override]
        self,
        customer_id: pd.Series,
        meter: pd.Series,
        window_start: pd.Series,
        window_end: pd.Series,
        event_count: pd.Series,
        value_sum: pd.Series,
    ) -> pd.Series:
        from connectors.clickhouse import UsageWindow, insert_windows

        windows = [
            UsageWindow(
                customer_id=c,
                meter=m,
                meter_version=1,
                window_start=ws.to_pydatetime().replace(tzinfo=UTC),
                window_end=we.to_pydatetime().replace(tzinfo=UTC),
                event_count=int(n),
                value_sum=v,
            )
            for c, m, ws, we, n, v in zip(
                customer_id, meter, window_start, window_end, event_count, value_sum, strict=True
            )
        ]
        insert_windows(self.ch, self.settings.clickhouse_database, windows)
        return pd.Series([1] * len(windows), dtype="int64")


def sink_usage_windows(t_env: TableEnvironment, windows: Table, settings: Settings):
    write = udf(
        WriteUsageWindows(settings),
        result_type=DataTypes.BIGINT(),
        func_type="pandas",
    )
    t_env.create_temporary_function("write_usage_windows", write)
    t_env.create_temporary_view("windows", windows)
    t_env.execute_sql(
        "CREATE TEMPORARY TABLE windows_written (n BIGINT) WITH ('connector' = 'blackhole')"
    )
    return t_env.execute_sql(
        """
        INSERT INTO windows_written
        SELECT write_usage_windows(customer_id, meter, window_start, window_end,
                                   event_count, value_sum)
        FROM windows
        """
    )


def build(settings: Settings, opts: JobOptions):
    t_env = table_env(opts)
    t_env.execute_sql(source_ddl(settings, opts))
    return sink_usage_windows(t_env, usage_windows(t_env), settings)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bounded", action="store_true", help="stop after the offsets present at start")
    p.add_argument("--parallelism", type=int, default=JobOptions.parallelism)
    p.add_argument("--out-of-orderness", type=int, default=JobOptions.out_of_orderness_s)
    p.add_argument("--group-id", default=JobOptions.group_id)
    a = p.parse_args(argv)
    opts = JobOptions(
        bounded=a.bounded,
        parallelism=a.parallelism,
        out_of_orderness_s=a.out_of_orderness,
        group_id=a.group_id,
    )
    result = build(Settings(), opts)
    result.wait()


if __name__ == "__main__":
    main()
