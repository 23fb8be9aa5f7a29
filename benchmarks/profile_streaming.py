"""Where the JVM job's time goes: one bounded run of jobs/streaming on a generated long-tail
topic, sampling each operator chain's busy and back-pressured time from the mini-cluster's REST
API, then `meterflow load --once` of what it wrote, timed.

    .venv/bin/python -m benchmarks.profile_streaming [--events N] [--no-rating]

Needs the stack (`make up`). Prints the job's wall time, the loader's, and per chain the mean
busy / back-pressured ms per second while the job ran: the busiest chain that is not itself
back-pressured is the bottleneck.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import replace

from benchmarks.bench_metering import bench_scenario, jvm_rating_args, write_subscriptions
from connectors.clickhouse import connect, migrate
from connectors.kafka_admin import delete_deployment, ensure_deployment
from connectors.producer import produce_raw
from connectors.registry import register_event_schema
from meterflow.events import schema_text
from meterflow.settings import REPO_ROOT, Settings
from meterflow.testing.clickhouse_users import use_scratch_users
from meterflow.testing.scenario import SCENARIO_METERS

REST_PORT = 8089


def _get(path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{REST_PORT}{path}", timeout=5) as r:
        return json.loads(r.read())


def _sample(samples: dict[str, list[tuple[float, float]]]) -> None:
    jobs = [j for j in _get("/jobs")["jobs"] if j["status"] == "RUNNING"]
    for job in jobs:
        for v in _get(f"/jobs/{job['id']}")["vertices"]:
            got = _get(
                f"/jobs/{job['id']}/vertices/{v['id']}/subtasks/metrics"
                "?get=busyTimeMsPerSecond,backPressuredTimeMsPerSecond&agg=avg"
            )
            m = {x["id"]: x.get("avg") for x in got}
            busy, bp = m.get("busyTimeMsPerSecond"), m.get("backPressuredTimeMsPerSecond")
            if busy is not None and bp is not None:
                samples.setdefault(v["name"], []).append((float(busy), float(bp)))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=300_000)
    p.add_argument("--no-rating", action="store_true")
    a = p.parse_args(argv)
    use_scratch_users()  # the job and the loader run in a database of this profile
    write_subscriptions()
    run_id = uuid.uuid4().hex[:8]
    # its own topics and database: the default ones belong to `make run` and the stack's loader
    s = replace(
        Settings(), events_topic=f"profile-{run_id}", clickhouse_database=f"profile_{run_id}"
    )
    ensure_deployment(s)
    register_event_schema(s, schema_text(1))
    migrate(s)
    env = {
        **os.environ,
        "METERFLOW_EVENTS_TOPIC": s.events_topic,
        "METERFLOW_DB": s.clickhouse_database,
    }
    try:
        sc = bench_scenario(a.events, "long-tail")
        produce_raw(s, [(r.key, r.value, r.timestamp_ms) for r in sc.records])
        rating = jvm_rating_args(a.no_rating)
        cmd = [
            sys.executable, "-m", "jobs.streaming", "--bounded", "--group-id",
            f"meterflow-metering-p-{run_id}",
            "--checkpoint-dir", str(REPO_ROOT / "var" / "profile" / run_id),
            "--meters", str(SCENARIO_METERS), *rating,
        ]  # fmt: skip
        t0 = time.monotonic()
        job = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env={**env, "METERFLOW_FLINK_REST_PORT": str(REST_PORT)}
        )
        samples: dict[str, list[tuple[float, float]]] = {}
        while job.poll() is None:
            time.sleep(2)
            with contextlib.suppress(OSError):  # not up yet, or shutting down
                _sample(samples)
        job_s = time.monotonic() - t0
        if job.returncode != 0:
            raise SystemExit(f"job failed ({job.returncode})")
        t0 = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "meterflow.cli", "load", "--once", "--group-id",
             f"meterflow-loader-l-{run_id}"],
            cwd=REPO_ROOT, env=env, check=True, capture_output=True,
        )  # fmt: skip
        load_s = time.monotonic() - t0
        print(
            f"records {len(sc.records):,}  job {job_s:.1f} s (incl. start-up)  load {load_s:.1f} s"
        )
        print(f"{'busy ms/s':>10} {'backpressured':>14}  chain")
        rows = [
            (statistics.mean(b for b, _ in v), statistics.mean(bp for _, bp in v), name)
            for name, v in samples.items()
        ]
        for busy, bp, name in sorted(rows, reverse=True):
            print(f"{busy:10.0f} {bp:14.0f}  {name[:160]}")
    finally:
        delete_deployment(s)
        connect(s, role="migrate").execute(f"DROP DATABASE IF EXISTS {s.clickhouse_database}")


if __name__ == "__main__":
    main(sys.argv[1:])
