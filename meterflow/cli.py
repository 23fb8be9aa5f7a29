"""`meterflow` command line: init the stack, produce demo traffic, run the job, show usage."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta

from meterflow.config import Settings


def cmd_init(settings: Settings, _args: argparse.Namespace) -> None:
    from connectors.clickhouse import migrate
    from connectors.kafka_admin import ensure_topics
    from connectors.registry import register_event_schema
    from meterflow.events import schema_text

    created = ensure_topics(settings, settings.all_topics)
    schema_id = register_event_schema(settings, schema_text(1))
    applied = migrate(settings)
    print(
        f"topics created: {created or 'none'}; subject {settings.events_subject} -> id {schema_id}"
    )
    print(f"migrations applied: {applied or 'none (up to date)'}")


def cmd_produce(settings: Settings, args: argparse.Namespace) -> None:
    from connectors.producer import produce_events
    from meterflow.events import demo_events

    # Whole minutes in the recent past, sorted by event time, so every demo window can close.
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(minutes=args.minutes + 1)
    events = sorted(
        demo_events(args.count, start=start, span=timedelta(minutes=args.minutes), seed=args.seed),
        key=lambda e: e.timestamp,
    )
    t0 = time.perf_counter()
    sent = produce_events(settings, events)
    dt = time.perf_counter() - t0
    print(f"produced {sent} events to {settings.events_topic} in {dt:.2f}s ({sent / dt:,.0f}/s)")


def cmd_job(_settings: Settings, args: argparse.Namespace) -> None:
    from jobs import metering

    metering.main(args.job_args)


def cmd_usage(settings: Settings, args: argparse.Namespace) -> None:
    from connectors.clickhouse import connect, read_windows

    rows = read_windows(connect(settings), settings.clickhouse_database, args.customer)
    header = ("customer", "meter", "v", "dimensions", "window_start (UTC)", "events", "quantity")
    table = [
        (
            w.customer_id,
            w.meter,
            str(w.meter_version),
            w.dimensions,
            w.window_start.strftime("%Y-%m-%d %H:%M"),
            str(w.event_count),
            f"{w.quantity.normalize():f}",
        )
        for w in rows
    ]
    widths = [max([len(h)] + [len(r[i]) for r in table]) for i, h in enumerate(header)]
    print("  ".join(h.ljust(wd) for h, wd in zip(header, widths, strict=True)))
    for r in table:
        print("  ".join(c.ljust(wd) for c, wd in zip(r, widths, strict=True)))
    print(f"{len(rows)} windows")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="meterflow", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="create topics, register the event schema, apply migrations")
    pr = sub.add_parser("produce", help="send demo usage events")
    pr.add_argument("--count", type=int, default=10_000)
    pr.add_argument("--minutes", type=int, default=3, help="event-time span of the demo traffic")
    pr.add_argument("--seed", type=int, default=7)
    sub.add_parser("job", help="run the streaming metering job (other args go to jobs.metering)")
    us = sub.add_parser("usage", help="print the usage windows stored in ClickHouse")
    us.add_argument("--customer", default=None)
    args, extra = p.parse_known_args(argv)
    if extra and args.command != "job":
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    args.job_args = extra
    handlers = {"init": cmd_init, "produce": cmd_produce, "job": cmd_job, "usage": cmd_usage}
    try:
        handlers[args.command](Settings(), args)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
