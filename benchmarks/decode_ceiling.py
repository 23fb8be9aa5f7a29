"""Baseline (b) of the metering bench: Flink reading and decoding the events topic into a
blackhole, the JVM ceiling of any job on this topic.

    .venv/bin/python -m benchmarks.decode_ceiling --topic T [--group-id G]

Runs in the job's own environment (jobs/streaming/environment.py: mini-cluster, parallelism,
checkpoints) with the job's source table (the meterflow-avro format, which never fails on bad
bytes; Flink's avro-confluent would fail on the topic's malformed records), bounded, every
decoded column read into a blackhole. Prints `samples t:n ...`: the records the source had
emitted, from the mini-cluster's REST API twice a second, and the CPU seconds used so far, for
the bench's sustained rate and CPU per record (10 % to 90 % of the topic: no start-up).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import replace

from benchmarks.process_stats import TreeCpu
from jobs.streaming.environment import table_env
from jobs.streaming.options import JobOptions
from jobs.streaming.source import DECODED_COLUMNS, source_ddl
from meterflow.settings import REPO_ROOT, Settings

REST_PORT = 8091


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--topic", required=True)
    p.add_argument("--group-id", default="meterflow-metering-decode-ceiling")
    a = p.parse_args(argv)
    os.environ["METERFLOW_FLINK_REST_PORT"] = str(REST_PORT)
    settings = replace(Settings(), events_topic=a.topic)
    opts = JobOptions(
        bounded=True,
        group_id=a.group_id,
        checkpoint_dir=REPO_ROOT / "var" / "bench" / "ceiling" / a.group_id,
    )
    # the REST API's metrics are otherwise cached for 10 s, longer than the whole run
    _env, t_env = table_env(settings, opts, {"metrics.fetcher.update-interval": "500"})
    t_env.execute_sql(source_ddl(settings, opts))
    cols = [name for name, _ in DECODED_COLUMNS]
    types = ", ".join(f"`{n}` {t}" for n, t in DECODED_COLUMNS)
    t_env.execute_sql(f"CREATE TEMPORARY TABLE sink ({types}) WITH ('connector' = 'blackhole')")
    result = t_env.execute_sql(
        f"INSERT INTO sink SELECT {', '.join(f'`{c}`' for c in cols)} FROM kafka_records"
    )
    job_id = str(result.get_job_client().get_job_id())
    done = threading.Event()
    samples: list[tuple[float, int, float]] = []
    poller = threading.Thread(target=_poll, args=(job_id, samples, done), daemon=True)
    poller.start()
    result.wait()
    done.set()
    poller.join()
    print("samples " + " ".join(f"{t:.2f}:{n}:{c:.2f}" for t, n, c in samples))


def _get(path: str) -> object:
    with urllib.request.urlopen(f"http://127.0.0.1:{REST_PORT}{path}", timeout=5) as r:
        return json.loads(r.read())


def _poll(job_id: str, samples: list[tuple[float, int, float]], done: threading.Event) -> None:
    """(seconds, records the source emitted so far, CPU seconds of this process and its JVM)
    twice a second while the job runs."""
    t0 = time.monotonic()
    cpu = TreeCpu(os.getpid())
    metric = None
    while not done.wait(0.5):
        with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
            vertex = _get(f"/jobs/{job_id}")["vertices"][0]["id"]  # type: ignore[index]
            base = f"/jobs/{job_id}/vertices/{vertex}/metrics"
            if metric is None:
                names = [m["id"] for m in _get(base)]  # type: ignore[union-attr]
                # None until the operator's metrics are registered (a StopIteration here ended
                # this thread: a run with no samples at all)
                metric = next(
                    (n for n in names if n.endswith("kafka_records[1].numRecordsOut")), None
                )
                if metric is None:
                    continue
            got = _get(f"{base}?get={urllib.parse.quote(metric)}")
            n = int(float(got[0]["value"]))  # type: ignore[index]
            samples.append((time.monotonic() - t0, n, cpu.seconds()))


if __name__ == "__main__":
    main(sys.argv[1:])
