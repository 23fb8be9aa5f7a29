"""A client app for tests/integration/test_sdk.py: tracks events continuously through
UsageClient from several threads and leaves evidence on disk that survives a SIGKILL.

- tracking file: each event_id, written just BEFORE track() is called;
- accepted file: each event_id track() returned, written right after it returned (a write(2)
  is in the kernel once it returns: a SIGKILL of this process cannot lose it, so no fsync);
- stats file: the client's counters, replaced atomically a few times a second;
- with --scenario-seed (the fault harness, tests/chaos): events shaped like the scenario's
  (meterflow.testing.scenario) with event times --time-offset seconds in the past, a share
  --duplicate-rate of them tracked again with the same id (a retrying app), and each event
  written whole to --events-file just before track() (a JSON line with the wall time), so the
  harness can compute every expected window from what was sent.

SIGTERM stops tracking, closes the client (flushing the spool to Kafka) and exits 0 when
nothing is left undelivered. Run: python -m tests.integration.sdk_client_proc --help
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry

from meterflow.sdk import UsageClient
from meterflow.testing.scenario import event_maker


@dataclass
class Evidence:
    accepted: int = 0  # ids written to the accepted file
    max_track_ms: float = 0.0  # slowest track() call
    error: str | None = None  # what stopped a tracking thread


def _open_append(path: Path) -> int:
    # A SIGKILL can only tear the line being written; drop it so the next id starts a line.
    # Its id is in the tracking file if it was ever handed to track().
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            os.truncate(path, data.rfind(b"\n") + 1)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--spool", type=Path, required=True)
    p.add_argument("--accepted", type=Path, required=True)
    p.add_argument("--tracking", type=Path, required=True)
    p.add_argument("--stats", type=Path, required=True)
    p.add_argument("--rate", type=float, default=200.0, help="events per second, all threads")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-in-flight", type=int, default=2000)
    p.add_argument("--delivery-timeout", type=float, default=15.0)
    p.add_argument("--scenario-seed", type=int, default=None)
    p.add_argument("--customers", type=int, default=4)
    p.add_argument("--time-offset", type=float, default=0.0, help="event time = now - this (s)")
    p.add_argument("--duplicate-rate", type=float, default=0.0)
    p.add_argument("--events-file", type=Path, default=None)
    a = p.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    accepted_fd = _open_append(a.accepted)
    tracking_fd = _open_append(a.tracking)
    events_fd = _open_append(a.events_file) if a.events_file else None
    client = UsageClient(
        spool_dir=a.spool,
        max_in_flight=a.max_in_flight,
        delivery_timeout_s=a.delivery_timeout,
        registry=CollectorRegistry(),
    )
    lock = threading.Lock()
    evidence = Evidence()

    def stats(**extra: object) -> dict:
        with lock:
            snapshot = asdict(evidence)
        return {
            **snapshot,
            "pid": os.getpid(),
            "tracked": client.events_tracked,
            "delivered": client.events_delivered,
            "errors": client.delivery_errors,
            "spool_depth": client.spool_depth,
            "spool_bytes": client.spool_bytes,
            "replayed_at_start": client.replayed_at_start,
            **extra,
        }

    def track_loop(k: int) -> None:
        try:
            _track_loop(k)
        except Exception as exc:  # the test must see it: stop everything, exit non-zero
            with lock:
                evidence.error = repr(exc)
            stop.set()

    def _track_loop(k: int) -> None:
        period = a.threads / a.rate
        due = time.monotonic()
        n = 0
        rng = random.Random()
        make = None
        if a.scenario_seed is not None:
            make = event_maker(a.scenario_seed * 1000 + k + os.getpid(), a.customers)
        again: list[dict] = []  # accepted events, for retries with the same id
        while not stop.is_set():
            if make is None:
                ev = {
                    "event_id": str(uuid.uuid4()),
                    "event_name": "api_call",
                    "customer_id": f"sdk-cust-{(k * 7919 + n) % 7}",
                    "value": None,
                    "properties": {"region": "eu-west-1"},
                    "timestamp": None,
                    "source": "sdk-it",
                }
            elif again and rng.random() < a.duplicate_rate:
                ev = {**rng.choice(again), "retry": True}
            else:
                at = datetime.now(UTC) - timedelta(seconds=a.time_offset)
                # whole milliseconds, as the event contract carries them: the harness's
                # expectation (LATEST's tie-break on equal times) must see the times it sent
                e = make(at.replace(microsecond=at.microsecond // 1000 * 1000))
                ev = {**asdict(e), "event_id": str(uuid.uuid4())}
            retry = ev.pop("retry", False)
            event_id = ev["event_id"]
            os.write(tracking_fd, f"{event_id}\n".encode())
            if events_fd is not None:
                # before track(): a kill between the two leaves an event whose fate is open
                # but whose content the harness knows
                line = {
                    **ev, "timestamp": ev["timestamp"].isoformat(), "at": time.time(),
                    "retry": retry,
                }  # fmt: skip
                line["value"] = None if ev["value"] is None else str(ev["value"])
                os.write(events_fd, (json.dumps(line) + "\n").encode())
                if not retry and len(again) < 1000:
                    again.append(ev)
            started = time.monotonic()
            got = client.track(**ev)
            took_ms = (time.monotonic() - started) * 1000
            assert got == event_id
            os.write(accepted_fd, f"{event_id}\n".encode())
            with lock:
                evidence.accepted += 1
                evidence.max_track_ms = max(evidence.max_track_ms, took_ms)
            n += 1
            due += period
            stop.wait(max(0.0, due - time.monotonic()))

    workers = [threading.Thread(target=track_loop, args=(k,)) for k in range(a.threads)]
    for w in workers:
        w.start()
    while not stop.wait(0.25):
        _write_json(a.stats, stats())
    for w in workers:
        w.join()
    remaining = client.close(timeout=60)
    _write_json(a.stats, stats(closed=True, remaining=remaining))
    if evidence.error is not None:
        return 4
    return 0 if remaining == 0 else 3


if __name__ == "__main__":
    raise SystemExit(main())
