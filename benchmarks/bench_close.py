"""Closing 100k subscriptions' billing periods: wall time of `jobs.close.close`, next to a
baseline measured in the same run on the same data: reading the period's stored events into
Python with no processing (the floor any recompute-from-raw-events close pays).

Setup (not timed): N subscriptions (calendar and anniversary, two plans, some credit grants)
and `--events-per-sub` stored events each, written straight into a scratch ClickHouse database
(the metering job's `events` table; this measures the close, not the stream). Each run closes
into a fresh copy of the database. Figures are medians of --runs runs.

    python -m benchmarks.bench_close [--subscriptions 100000] [--events-per-sub 10] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from connectors import ledger
from connectors.clickhouse import connect, migrate
from jobs.close import close
from meterflow.catalog import Catalog
from meterflow.credits import Grant
from meterflow.meters import load_meters
from meterflow.price_book import load_price_book
from meterflow.settings import REPO_ROOT, Settings
from meterflow.subscriptions import Anchor, Subscription
from meterflow.testing.clickhouse_users import use_scratch_users

PERIOD_START = datetime(2026, 10, 1, tzinfo=UTC)
AS_OF = datetime(2026, 11, 3, tzinfo=UTC)  # after every October period + 24 h grace
METERS = REPO_ROOT / "schemas" / "meters" / "scenario.yaml"
PRICES = REPO_ROOT / "schemas" / "prices" / "scenario.yaml"


def log(msg: str) -> None:
    print(f"[bench-close {datetime.now(UTC):%H:%M:%S}] {msg}", flush=True)


def catalog(n: int) -> Catalog:
    subs, grants = [], []
    for i in range(n):
        cust = f"c{i:07d}"
        anniversary = i % 4 == 0
        subs.append(
            Subscription(
                id=f"s{i:07d}",
                customer_id=cust,
                plan="scenario_min" if i % 10 == 0 else "scenario",
                # anniversary subscriptions started on the 1st too, so every one has exactly
                # one period to close, October
                start=PERIOD_START,
                anchor=Anchor.ANNIVERSARY if anniversary else Anchor.CALENDAR,
            )
        )
        if i % 5 == 0:
            grants.append(Grant(f"g{i:07d}", cust, Decimal("12.50"), "USD", PERIOD_START, None, 0))
    return Catalog(subs, load_price_book(PRICES), load_meters(METERS), grants)


def event_rows(n_subs: int, per_sub: int, seed: int = 5) -> list[tuple]:
    rng = random.Random(seed)
    span_ms = 30 * 86400 * 1000
    t0 = int(PERIOD_START.timestamp() * 1000)
    rows = []
    for i in range(n_subs):
        cust = f"c{i:07d}"
        for k in range(per_sub):
            ts = t0 + rng.randrange(span_ms)
            kind = rng.randrange(3)
            region = rng.choice(("eu", "us"))
            value = None
            if kind == 0:
                name = "api_call"
                props = {"endpoint": rng.choice(("/v1/a", "/health")), "region": region}
                props["user_id"] = f"u{rng.randrange(8)}"
            elif kind == 1:
                name = "llm_tokens"
                props = {"model": rng.choice(("small", "large")), "region": region}
                value = Decimal(rng.randrange(1, 5000))
            else:
                name = "gpu"
                props = {"gpus": str(rng.randrange(1, 64) / 8), "region": region}
            rows.append(
                (
                    cust,
                    f"e-{i}-{k}",
                    name,
                    ts,
                    value,
                    json.dumps(props, sort_keys=True, separators=(",", ":")),
                    "bench",
                    1,
                    "bench",
                    0,
                    i * per_sub + k,
                    datetime(2026, 11, 1),
                )
            )
    return rows


def read_only(settings: Settings) -> tuple[float, int]:
    db = settings.clickhouse_database
    t = time.perf_counter()
    n = sum(
        1
        for _ in ledger.stored_events(
            connect(settings, db, role="reader"),
            db,
            PERIOD_START,
            PERIOD_START + timedelta(days=31),
        )
    )
    return time.perf_counter() - t, n


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--subscriptions", type=int, default=100_000)
    p.add_argument("--events-per-sub", type=int, default=10)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args(argv)
    use_scratch_users()  # the close runs here, in databases of this benchmark
    base = Settings()
    source = replace(base, clickhouse_database="bench_close_src")
    ch = connect(base, role="migrate")
    ch.execute(f"DROP DATABASE IF EXISTS {source.clickhouse_database}")
    migrate(source)
    cat = catalog(a.subscriptions)
    log(f"writing {a.subscriptions * a.events_per_sub:,} stored events")
    rows = event_rows(a.subscriptions, a.events_per_sub)
    cols = (
        "customer_id, event_id, event_name, timestamp_ms, value, properties, source, "
        "schema_id, kafka_topic, kafka_partition, kafka_offset, ingested_at"
    )
    for i in range(0, len(rows), 200_000):
        ch.execute(
            f"INSERT INTO {source.clickhouse_database}.events ({cols}) VALUES",
            rows[i : i + 200_000],
        )
    del rows
    ch.execute(f"OPTIMIZE TABLE {source.clickhouse_database}.events FINAL")

    closes, reads = [], []
    for run in range(1, a.runs + 1):
        target = replace(base, clickhouse_database=f"bench_close_{run}")
        ch.execute(f"DROP DATABASE IF EXISTS {target.clickhouse_database}")
        migrate(target)
        ch.execute(
            f"INSERT INTO {target.clickhouse_database}.events "
            f"SELECT * FROM {source.clickhouse_database}.events"
        )
        read_s, n_read = read_only(target)
        res, _ = close(target, cat, AS_OF, timedelta(hours=24))
        again, _ = close(target, cat, AS_OF, timedelta(hours=24))
        assert res.invoices == a.subscriptions and again.invoices == 0, (res, again)
        closes.append(res.seconds)
        reads.append(read_s)
        log(
            f"run {run}: close {res.seconds:.1f} s ({res.invoices:,} invoices, {res.lines:,} "
            f"lines, {res.events_read:,} events); read-only baseline {read_s:.1f} s "
            f"({n_read:,} events); re-run {again.seconds:.1f} s, wrote nothing"
        )
        ch.execute(f"DROP DATABASE IF EXISTS {target.clickhouse_database}")
    ch.execute(f"DROP DATABASE IF EXISTS {source.clickhouse_database}")
    c, r = statistics.median(closes), statistics.median(reads)
    print()
    print(f"close of {a.subscriptions:,} subscriptions x {a.events_per_sub} events, median of")
    print(f"{a.runs} runs: {c:.1f} s ({a.subscriptions / c:,.0f} invoices/s); target <= 60 s")
    print(
        f"baseline (read the same events, no processing): {r:.1f} s; close / baseline {c / r:.1f}x"
    )


if __name__ == "__main__":
    main()
