"""Checkpointed state bytes per in-flight event id (the dedup horizon's cost).

Runs the unbounded metering job over two topics holding N1 and N2 unique events that all fall
into the same few windows, waits for a checkpoint taken after every event was processed, and
reports (size2 - size1) / (N2 - N1): the marginal checkpoint bytes per remembered id. The window
state is the same in both runs (same windows, same keys), so the slope is the dedup state.

    python -m benchmarks.dedup_state --ids 100000 300000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from connectors.clickhouse import connect, migrate
from connectors.kafka_admin import delete_deployment, ensure_deployment
from connectors.producer import produce_raw
from connectors.registry import register_event_schema
from meterflow.events import UsageEvent, schema_text
from meterflow.settings import REPO_ROOT, Settings
from meterflow.testing.clickhouse_users import use_scratch_users
from meterflow.testing.scenario import encode


def checkpoint_bytes(n: int, base: Settings, workdir: Path) -> int:
    run = uuid.uuid4().hex[:8]
    s = replace(base, events_topic=f"dedup-{run}", clickhouse_database=f"dedup_{run}")
    ensure_deployment(s)
    register_event_schema(s, schema_text(1))
    migrate(s)
    # one customer, one minute: the window state is tiny and identical for every n
    at = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)
    rts = int((at + timedelta(seconds=1)).timestamp() * 1000)
    records = [
        (
            b"c",
            encode(UsageEvent(f"{run}-{i:012d}", "api_call", "c", at, None, {}).to_record(), 1),
            rts,
        )
        for i in range(n)
    ]
    produce_raw(s, records)
    cp = workdir / run
    env = {
        **os.environ,
        "METERFLOW_EVENTS_TOPIC": s.events_topic,
        "METERFLOW_DB": s.clickhouse_database,
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobs.metering",
            "--group-id",
            f"meterflow-metering-{run}",
            "--checkpoint-dir",
            str(cp),
            "--checkpoint-interval",
            "3",
            "--dedup-horizon",
            "86400",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ch = connect(s, s.clickhouse_database, role="reader")
    try:
        deadline = time.monotonic() + 900
        while ch.execute(f"SELECT count() FROM {s.clickhouse_database}.events")[0][0] < n:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("job did not ingest the events")
            time.sleep(1)
        done = time.time()
        while True:  # a checkpoint that started after everything was ingested
            chks = [
                p
                for p in cp.rglob("chk-*")
                if (p / "_metadata").exists() and (p / "_metadata").stat().st_mtime > done + 3
            ]
            if chks:
                break
            time.sleep(1)
        latest = max(chks, key=lambda p: int(p.name.split("-")[1]))
        shared = latest.parent / "shared"
        return sum(f.stat().st_size for f in latest.rglob("*") if f.is_file()) + sum(
            f.stat().st_size for f in shared.rglob("*") if f.is_file()
        )
    finally:
        proc.kill()
        proc.wait()
        ch.execute(f"DROP DATABASE IF EXISTS {s.clickhouse_database}")
        delete_deployment(s)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--ids", type=int, nargs=2, default=[100_000, 300_000])
    a = p.parse_args()
    use_scratch_users()  # the job runs in databases of this benchmark
    work = REPO_ROOT / "var" / "dedup-state"
    n1, n2 = a.ids
    b1 = checkpoint_bytes(n1, Settings(), work)
    b2 = checkpoint_bytes(n2, Settings(), work)
    print(f"{n1:,} ids: {b1:,} checkpoint bytes; {n2:,} ids: {b2:,} bytes")
    print(
        f"marginal checkpoint bytes per in-flight id: {(b2 - b1) / (n2 - n1):.1f} "
        f"(event ids of {len(f'{0:08x}-{0:012d}')} characters)"
    )


if __name__ == "__main__":
    main()
