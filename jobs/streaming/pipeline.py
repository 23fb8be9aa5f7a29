"""The streaming metering job, top to bottom: source, decode, validate, watermark, dedup,
lateness, windows, rating, Kafka sinks, all in one statement set."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pyflink.table import PlanReference, StatementSet, StreamTableEnvironment, TableResult

from jobs.streaming import alerts, dedup, rating, sinks, source, state_ttl, validation, windows
from jobs.streaming.environment import table_env
from jobs.streaming.functions import register_sql
from jobs.streaming.options import JobOptions, parse_args
from meterflow.meters import Meter, load_meters
from meterflow.price_book import PriceBook, load_price_book
from meterflow.rating import priced_periods
from meterflow.settings import Settings
from meterflow.subscriptions import load_subscriptions

# Periods starting up to this far ahead are in the job's period table; usage later than that
# is metered but not rated until the job is restarted (which rewrites the table).
RATING_HORIZON = timedelta(days=2 * 366)


def statements(
    t_env: StreamTableEnvironment, settings: Settings, meters: Sequence[Meter], opts: JobOptions
) -> StatementSet:
    for stmt in register_sql():
        t_env.execute_sql(stmt)

    # 1. every Kafka record, decoded in the source (never failing on bad bytes), with the
    #    watermark on validated event time
    t_env.execute_sql(source.source_ddl(settings, opts))
    # 2. the verdict and each meter's measurement; every record counted (MF_TALLY: the metric
    #    meterflow_records_in; accepted, late and dead-lettered are counted where they leave,
    #    duplicates are the difference)
    validated = validation.validated_sql(meters, opts.limits, "kafka_records")
    t_env.create_temporary_view(
        "timed", t_env.sql_query(f"{validated} WHERE MF_TALLY('records_in')")
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
    rated = _rating_inputs(meters, opts)
    fees = rating.fees(meters, rated.book, rated.table) if rated is not None else {}
    # 4. one row per (event, meter selecting it), and each window's partials
    t_env.create_temporary_view(
        "metered", t_env.sql_query(windows.exploded_sql(meters, "on_time", fees))
    )
    # every window size's partials in one relation: the windows sink and the rating both read
    # it, so the planner plans each window once (a sub-plan read by two sinks is reused; one
    # read through projections merged into each reader would be copied per reader)
    sizes = sorted({m.window.seconds for m in meters})
    t_env.create_temporary_view(
        "window_partials",
        t_env.sql_query(
            " UNION ALL ".join(windows.partials_sql(meters, s, "metered") for s in sizes)
        ),
    )
    if rated is not None:
        # 5. each period's cost so far, from its windows
        priced = rating.priced_windows_sql(meters, rated.book, rated.table, "window_partials")
        t_env.create_temporary_view("priced_windows", t_env.sql_query(priced))
        t_env.create_temporary_view(
            "period_partials", t_env.sql_query(rating.period_partials_sql("priced_windows"))
        )
        # 6. quota alerts, once per threshold, from the running period usage of the events
        if rated.quotas:
            quota_events = alerts.quota_events_sql(meters, rated.book, rated.table, "metered")
            t_env.create_temporary_view("quota_events", t_env.sql_query(quota_events))
            running = alerts.running_sql("quota_events")
            t_env.create_temporary_view("running_usage", t_env.sql_query(running))
            crossed = alerts.alerts_sql(meters, rated.book, "running_usage")
            t_env.create_temporary_view("quota_alerts", t_env.sql_query(crossed))

    # 7. every output to Kafka, exactly once
    for sink in sinks.sinks(settings):
        t_env.execute_sql(sinks.sink_ddl(sink, settings, opts))
    stmts = t_env.create_statement_set()
    stmts.add_insert_sql(
        "INSERT INTO dlq_sink SELECT status, detail, payload, kafka_topic, kafka_partition, "
        "kafka_offset, record_ts_ms FROM timed "
        "WHERE status <> 'OK' AND MF_TALLY('records_dead_lettered')"
    )
    stmts.add_insert_sql(
        f"INSERT INTO accepted_sink SELECT {sinks.EVENT_SELECT} FROM on_time "
        "WHERE MF_TALLY('records_accepted')"
    )
    stmts.add_insert_sql(
        f"INSERT INTO late_events_sink SELECT {sinks.EVENT_SELECT}, watermark_ms FROM late "
        "WHERE MF_TALLY('records_late')"
    )
    stmts.add_insert_sql("INSERT INTO late_sink SELECT customer_id, payload FROM late")
    stmts.add_insert_sql(
        f"INSERT INTO windows_sink {windows.windows_sql(meters, 'window_partials')}"
    )
    if rated is not None:
        cost = rating.period_cost_sql(meters, rated.book, "period_partials")
        stmts.add_insert_sql(f"INSERT INTO period_cost_sink {cost}")
        if rated.quotas:
            stmts.add_insert_sql(
                f"INSERT INTO alerts_sink SELECT {alerts.AVRO_SELECT} FROM quota_alerts"
            )
            stmts.add_insert_sql(
                f"INSERT INTO alert_rows_sink SELECT {alerts.ROW_SELECT} FROM quota_alerts"
            )
    return stmts


@dataclass(frozen=True)
class RatingInputs:
    book: PriceBook
    table: Path  # the period table MF_PERIOD reads
    quotas: bool  # some rated meter has a quota: the job sends alerts


def _rating_inputs(meters: Sequence[Meter], opts: JobOptions) -> RatingInputs | None:
    """What rating needs, when rating is on and some meter is rated."""
    if opts.prices_file is None or opts.subscriptions_file is None:
        return None
    book = load_price_book(opts.prices_file)
    if not rating.rated_meters(meters, book):
        return None
    until = datetime.now(UTC) + RATING_HORIZON
    periods = priced_periods(load_subscriptions(opts.subscriptions_file), book, until)
    table = rating.write_period_table(periods, opts.checkpoint_dir / "rating")
    return RatingInputs(book, table, bool(alerts.quota_meters(meters, book)))


def build(
    settings: Settings, meters: Sequence[Meter], opts: JobOptions
) -> tuple[StreamTableEnvironment, StatementSet]:
    _env, t_env = table_env(settings, opts)
    return t_env, statements(t_env, settings, meters, opts)


def compiled_plan(stmts: StatementSet, opts: JobOptions) -> str:
    """The job's plan as JSON, the dedup forgetting ids after the dedup horizon (state_ttl)."""
    plan = stmts.compile_plan().as_json_string()
    return state_ttl.with_state_ttls(plan, {state_ttl.DEDUPLICATE: f"{opts.dedup_horizon_s} s"})


def main(argv: list[str] | None = None) -> None:
    from jobs.streaming import __doc__ as doc

    opts = parse_args(argv, doc or "")
    t_env, stmts = build(Settings(), load_meters(opts.meters_file), opts)
    result = execute_plan(t_env, compiled_plan(stmts, opts))
    if not opts.detached:
        result.wait()


def execute_plan(t_env: StreamTableEnvironment, plan_json: str) -> TableResult:
    """PyFlink 2.2's execute_plan / CompiledPlan.execute call a Python method on the Java table
    environment and fail; this does what they mean to: ship the jars, execute on the JVM."""
    t_env._before_execute()
    ref = PlanReference.from_json_string(plan_json)
    return TableResult(t_env._j_tenv.loadPlan(ref._j_plan_reference).execute())


if __name__ == "__main__":
    main(sys.argv[1:])
