"""The streaming metering job, top to bottom: source, decode, validate, watermark, dedup,
lateness, windows, Kafka sinks, all in one statement set."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pyflink.datastream import StreamExecutionEnvironment
from pyflink.table import StatementSet, StreamTableEnvironment

from jobs.streaming import dedup, sinks, source, validation, windows
from jobs.streaming.environment import table_env
from jobs.streaming.functions import register_sql
from jobs.streaming.options import JobOptions, parse_args
from meterflow.meters import Meter, load_meters
from meterflow.settings import Settings


def statements(
    t_env: StreamTableEnvironment, settings: Settings, meters: Sequence[Meter], opts: JobOptions
) -> StatementSet:
    for stmt in register_sql():
        t_env.execute_sql(stmt)

    # 1. every Kafka record, decoded in the source (never failing on bad bytes), with the
    #    watermark on validated event time
    t_env.execute_sql(source.source_ddl(settings, opts))
    # 2. the verdict and each meter's measurement
    t_env.create_temporary_view(
        "timed", t_env.sql_query(validation.validated_sql(meters, opts.limits, "kafka_records"))
    )
    # 3. the first copy of each event_id, late or on time
    t_env.create_temporary_view("unique_events", t_env.sql_query(dedup.unique_sql("timed")))
    t_env.create_temporary_view(
        "classified",
        t_env.sql_query(dedup.classified_sql("unique_events", opts.allowed_lateness_s)),
    )
    t_env.create_temporary_view(
        "on_time", t_env.sql_query("SELECT * FROM classified WHERE NOT is_late")
    )
    t_env.create_temporary_view("late", t_env.sql_query("SELECT * FROM classified WHERE is_late"))
    # 4. one row per (event, meter selecting it)
    t_env.create_temporary_view("metered", t_env.sql_query(windows.exploded_sql(meters, "on_time")))

    # 5. every output to Kafka, exactly once
    for sink in sinks.sinks(settings):
        t_env.execute_sql(sinks.sink_ddl(sink, settings, opts))
    stmts = t_env.create_statement_set()
    stmts.add_insert_sql(
        "INSERT INTO dlq_sink SELECT status, detail, payload, kafka_topic, kafka_partition, "
        "kafka_offset, record_ts_ms FROM timed WHERE status <> 'OK'"
    )
    stmts.add_insert_sql(f"INSERT INTO accepted_sink SELECT {sinks.EVENT_SELECT} FROM on_time")
    stmts.add_insert_sql(
        f"INSERT INTO late_events_sink SELECT {sinks.EVENT_SELECT}, watermark_ms FROM late"
    )
    stmts.add_insert_sql("INSERT INTO late_sink SELECT customer_id, payload FROM late")
    for window_s in sorted({m.window.seconds for m in meters}):
        stmts.add_insert_sql(
            f"INSERT INTO windows_sink {windows.windows_sql(meters, window_s, 'metered')}"
        )
    return stmts


def build(
    settings: Settings, meters: Sequence[Meter], opts: JobOptions
) -> tuple[StreamExecutionEnvironment, StatementSet]:
    env, t_env = table_env(settings, opts)
    return env, statements(t_env, settings, meters, opts)


def main(argv: list[str] | None = None) -> None:
    from jobs.streaming import __doc__ as doc

    opts = parse_args(argv, doc or "")
    _env, stmts = build(Settings(), load_meters(opts.meters_file), opts)
    stmts.execute().wait()


if __name__ == "__main__":
    main(sys.argv[1:])
