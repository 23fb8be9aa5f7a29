"""`python -m benchmarks.bench_loader`: rows/s of `meterflow load` copying N JSON rows of the
`events` contract from a Kafka topic into ClickHouse (`--once`, insert + commit included), next
to bench_metering's baseline (a plain consumer inserting raw records with clickhouse-driver) on
the same topic, and the per-row cost of the row extractors (no services).

Figures are medians of --runs runs, printed only; the machine is shared, compare ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from dataclasses import replace

from prometheus_client import CollectorRegistry

from benchmarks.bench_metering import baseline_copy, log
from connectors.clickhouse import connect, migrate
from connectors.kafka_admin import delete_topics, ensure_acls, ensure_topics
from connectors.loader import Loader, LoaderConfig, debezium_row, json_row, routes
from connectors.producer import produce_raw
from meterflow.settings import Settings
from meterflow.testing.clickhouse_users import use_scratch_users

T0_MS = 1_767_323_045_000


def event_value(i: int) -> bytes:
    """~330 bytes, shaped as the metering job's accepted rows."""
    row = {
        "customer_id": f"cust-{i % 500:04d}",
        "event_id": f"{uuid.UUID(int=i)}",
        "event_name": ("api_call", "llm_tokens", "gpu_minutes")[i % 3],
        "timestamp_ms": T0_MS + i * 7,
        "value": None if i % 3 == 0 else round((i % 9973) * 0.125, 3),
        "properties": json.dumps({"region": ("eu", "us")[i % 2], "model": "small"}),
        "source": "bench",
        "schema_id": 1,
        "kafka_topic": "usage-events",
        "kafka_partition": i % 2,
        "kafka_offset": i // 2,
    }
    return json.dumps(row, separators=(",", ":")).encode()


class TimedLoader(Loader):
    """Records when the first message arrived, so group join is not counted as loading."""

    first: float | None = None

    def _add_all(self, msgs: list) -> None:
        if msgs and self.first is None:
            self.first = time.monotonic()
        super()._add_all(msgs)


def loader_run(settings: Settings, max_rows: int) -> tuple[float, float]:
    """(rows/s from the first message to the last commit, wall seconds incl. start-up)."""
    migrate(settings)
    group = f"meterflow-loader-bench-{uuid.uuid4().hex[:8]}"
    cfg = LoaderConfig(group_id=group, once=True, max_rows=max_rows)
    loader = TimedLoader(settings, cfg, CollectorRegistry())
    t0 = time.monotonic()
    loader.run()
    end = time.monotonic()
    db = settings.clickhouse_database
    n = connect(settings, db, role="reader").execute(f"SELECT count() FROM {db}.events")
    rows = n[0][0]
    return rows / (end - (loader.first or t0)), end - t0


def extractor_costs(n: int = 200_000) -> dict[str, float]:
    """µs per row of each extractor on rows of this benchmark."""
    rows = [event_value(i) for i in range(n)]
    changes = [b'{"before":null,"after":' + r + b',"op":"c"}' for r in rows]
    reordered = [b'{"op":"c","before":null,"after":' + r + b"}" for r in rows]
    out = {}
    for name, fn, values in (
        ("json (pass-through check)", json_row, rows),
        ("debezium-json, Flink layout (slice)", debezium_row, changes),
        ("debezium-json, other layout (json.loads + dumps)", debezium_row, reordered),
    ):
        t0 = time.perf_counter()
        for v in values:
            fn(v)
        out[name] = (time.perf_counter() - t0) / n * 1e6
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--max-rows", type=int, default=50_000, help="loader batch size")
    p.add_argument("--no-baseline", action="store_true")
    a = p.parse_args(argv)
    use_scratch_users()  # the loader runs here, in databases of this benchmark

    run_id = uuid.uuid4().hex[:8]
    base = replace(Settings(), events_topic=f"bench-load-{run_id}")
    topic = next(r.topic for r in routes(base) if r.table == "events")
    loader_topics = [t for r in routes(base) for t in (r.topic, r.dlq_topic)]
    ensure_topics(base, loader_topics)
    ensure_acls(base)  # the loader runs as its own principal
    dbs: list[str] = []
    try:
        t0 = time.monotonic()
        produce_raw(base, ((None, event_value(i), T0_MS) for i in range(a.rows)), topic=topic)
        log(f"produced {a.rows:,} JSON rows to {topic} in {time.monotonic() - t0:.1f}s")
        load_rates, walls, base_rates = [], [], []
        for r in range(a.runs):
            db = f"bench_{run_id}_load{r}"
            dbs.append(db)
            rate, wall = loader_run(replace(base, clickhouse_database=db), a.max_rows)
            load_rates.append(rate)
            walls.append(wall)
            log(f"run {r + 1}: loader {rate:,.0f} rows/s ({wall:.1f}s wall incl. start-up)")
            if not a.no_baseline:
                db = f"bench_{run_id}_copy{r}"
                dbs.append(db)
                base_rates.append(baseline_copy(replace(base, events_topic=topic), db, a.rows))
                log(f"run {r + 1}: baseline copy {base_rates[-1]:,.0f} rows/s")
        costs = extractor_costs()
        ml = statistics.median(load_rates)
        print()
        print(f"rows                               {a.rows:>12,}")
        print(
            f"loader (median of {a.runs})            {ml:>12,.0f} rows/s   runs: "
            + ", ".join(f"{x:,.0f}" for x in load_rates)
        )
        print(f"loader wall incl. start-up         {statistics.median(walls):>12.1f} s")
        if base_rates:
            mb = statistics.median(base_rates)
            print(
                f"baseline copy (median of {a.runs})     {mb:>12,.0f} rows/s   runs: "
                + ", ".join(f"{x:,.0f}" for x in base_rates)
            )
            print(f"loader / baseline                  {ml / mb:>12.2f} x")
        for name, us in costs.items():
            print(f"{name:<50} {us:6.2f} µs/row")
    finally:
        ch = connect(base, role="migrate")
        for db in dbs:
            ch.execute(f"DROP DATABASE IF EXISTS {db}")
        delete_topics(base, loader_topics)


if __name__ == "__main__":
    main()
