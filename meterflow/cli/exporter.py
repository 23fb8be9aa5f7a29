"""Prometheus exporter of the billing ledger in ClickHouse (127.0.0.1 only).

    python -m meterflow.cli.exporter [--port 9464] [--interval 15] [--reconcile-interval 300]
                                     [--once]

The metering job's own counters (events in, dead-lettered, duplicates, late, sink rows and batch
latency, windows rated) come from Flink's Prometheus reporter; this process adds what only the
stored data knows, refreshed every --interval seconds (a refresh never overlaps the next; a
scrape returns the latest completed refresh). Reconciliation recomputes every final invoice's
usage from the raw events, which costs seconds of CPU on a large ledger, so it is refreshed
every --reconcile-interval seconds only (and at start):

  meterflow_reconciliation_gap{currency,status}      closed minus streamed amount over final
                                                     invoices' usage lines (`meterflow reconcile`)
  meterflow_reconciliation_lines{currency,status}    how many lines have each status
  meterflow_rated_amount_total{currency}             sum of rated_usage FINAL amounts (streamed)
  meterflow_sink_last_write_timestamp_seconds{table} newest written_at / ingested_at / closed_at /
                                                     applied_at per table (0: never written)
  meterflow_exporter_errors_total{part}              failed refreshes; the part keeps its last
                                                     good values (zeros before the first)
  meterflow_exporter_last_refresh_timestamp_seconds, meterflow_exporter_refresh_duration_seconds

Every currency of the price book is exported (0 when nothing was rated or closed in it), with
every reconciliation status, so alert rules and dashboards see 0 rather than no data.
Configuration as for the other commands: METERFLOW_DB, CLICKHOUSE_HOST / CLICKHOUSE_PORT, as the
readonly `reader` user (meterflow_reader);
the catalog is meterflow.catalog.load_catalog()'s default (schemas/).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from types import FrameType
from typing import TypeVar

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from connectors.clickhouse import connect
from connectors.ledger import WRITE_TIME_COLUMNS, last_write_times, rated_amounts_by_currency
from meterflow.catalog import load_catalog
from meterflow.cli.reports import reconcile
from meterflow.settings import Settings

DEFAULT_PORT = int(os.environ.get("METERFLOW_EXPORTER_PORT", "9464"))
DEFAULT_INTERVAL_S = 15.0
DEFAULT_RECONCILE_INTERVAL_S = 300.0

# ReconRow.status values (meterflow.cli.reports.reconcile)
RECON_STATUSES = ("match", "explained by late events", "close only", "no usage", "UNEXPLAINED")
PARTS = ("catalog", "reconciliation", "rated_amounts", "sink_last_write")
T = TypeVar("T")


@dataclass
class Snapshot:
    currencies: set[str] = field(default_factory=set)
    gaps: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    lines: dict[tuple[str, str], int] = field(default_factory=dict)
    rated: dict[str, Decimal] = field(default_factory=dict)
    last_write: dict[str, int] = field(default_factory=lambda: dict.fromkeys(WRITE_TIME_COLUMNS, 0))
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PARTS, 0))
    refreshed_at: float = 0.0
    refresh_seconds: float = 0.0


def _catalog_currencies() -> set[str]:
    return {plan.currency.code for plan in load_catalog().book.plans.values()}


def _reconciliation(
    settings: Settings,
) -> tuple[dict[tuple[str, str], Decimal], dict[tuple[str, str], int]]:
    cat = load_catalog()
    gaps: dict[tuple[str, str], Decimal] = {}
    lines: dict[tuple[str, str], int] = {}
    for row in reconcile(settings, cat.book, cat.meters):
        key = (row.currency, row.status)
        gaps[key] = gaps.get(key, Decimal(0)) + row.gap
        lines[key] = lines.get(key, 0) + 1
    return gaps, lines


def _rated_amounts(settings: Settings) -> dict[str, Decimal]:
    db = settings.clickhouse_database
    return rated_amounts_by_currency(connect(settings, db, role="reader"), db)


def _last_writes(settings: Settings) -> dict[str, int]:
    db = settings.clickhouse_database
    return last_write_times(connect(settings, db, role="reader"), db)


class LedgerCollector(Collector):
    """Holds the latest snapshot; `refresh` recomputes it part by part, `collect` serves it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.snapshot = Snapshot()
        self.lock = threading.Lock()

    def _part(self, name: str, errors: dict[str, int], fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except Exception as exc:  # a failing part must not stop the others or the server
            errors[name] += 1
            why = " ".join(str(exc).split("Stack trace:")[0].split())  # ClickHouse appends one
            print(f"[exporter] {name}: {type(exc).__name__}: {why}", file=sys.stderr, flush=True)
            return None

    def refresh(self, reconcile: bool = True) -> None:
        t0 = time.perf_counter()
        with self.lock:
            old = self.snapshot
        errors = dict(old.errors)
        s = self.settings
        currencies = self._part("catalog", errors, _catalog_currencies)
        recon = (
            self._part("reconciliation", errors, lambda: _reconciliation(s)) if reconcile else None
        )
        rated = self._part("rated_amounts", errors, lambda: _rated_amounts(s))
        last = self._part("sink_last_write", errors, lambda: _last_writes(s))
        new = Snapshot(
            currencies=old.currencies if currencies is None else currencies,
            gaps=old.gaps if recon is None else recon[0],
            lines=old.lines if recon is None else recon[1],
            rated=old.rated if rated is None else rated,
            last_write=old.last_write if last is None else last,
            errors=errors,
            refreshed_at=time.time(),
            refresh_seconds=time.perf_counter() - t0,
        )
        with self.lock:
            self.snapshot = new

    def collect(self) -> Iterable[Metric]:
        with self.lock:
            snap = self.snapshot
        yield GaugeMetricFamily(
            "meterflow_exporter_last_refresh_timestamp_seconds",
            "Unix time the last refresh completed (0: none yet)",
            value=snap.refreshed_at,
        )
        yield GaugeMetricFamily(
            "meterflow_exporter_refresh_duration_seconds",
            "Duration of the last refresh",
            value=snap.refresh_seconds,
        )
        if not snap.refreshed_at:
            return  # no data yet: absent series rather than zeros that would jump on refresh
        currencies = sorted(
            snap.currencies | {c for c, _ in snap.gaps} | {c for c, _ in snap.lines} | {*snap.rated}
        )
        gap = GaugeMetricFamily(
            "meterflow_reconciliation_gap",
            "Closed minus streamed amount over final invoices' usage lines, by explanation",
            labels=["currency", "status"],
        )
        lines = GaugeMetricFamily(
            "meterflow_reconciliation_lines",
            "Final invoices' usage lines by reconciliation status",
            labels=["currency", "status"],
        )
        for cur in currencies:
            for status in RECON_STATUSES:
                gap.add_metric([cur, status], float(snap.gaps.get((cur, status), 0)))
                lines.add_metric([cur, status], snap.lines.get((cur, status), 0))
        rated = CounterMetricFamily(
            "meterflow_rated_amount",
            "Sum of streamed rated amounts (rated_usage FINAL), in currency units",
            labels=["currency"],
        )
        for cur in currencies:
            rated.add_metric([cur], float(snap.rated.get(cur, 0)))
        last = GaugeMetricFamily(
            "meterflow_sink_last_write_timestamp_seconds",
            "Unix time of the newest row written to each ClickHouse table (0: none yet)",
            labels=["table"],
        )
        for table, ts in sorted(snap.last_write.items()):
            last.add_metric([table], ts)
        errors = CounterMetricFamily(
            "meterflow_exporter_errors",
            "Failed refreshes of one part of the exporter's metrics",
            labels=["part"],
        )
        for part in PARTS:
            errors.add_metric([part], snap.errors[part])
        yield from (gap, lines, rated, last, errors)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S, help="seconds")
    p.add_argument(
        "--reconcile-interval",
        type=float,
        default=DEFAULT_RECONCILE_INTERVAL_S,
        help="seconds between reconciliations (the costly part)",
    )
    p.add_argument("--once", action="store_true", help="refresh once, print the metrics, exit")
    a = p.parse_args(argv)

    collector = LedgerCollector(Settings())
    registry = CollectorRegistry()
    registry.register(collector)
    if a.once:
        collector.refresh()
        sys.stdout.write(generate_latest(registry).decode())
        return 0

    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server, _ = start_http_server(a.port, addr="127.0.0.1", registry=registry)
    print(
        f"[exporter] serving http://127.0.0.1:{a.port}/metrics "
        f"(database {collector.settings.clickhouse_database}, every {a.interval:g}s, "
        f"reconciliation every {a.reconcile_interval:g}s)",
        flush=True,
    )

    def refresh_loop() -> None:
        reconciled = -math.inf
        while not stop.is_set():
            due = time.monotonic() - reconciled >= a.reconcile_interval
            collector.refresh(reconcile=due)
            if due:
                reconciled = time.monotonic()
            stop.wait(a.interval)

    # Refreshes run beside the server, the first one too: a slow reconciliation neither looks
    # like a dead exporter (until it completes only the exporter_* series are served) nor
    # delays a stop (the daemon thread ends with the process).
    threading.Thread(target=refresh_loop, name="refresh", daemon=True).start()
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
