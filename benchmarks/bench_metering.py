"""`make bench`: the metering job's sustained throughput and event->queryable latency, next to
a baseline measured in the same run on the same topic: a plain Kafka consumer copying the raw
records into ClickHouse with no processing (the local limit of Kafka -> Python -> ClickHouse).

`--engine python` (default) runs jobs/metering.py, which writes ClickHouse itself;
`--engine jvm` runs jobs/streaming (metering, and rating unless --no-rating) with `meterflow
load` beside it, so a rate is end to end: accepted events queryable in ClickHouse. Each JVM
run reads its own copy of the topic, because its output topics are derived from the input
topic's name.

Figures are medians of --runs runs; the machine is shared, so compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from confluent_kafka import Consumer, Producer

from benchmarks.process_stats import TreeCpu, stack_pids, tree_rss_mib
from connectors.clickhouse import connect, migrate
from connectors.kafka_admin import delete_deployment, ensure_deployment
from connectors.producer import produce_raw
from connectors.registry import register_event_schema
from meterflow.events import UsageEvent, schema_text
from meterflow.settings import REPO_ROOT, Settings
from meterflow.testing.clickhouse_users import use_scratch_users
from meterflow.testing.scenario import (
    SCENARIO_METERS,
    Scenario,
    ScenarioConfig,
    encode,
    generate,
)


def log(msg: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {msg}", flush=True)


def sustained_rate(samples: list[tuple[float, int]], total: int) -> float:
    """Rows/s between 10% and 90% of `total`: start-up and tail excluded."""
    t10 = next(t for t, n in samples if n >= 0.1 * total)
    t90 = next(t for t, n in samples if n >= 0.9 * total)
    return 0.8 * total / max(t90 - t10, 1e-9)


def baseline_copy(settings: Settings, db: str, total: int) -> tuple[float, dict[str, float]]:
    """Consume the topic from the start and INSERT raw records in batches; rows/s and CPU µs
    per record by process (this one, the broker, ClickHouse)."""
    cpus = {k: TreeCpu(p) for k, p in {"copy": os.getpid(), **stack_pids()}.items()}
    ch = connect(settings, role="migrate")
    ch.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
    ch.execute(
        f"CREATE TABLE {db}.copy (kafka_partition UInt32, kafka_offset UInt64, "
        "key String, value String) ENGINE = MergeTree ORDER BY (kafka_partition, kafka_offset)"
    )
    c = Consumer(
        {
            **settings.kafka_config("operator"),
            "group.id": f"bench-copy-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([settings.events_topic])
    done, samples, t0 = 0, [], time.monotonic()
    cpu: list[tuple[float, int, dict[str, float]]] = []
    while done < total:
        msgs = c.consume(20_000, timeout=1)
        rows = [
            (m.partition(), m.offset(), m.key() or b"", m.value()) for m in msgs if not m.error()
        ]
        if rows:
            ch.execute(f"INSERT INTO {db}.copy VALUES", rows)
            done += len(rows)
            samples.append((time.monotonic() - t0, done))
            cpu.append((*samples[-1], {k: c.seconds() for k, c in cpus.items()}))
        if time.monotonic() - t0 > 1800:
            raise SystemExit("baseline copy did not finish in 30 min")
    c.close()
    return sustained_rate(samples, total), cpu_per_event_us(cpu, total)


def decode_ceiling(settings: Settings) -> tuple[float, float]:
    """Baseline (b): Flink decoding the topic into a blackhole (benchmarks/decode_ceiling.py),
    records/s sustained and the Flink process's CPU µs per record."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.decode_ceiling", "--topic", settings.events_topic,
         "--group-id", f"meterflow-metering-ceiling-{uuid.uuid4().hex[:8]}"],
        cwd=REPO_ROOT, check=True, capture_output=True, text=True,
    )  # fmt: skip
    line = next(x for x in done.stdout.splitlines() if x.startswith("samples"))
    got = [x.split(":") for x in line.split()[1:]]
    samples = [(float(t), int(n), {"flink": float(c)}) for t, n, c in got]
    if not samples:
        raise SystemExit(
            f"baseline (b) sampled nothing:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    total = max(n for _, n, _ in samples)
    rate = sustained_rate([(t, n) for t, n, _ in samples], total)
    return rate, cpu_per_event_us(samples, total)["flink"]


def job_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "METERFLOW_EVENTS_TOPIC": settings.events_topic,
        "METERFLOW_DB": settings.clickhouse_database,
    }


ENGINE = {"name": "python"}


def job_cmd(group: str, checkpoints: str, *extra: str) -> list[str]:
    if ENGINE["name"] == "jvm":
        return [
            sys.executable, "-m", "jobs.streaming", "--group-id", group,
            "--checkpoint-dir", checkpoints, "--meters", str(SCENARIO_METERS),
            *JVM_RATING, *extra,
        ]  # fmt: skip
    return [
        sys.executable,
        "-m",
        "jobs.metering",
        "--group-id",
        group,
        "--checkpoint-dir",
        checkpoints,
        "--meters",
        str(SCENARIO_METERS),
        *RATING,
        *extra,
    ]


# every bench customer subscribed to the scenario price book: the job rates as it meters
# (`--no-rating` measures metering alone)
RATING: list[str] = []
JVM_RATING: list[str] = []  # the JVM job has no credit alerts (yet): no --credits
SCENARIO_PRICES = REPO_ROOT / "schemas" / "prices" / "scenario.yaml"


def jvm_rating_args(no_rating: bool) -> list[str]:
    """The JVM job's rating options: the scenario price book, every bench customer subscribed."""
    if no_rating:
        return ["--prices", "none"]
    return ["--prices", str(SCENARIO_PRICES), "--subscriptions", str(SUBSCRIPTIONS)]


def bench_scenario(events: int, workload: str) -> Scenario:
    """The bench's topic: `events` events over 2 hours ending 1 hour ago, 2 % duplicates,
    10 malformed records of every kind, customers as the workload says."""
    customers, skew = WORKLOADS[workload]
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    return generate(
        ScenarioConfig(
            seed=1,
            start=start,
            span=timedelta(hours=2),
            events=events,
            customers=customers,
            customer_skew=skew,
            duplicate_rate=0.02,
            malformed_per_kind=10,
        )
    )


BENCH_CUSTOMERS = 1000
# workload -> (customers, Zipf exponent of their share of the events; 0 = uniform)
WORKLOADS = {"long-tail": (BENCH_CUSTOMERS, 0.0), "heavy-hitter": (100, 1.1)}
SUBSCRIPTIONS = REPO_ROOT / "var" / "bench" / "subscriptions.yaml"


def write_subscriptions() -> None:
    SUBSCRIPTIONS.parent.mkdir(parents=True, exist_ok=True)
    lines = ["subscriptions:"]
    for i in range(BENCH_CUSTOMERS):
        plan = "scenario_min" if i % 4 == 1 else "scenario"
        lines.append(
            f"  - {{id: sub-cust-{i}, customer_id: cust-{i}, plan: {plan}, start: 2026-01-01}}"
        )
    SUBSCRIPTIONS.write_text("\n".join(lines) + "\n")


def start_loader(settings: Settings, group: str) -> subprocess.Popen | None:
    """The JVM engine's loader, running beside the job (none for the Python engine)."""
    if ENGINE["name"] != "jvm":
        return None
    return subprocess.Popen(
        [sys.executable, "-m", "meterflow.cli", "load", "--group-id",
         group.replace("metering", "loader"),
         "--metrics-port", "0"],
        cwd=REPO_ROOT, env=job_env(settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop_loader(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_per_event_us(
    samples: list[tuple[float, int, dict[str, float]]], total: int
) -> dict[str, float]:
    """CPU microseconds per stored event by process, between 10 % and 90 % of `total` (the
    window the sustained rate is measured over)."""
    a, na = next((c, n) for _, n, c in samples if n >= 0.1 * total)
    b, nb = next((c, n) for _, n, c in samples if n >= 0.9 * total)
    return {k: 1e6 * (b[k] - a[k]) / max(nb - na, 1) for k in a}


@dataclass
class JobRun:
    rate: float  # sustained events/s
    wall: float  # seconds, start-up included
    job_rss_mib: float  # peak, the job's process tree
    loader_rss_mib: float  # peak; 0 without a loader
    cpu_us: dict[str, float]  # CPU µs per event by process (job, loader, kafka, clickhouse)


def job_run(settings: Settings, expected: int, tmp: str) -> JobRun:
    """Run the bounded job; its sustained rate, wall time and peak memory."""
    migrate(settings)
    db = settings.clickhouse_database
    ch = connect(settings, db, role="reader")
    group = f"meterflow-metering-bench-{uuid.uuid4().hex[:8]}"
    cmd = job_cmd(group, tmp, "--bounded")
    loader = start_loader(settings, group)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=REPO_ROOT,
        env=job_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    samples: list[tuple[float, int]] = []
    cpu: list[tuple[float, int, dict[str, float]]] = []
    pids = {"job": proc.pid, **({"loader": loader.pid} if loader else {}), **stack_pids()}
    cpus = {k: TreeCpu(p) for k, p in pids.items()}
    job_rss = loader_rss = 0.0
    count = f"SELECT (SELECT count() FROM {db}.events) + (SELECT count() FROM {db}.late_events)"
    deadline = time.monotonic() + 1800
    # until the job is done and (JVM engine) the loader has stored what the job wrote
    while proc.poll() is None or (loader and ch.execute(count)[0][0] < expected):
        if time.monotonic() > deadline:
            raise SystemExit("job run did not finish in 30 min")
        time.sleep(0.5)
        samples.append((time.monotonic() - t0, ch.execute(count)[0][0]))
        cpu.append((*samples[-1], {k: c.seconds() for k, c in cpus.items()}))
        job_rss = max(job_rss, tree_rss_mib(proc.pid))
        if loader is not None:
            loader_rss = max(loader_rss, tree_rss_mib(loader.pid))
    wall = time.monotonic() - t0
    stop_loader(loader)
    if proc.returncode != 0:
        raise SystemExit(f"job failed: {proc.stderr.read()[-3000:]}")
    final = ch.execute(
        f"SELECT (SELECT count() FROM {db}.events FINAL) + (SELECT count() FROM {db}.late_events)"
    )[0][0]
    if final != expected:
        raise SystemExit(f"job stored {final} events, expected {expected}")
    samples.append((wall, final))
    return JobRun(
        sustained_rate(samples, final), wall, job_rss, loader_rss, cpu_per_event_us(cpu, final)
    )


def latency(settings: Settings, seconds: int, rate: int, tmp: str, warmup: int) -> list[float]:
    """Produce `rate` events/s into the running job: `warmup` seconds unmeasured (a freshly
    started JVM compiles its hot code in the first tens of seconds), then `seconds` in which
    every 100th event is a probe whose arrival in ClickHouse is polled every 50 ms. Returns
    probe latencies in seconds."""
    migrate(settings)
    db = settings.clickhouse_database
    ch = connect(settings, db, role="reader")
    # the job's and (derived from it) the loader's group: their principals' prefixes
    group = f"meterflow-metering-lat-{uuid.uuid4().hex[:8]}"
    cmd = job_cmd(group, tmp)
    proc = subprocess.Popen(
        cmd,
        cwd=REPO_ROOT,
        env=job_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    loader = start_loader(settings, group)
    producer = Producer({**settings.kafka_config("operator"), "linger.ms": 5})
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            pending = [k for k in list(sent) if k not in seen]
            if pending:
                for (eid,) in ch.execute(
                    f"SELECT event_id FROM {db}.events WHERE event_id IN %(ids)s",
                    {"ids": tuple(pending)},
                ):
                    seen.setdefault(eid, time.monotonic())
            time.sleep(0.05)

    def send(i: int, probe: bool) -> None:
        now = datetime.now(UTC)
        eid = f"{'probe' if probe else 'load'}-{i}"
        ev = UsageEvent(
            eid,
            "api_call",
            f"cust-{i % 97}",
            now,
            None,
            {"region": "eu", "endpoint": "/v1/a", "user_id": "u1"},
        )
        producer.produce(
            settings.events_topic, key=ev.customer_id.encode(), value=encode(ev.to_record(), 1)
        )
        if probe:
            producer.flush()
            sent[eid] = time.monotonic()

    try:
        # warm-up: wait until the job answers at all
        send(0, True)
        deadline = time.monotonic() + 180
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        while "probe-0" not in seen:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("latency: job did not start")
            time.sleep(0.2)
        interval = 1.0 / rate

        def paced(first: int, count: int, probes: bool) -> None:
            start = time.monotonic()
            for i in range(first, first + count):
                send(i, probes and i % 100 == 0)
                producer.poll(0)
                lag = start + (i - first + 1) * interval - time.monotonic()
                if lag > 0:
                    time.sleep(lag)

        paced(1, warmup * rate, probes=False)
        sent.clear()
        seen.clear()
        paced(warmup * rate + 1, seconds * rate, probes=True)
        producer.flush()
        deadline = time.monotonic() + 120
        while len(seen) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        proc.kill()
        proc.wait()
        stop_loader(loader)
    missing = len(sent) - len(seen)
    if missing:
        raise SystemExit(f"latency: {missing} probes never became queryable")
    return [seen[k] - sent[k] for k in sent]


def measured_latency(
    a: argparse.Namespace, base: Settings, run_id: str, tmp: str, dbs: list[str]
) -> list[float]:
    """latency() on a topic and database of its own, with the job engine and rating of `a`."""
    lat = replace(
        base, events_topic=f"bench-lat-{run_id}", clickhouse_database=f"bench_{run_id}_lat"
    )
    ensure_deployment(lat)
    register_event_schema(lat, schema_text(1))
    dbs.append(lat.clickhouse_database)
    try:
        return sorted(
            latency(lat, a.latency_seconds, a.latency_rate, tmp + "-lat", a.latency_warmup)
        )
    finally:
        delete_deployment(lat)


def _latency_line(q: list[float], a: argparse.Namespace) -> str:
    probes = a.latency_seconds * a.latency_rate // 100
    return (
        f"event->queryable latency    p50 {q[49]:.2f}s  p99 {q[98]:.2f}s  ({probes} probes at "
        f"{a.latency_rate}/s after {a.latency_warmup} s at that rate)"
    )


def _fmt(used: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:,.1f}" for k, v in used.items())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--latency-seconds", type=int, default=20)
    p.add_argument("--latency-rate", type=int, default=2000)
    p.add_argument(
        "--latency-warmup", type=int, default=20, help="seconds at the rate before measuring"
    )
    p.add_argument("--latency-only", action="store_true", help="measure the latency alone")
    p.add_argument("--no-rating", action="store_true", help="meter only (--prices none)")
    p.add_argument(
        "--workload",
        choices=sorted(WORKLOADS),
        default="long-tail",
        help="long-tail: 1,000 customers, about one event per window; heavy-hitter: 100 "
        "customers, Zipf-distributed (s = 1.1), many events per window",
    )
    p.add_argument(
        "--engine",
        choices=["python", "jvm"],
        default="python",
        help="jobs/metering.py, or jobs/streaming + meterflow load",
    )
    a = p.parse_args(argv)
    use_scratch_users()  # the job and the loader run in databases of this benchmark
    ENGINE["name"] = a.engine
    write_subscriptions()
    JVM_RATING[:] = jvm_rating_args(a.no_rating)
    RATING[:] = JVM_RATING if a.no_rating else [*JVM_RATING, "--credits", "none"]

    run_id = uuid.uuid4().hex[:8]
    base = replace(Settings(), events_topic=f"bench-{run_id}")
    tmp = str(REPO_ROOT / "var" / "bench" / run_id)
    ensure_deployment(base)
    register_event_schema(base, schema_text(1))
    dbs: list[str] = []
    copies = [base]
    try:
        if a.latency_only:
            q = statistics.quantiles(measured_latency(a, base, run_id, tmp, dbs), n=100)
            print(_latency_line(q, a))
            return
        t0 = time.monotonic()
        sc = bench_scenario(a.events, a.workload)
        records = sc.records
        log(f"generated {len(records):,} records in {time.monotonic() - t0:.1f}s")
        t0 = time.monotonic()
        produce_raw(base, [(r.key, r.value, r.timestamp_ms) for r in records])
        log(f"produced in {time.monotonic() - t0:.1f}s")
        if a.engine == "jvm":
            for r in range(1, a.runs):
                copy = replace(base, events_topic=f"{base.events_topic}-r{r}")
                ensure_deployment(copy)
                register_event_schema(copy, schema_text(1))
                produce_raw(copy, [(x.key, x.value, x.timestamp_ms) for x in records])
                copies.append(copy)
        expected = len(sc.accepted) + len(sc.late)

        base_rates, job_rates, walls, job_rss, loader_rss = [], [], [], [], []
        ceilings: list[float] = []
        ceiling_cpu: list[float] = []
        base_cpu: list[dict[str, float]] = []
        job_cpu: list[dict[str, float]] = []
        for r in range(a.runs):
            db = f"bench_{run_id}_copy{r}"
            dbs.append(db)
            rate, used = baseline_copy(base, db, len(records))
            base_rates.append(rate)
            base_cpu.append(used)
            log(f"run {r + 1}: baseline copy {rate:,.0f} records/s, CPU µs/record {_fmt(used)}")
            if a.engine == "jvm":
                rate, flink_us = decode_ceiling(base)
                ceilings.append(rate)
                ceiling_cpu.append(flink_us)
                log(
                    f"run {r + 1}: Flink decode into a blackhole {rate:,.0f} records/s, "
                    f"CPU µs/record {flink_us:,.1f}"
                )
            db = f"bench_{run_id}_job{r}"
            dbs.append(db)
            source = copies[r] if a.engine == "jvm" else base
            run = job_run(replace(source, clickhouse_database=db), expected, tmp)
            job_rates.append(run.rate)
            walls.append(run.wall)
            job_rss.append(run.job_rss_mib)
            loader_rss.append(run.loader_rss_mib)
            job_cpu.append(run.cpu_us)
            log(
                f"run {r + 1}: metering job {run.rate:,.0f} events/s sustained, "
                f"{run.wall:.1f}s wall, peak RSS job {run.job_rss_mib:,.0f} MiB, "
                f"loader {run.loader_rss_mib:,.0f} MiB, CPU µs/event {_fmt(run.cpu_us)}"
            )

        lats = measured_latency(a, base, run_id, tmp, dbs)

        mb, mj = statistics.median(base_rates), statistics.median(job_rates)
        q = statistics.quantiles(lats, n=100)
        print()
        print(
            f"records in topic            {len(records):>12,}  (events {a.events:,}, "
            f"{sc.duplicates:,} duplicates, {sum(sc.dead_letters.values())} malformed)"
        )
        print(
            f"baseline copy (median of {a.runs})  {mb:>12,.0f} records/s   runs: "
            + ", ".join(f"{x:,.0f}" for x in base_rates)
        )
        print(f"engine                      {a.engine:>12}")
        mode = "no rating" if a.no_rating else "rating"
        print(f"workload                    {a.workload:>12}  ({mode})")
        print(
            f"metering job (median of {a.runs})   {mj:>12,.0f} events/s    runs: "
            + ", ".join(f"{x:,.0f}" for x in job_rates)
        )
        print(f"job / baseline              {mj / mb:>12.2f} x")
        if ceilings:
            mc = statistics.median(ceilings)
            print(
                f"Flink decode -> blackhole   {mc:>12,.0f} records/s   runs: "
                + ", ".join(f"{x:,.0f}" for x in ceilings)
                + f"  (CPU µs/record {statistics.median(ceiling_cpu):,.1f})"
            )
        for label, used in (("baseline copy", base_cpu), ("metering job", job_cpu)):
            med = {k: statistics.median(u[k] for u in used) for k in used[0]}
            cores = os.cpu_count() or 1
            print(
                f"CPU µs per event, {label:<13} {_fmt(med)}  sum {sum(med.values()):,.0f}: "
                f"{cores} cores allow {cores * 1e6 / max(sum(med.values()), 1e-9):,.0f}/s"
            )
        print(f"job wall incl. start-up     {statistics.median(walls):>12.1f} s")
        print(
            f"peak RSS (median)           job {statistics.median(job_rss):,.0f} MiB, "
            f"loader {statistics.median(loader_rss):,.0f} MiB"
        )
        print(_latency_line(q, a))
        print(
            f"targets: >= 100,000 events/s and >= 0.5 x baseline: "
            f"{'met' if mj >= 100_000 and mj >= 0.5 * mb else 'NOT met'}"
        )
    finally:
        ch = connect(base, role="migrate")
        for db in dbs:
            ch.execute(f"DROP DATABASE IF EXISTS {db}")
        for copy in copies:
            delete_deployment(copy)


if __name__ == "__main__":
    main()
