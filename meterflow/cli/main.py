"""`meterflow` command line: init the stack, produce demo traffic, run the metering job, show
usage, close billing periods, explain / shadow re-rate invoices, reconcile stream vs close."""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from meterflow.settings import Settings
from meterflow.utc import parse_utc


def cmd_init(settings: Settings, _args: argparse.Namespace) -> None:
    from connectors.clickhouse import migrate
    from connectors.kafka_admin import ensure_deployment
    from connectors.registry import register_alert_schema, register_event_schema
    from meterflow.events import schema_text

    created = ensure_deployment(settings)  # topics, principals, ACLs
    schema_id = register_event_schema(settings, schema_text(1))
    register_alert_schema(settings)
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
    if args.engine == "python":
        from jobs import metering

        metering.main(args.job_args)
    else:
        from jobs.streaming import pipeline

        pipeline.main(args.job_args)


def cmd_load(settings: Settings, args: argparse.Namespace) -> None:
    from connectors.loader import LoaderConfig, run, wait_caught_up

    if args.wait is not None:
        try:
            wait_caught_up(settings, args.group_id, args.wait)
        except TimeoutError as exc:
            raise UserError(str(exc)) from None
        print(f"loader {args.group_id}: everything committed to its topics is in ClickHouse")
        return

    config = LoaderConfig(
        group_id=args.group_id,
        max_rows=args.max_rows,
        max_wait_s=args.max_wait,
        once=args.once,
        idle_timeout_s=args.idle_timeout,
    )
    sys.exit(run(settings, config, None if args.metrics_port == 0 else args.metrics_port))


def _when(text: str | None, what: str) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_utc(text)
    except ValueError:
        raise UserError(f"{what}: {text!r} is not a date (YYYY-MM-DD[THH:MM])") from None


def _dimension_filter(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--dimension {item!r}: expected key=value, e.g. region=eu")
        out[key] = value
    return out


def cmd_usage(settings: Settings, args: argparse.Namespace) -> None:
    import csv

    from connectors.clickhouse import connect, has_events, read_windows
    from meterflow.meters import load_meters

    start, end = _when(args.start, "--from"), _when(args.end, "--to")
    if start and end and end <= start:
        raise UserError(f"--to {args.end} is not after --from {args.start}")
    meters = {m.id for m in (load_meters(args.meters) if args.meters else load_meters())}
    if args.meter and args.meter not in meters:
        raise UserError(f"unknown meter {args.meter!r} (known: {', '.join(sorted(meters))})")
    db = settings.clickhouse_database
    ch = connect(settings, db, role="reader")
    if args.customer and not has_events(ch, db, args.customer):
        raise UserError(f"unknown customer {args.customer!r}: no stored events")
    rows = read_windows(
        ch, db, args.customer, args.meter, start, end, _dimension_filter(args.dimension)
    )
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
    if args.csv:
        out = csv.writer(sys.stdout)
        out.writerow(header)
        out.writerows(table)
        return
    widths = [max([len(h)] + [len(r[i]) for r in table]) for i, h in enumerate(header)]
    print("  ".join(h.ljust(wd) for h, wd in zip(header, widths, strict=True)))
    for r in table:
        print("  ".join(c.ljust(wd) for c, wd in zip(r, widths, strict=True)))
    print(f"{len(rows)} windows")


def cmd_replay(_settings: Settings, args: argparse.Namespace) -> None:
    from jobs import metering

    start, end = _when(args.start, "--from"), _when(args.end, "--to")
    assert start is not None and end is not None
    if end <= start:
        raise UserError(f"--to {args.end} is not after --from {args.start}")
    group = args.group_id or f"meterflow-metering-replay-{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}"
    # Metering only: results are idempotent (ReplacingMergeTree keys), but rating needs the
    # whole period's state, so a partial replay would restate amounts wrongly. The close job
    # bills from stored events either way.
    metering.main(
        ["--replay", start.isoformat(), end.isoformat(), "--group-id", group, "--prices", "none"]
        + (["--meters", str(args.meters)] if args.meters else [])
        + args.job_args
    )


def cmd_close(_settings: Settings, args: argparse.Namespace) -> None:
    from jobs import close

    close.main(args.job_args)


def _catalog(args: argparse.Namespace):
    from meterflow.catalog import load_catalog

    return load_catalog(args.subscriptions, args.prices, args.meters, args.credits)


def cmd_invoices(settings: Settings, args: argparse.Namespace) -> None:
    from connectors import ledger
    from connectors.clickhouse import connect
    from meterflow.cli import reports as bc

    db = settings.clickhouse_database
    if args.action == "list":
        rows = ledger.final_invoices(connect(settings, db, role="reader"), db, args.customer)
        for h in rows:
            span = f"{h.period_start:%Y-%m-%d}..{h.period_end:%Y-%m-%d}"
            print(
                f"{h.invoice_id}  {h.customer_id}  {span}  {h.plan} v{h.price_version}  "
                f"{h.currency} {_money(h.total, h.currency)}"
            )
        print(f"{len(rows)} invoices")
        return
    if not args.invoice:
        raise UserError(f"invoices {args.action}: give an invoice id")
    cat = _catalog(args)
    try:
        if args.action in ("show", "explain"):
            print(bc.explain(settings, args.invoice, cat.meters))
            return
        rows = bc.rerate(settings, args.invoice, cat.book, cat.meters, args.price_version)
    except bc.NotFound as exc:
        raise UserError(str(exc)) from None
    print(f"shadow re-rate of {args.invoice} (nothing is written)")
    for r in rows:
        print(
            f"  {r.meter:<24} quantity {r.billed_quantity.normalize():f} -> "
            f"{r.shadow_quantity.normalize():f}   amount {_money(r.billed_amount, r.currency)} -> "
            f"{_money(r.shadow_amount, r.currency)}   difference {_money(r.difference, r.currency)}"
        )
    total = sum((r.difference for r in rows), Decimal(0))
    print(f"total difference {_money(total, rows[0].currency) if rows else '0'}")


def cmd_reconcile(settings: Settings, args: argparse.Namespace) -> None:
    from meterflow.cli import reports as bc

    cat = _catalog(args)
    rows = bc.reconcile(settings, cat.book, cat.meters, args.customer)
    for r in rows:
        print(
            f"{r.invoice_id}  {r.meter:<22} streamed {_money(r.streamed, r.currency)}  "
            f"closed {_money(r.closed, r.currency)}  gap {_money(r.gap, r.currency)}  "
            f"late events {r.late_events}  {r.status}"
        )
    bad = [r for r in rows if r.status == "UNEXPLAINED"]
    print(f"{len(rows)} lines, {len(bad)} with an unexplained gap")
    if args.metrics_file:
        bc.write_reconciliation_metrics(rows, args.metrics_file)
    if bad:
        sys.exit(1)


def cmd_credits(settings: Settings, args: argparse.Namespace) -> None:
    from connectors import ledger
    from connectors.clickhouse import connect
    from meterflow.credits import balances

    cat = _catalog(args)
    grants = [g for g in cat.grants if args.customer in (None, g.customer_id)]
    if args.customer and not grants:
        raise UserError(f"no credit grants for customer {args.customer!r}")
    db = settings.clickhouse_database
    apps = ledger.applications(connect(settings, db, role="reader"), db)
    now = datetime.now(UTC)
    for g in grants:
        b = balances([g], apps, now)[g.id]
        state = "usable" if b.usable else ("expired" if b.expired else "not usable now")
        expires = f"{g.expires_at:%Y-%m-%d}" if g.expires_at else "never"
        print(
            f"{g.customer_id}  {g.id}  {g.currency} {_money(g.amount, g.currency)} granted, "
            f"{_money(b.remaining, g.currency)} remaining"
            f"  (priority {g.priority}, expires {expires}, {state})"
        )


def cmd_alerts(settings: Settings, args: argparse.Namespace) -> None:
    if args.action == "list":
        from connectors.alerts import stored_alerts
        from connectors.clickhouse import connect

        db = settings.clickhouse_database
        rows = stored_alerts(connect(settings, db, role="reader"), db, args.customer)
        for a in rows:
            flag = "  HARD CAP" if a.hard_cap and a.threshold_pct >= 100 else ""
            print(
                f"{a.customer_id}  {a.meter}  period {a.period_start:%Y-%m-%d}  "
                f"{a.threshold_pct}%  {a.quantity.normalize():f} of {a.quota.normalize():f}{flag}"
            )
        print(f"{len(rows)} alerts")
        return
    from connectors.alerts import send_alerts
    from connectors.webhook import DeliveryError, RetryPolicy, post_json

    if not args.url:
        raise UserError("alerts webhook: --url is required")
    policy = RetryPolicy(attempts=args.attempts)
    try:
        res = send_alerts(settings, lambda a: post_json(args.url, a), args.group_id, policy)
    except DeliveryError as exc:
        raise UserError(f"webhook {args.url}: {exc}") from None
    print(f"delivered {res.sent} alerts ({res.attempts} attempts)")


def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    from meterflow.api.service import serve

    serve(settings, _catalog(args), args.port, args.ack_timeout)


def cmd_keys(settings: Settings, args: argparse.Namespace) -> None:
    from connectors import api_keys as key_table
    from connectors.clickhouse import connect
    from meterflow import api_keys

    db = settings.clickhouse_database
    ch = connect(settings, db, role="keys")
    if args.action == "list":
        for k in key_table.list_keys(ch, db, args.customer):
            state = "revoked" if k.revoked else "active"
            print(
                f"{k.key_id}  {k.scope:<8}  {k.customer_id or '-':<16}  {state:<7}  "
                f"{k.created_at:%Y-%m-%d %H:%M}  {k.name}"
            )
        return
    if args.action == "revoke":
        if not args.key_id or not api_keys.valid_key_id(args.key_id):
            raise UserError("keys revoke: give the key id (12 hex digits, see `keys list`)")
        if not key_table.revoke_key(ch, db, args.key_id, datetime.now(UTC)):
            raise UserError(f"no key {args.key_id!r}")
        print(f"revoked {args.key_id}")
        return
    if args.scope is None:
        raise UserError("keys create: --scope admin|ingest|customer is required")
    scope = api_keys.Scope(args.scope)
    if (scope is api_keys.Scope.CUSTOMER) != bool(args.customer):
        raise UserError("keys create: --customer ID goes with --scope customer, and only with it")
    new = api_keys.new_key()
    key_table.insert_key(
        ch,
        db,
        api_keys.ApiKey(
            new.key_id, new.key_hash, scope, args.customer or "", args.name, datetime.now(UTC)
        ),
    )
    # the token is shown once: only its hash is stored
    print(new.token)
    print(
        f"key {new.key_id} ({scope}{' ' + args.customer if args.customer else ''})", file=sys.stderr
    )


def _money(amount: Decimal, code: str) -> str:
    """An amount with its currency's minor units (a currency we cannot bill in: as stored)."""
    from meterflow.money import currency, format_amount

    try:
        return format_amount(amount, currency(code))
    except ValueError:
        return f"{amount:f}"


class UserError(Exception):
    """Bad input from the operator: printed as one line, exit status 2."""


def _config_errors() -> tuple[type[Exception], ...]:
    """Mistakes in the definition files: one line naming file, item and field, exit 2."""
    from meterflow.credits import CreditConfigError
    from meterflow.meters import MeterConfigError
    from meterflow.price_book import PriceConfigError, PriceLookupError
    from meterflow.subscriptions import SubscriptionConfigError

    return (
        MeterConfigError,
        PriceConfigError,
        PriceLookupError,
        SubscriptionConfigError,
        CreditConfigError,
    )


def _catalog_args(p: argparse.ArgumentParser) -> None:
    from meterflow.cli.args import add_catalog_args

    add_catalog_args(p)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="meterflow", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="create topics, register the event schema, apply migrations")
    pr = sub.add_parser("produce", help="send demo usage events")
    pr.add_argument("--count", type=int, default=10_000)
    pr.add_argument("--minutes", type=int, default=3, help="event-time span of the demo traffic")
    pr.add_argument("--seed", type=int, default=7)
    jb = sub.add_parser(
        "job", help="run the streaming metering job (other args go to the job: --help lists them)"
    )
    jb.add_argument(
        "--engine",
        choices=["jvm", "python"],
        default="jvm",
        help="jvm: jobs/streaming, every output to Kafka, `meterflow load` stores it (default); "
        "python: jobs/metering.py, writes ClickHouse itself, with prepaid-credit alerts",
    )
    ld = sub.add_parser("load", help="load the job's output topics into ClickHouse")
    ld.add_argument("--once", action="store_true", help="drain to the current end, then exit")
    ld.add_argument("--max-rows", type=int, default=50_000, help="rows per table per insert")
    ld.add_argument("--max-wait", type=float, default=1.0, help="seconds before a batch flushes")
    ld.add_argument("--group-id", default="meterflow-loader")
    ld.add_argument("--idle-timeout", type=float, default=15.0, help="--once: stop when idle")
    ld.add_argument(
        "--wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="load nothing: wait until the running loader of --group-id has stored everything "
        "committed to its topics (at most SECONDS)",
    )
    ld.add_argument(
        "--metrics-port", type=int, default=int(os.environ.get("METERFLOW_LOADER_PORT", "9465"))
    )
    us = sub.add_parser("usage", help="usage windows by customer / meter / dimension / period")
    us.add_argument("--customer", default=None)
    us.add_argument("--meter", default=None)
    us.add_argument("--dimension", action="append", default=[], help="key=value (repeatable)")
    us.add_argument("--from", dest="start", default=None, help="windows starting at/after (UTC)")
    us.add_argument("--to", dest="end", default=None, help="windows starting before (UTC)")
    us.add_argument("--csv", action="store_true", help="CSV on stdout instead of a table")
    us.add_argument("--meters", type=Path, default=None, help="meters file (default: default)")
    sub.add_parser("close", help="close ended billing periods into invoices (args: jobs.close)")
    rp = sub.add_parser("replay", help="re-meter the Kafka records of a time range (bounded)")
    rp.add_argument("--from", dest="start", required=True, help="UTC, e.g. 2026-11-21T10:00")
    rp.add_argument("--to", dest="end", required=True)
    rp.add_argument("--group-id", default=None)
    rp.add_argument("--meters", type=Path, default=None)
    inv = sub.add_parser("invoices", help="list / show / explain / rerate final invoices")
    inv.add_argument("action", choices=["list", "show", "explain", "rerate"])
    inv.add_argument("invoice", nargs="?")
    inv.add_argument("--customer", default=None)
    inv.add_argument("--price-version", type=int, default=None, help="rerate: price version")
    _catalog_args(inv)
    cr = sub.add_parser("credits", help="prepaid credit grants and their remaining balances")
    cr.add_argument("--customer", default=None)
    _catalog_args(cr)
    al = sub.add_parser("alerts", help="usage alerts: list them, or deliver them to a webhook")
    al.add_argument("action", choices=["list", "webhook"])
    al.add_argument("--customer", default=None)
    al.add_argument("--url", default=None, help="webhook: receiver URL (POST, JSON body)")
    al.add_argument("--attempts", type=int, default=5, help="webhook: tries per alert")
    al.add_argument("--group-id", default="meterflow-alerts-webhook")
    rc = sub.add_parser("reconcile", help="streamed rated totals vs closed invoices")
    rc.add_argument("--customer", default=None)
    rc.add_argument("--metrics-file", type=Path, default=None, help="write Prometheus gauges")
    _catalog_args(rc)
    sv = sub.add_parser("serve", help="the HTTP API on 127.0.0.1 (docs/openapi.json)")
    sv.add_argument("--port", type=int, default=int(os.environ.get("METERFLOW_API_PORT", "8088")))
    sv.add_argument(
        "--ack-timeout",
        type=float,
        default=10.0,
        help="seconds an ingest request waits for Kafka's acknowledgements before a 503",
    )
    _catalog_args(sv)
    ks = sub.add_parser("keys", help="create / revoke / list the HTTP API's keys")
    ks.add_argument("action", choices=["create", "revoke", "list"])
    ks.add_argument("key_id", nargs="?", help="revoke: the key id")
    ks.add_argument("--scope", choices=["admin", "ingest", "customer"], default=None)
    ks.add_argument("--customer", default=None, help="create: the customer a read key serves")
    ks.add_argument("--name", default="", help="create: a note for `keys list`")
    args, extra = p.parse_known_args(argv)
    passthrough = ("job", "close", "replay")
    if extra and args.command not in passthrough:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    args.job_args = extra
    handlers = {
        "init": cmd_init,
        "produce": cmd_produce,
        "job": cmd_job,
        "load": cmd_load,
        "usage": cmd_usage,
        "close": cmd_close,
        "invoices": cmd_invoices,
        "reconcile": cmd_reconcile,
        "credits": cmd_credits,
        "alerts": cmd_alerts,
        "replay": cmd_replay,
        "serve": cmd_serve,
        "keys": cmd_keys,
    }
    try:
        handlers[args.command](Settings(), args)
    except (UserError, *_config_errors()) as exc:
        print(f"meterflow {args.command}: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
