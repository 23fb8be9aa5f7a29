"""The producer SDK's promise on the real stack: every event track() accepted reaches ClickHouse
exactly once by event_id, through a 60 s Kafka broker outage and a SIGKILL of the client.

A client process (sdk_client_proc) tracks ~200 events/s while the metering job runs. The broker
is stopped for 60 s and started again the way infra/stack.sh runs it (its pid file and its exact
command line); the client is then SIGKILLed mid-stream, restarted on the same spool (it replays)
and stopped cleanly. ClickHouse `events` must then hold every accepted id once and no id that
no track() call was given.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from meterflow.settings import REPO_ROOT, Settings
from tests.integration.conftest import Scratch, kill_job, make_scratch

OUTAGE_S = 60
RATE = 200  # events/s tracked by the client
DELIVERY_TIMEOUT_S = 15  # < OUTAGE_S: deliveries do fail during the outage and are resent
MAX_IN_FLIGHT = 2000  # < RATE * OUTAGE_S: the window fills and the rest waits in the spool


# ----------------------------------------------------------------------------- the broker


@dataclass
class Broker:
    """The stack's Kafka broker, stopped and started as infra/stack.sh does: SIGTERM and wait
    (SIGKILL after 30 s); start = the same java command line, output to var/log/kafka.log, pid
    in var/run/kafka.pid, then wait until it serves metadata for our topic."""

    settings: Settings
    pidfile: Path
    logfile: Path
    argv: list[str]
    cwd: str

    @classmethod
    def of_stack(cls, settings: Settings) -> Broker:
        var = Path(os.environ.get("METERFLOW_VAR", REPO_ROOT / "var"))
        pidfile = var / "run" / "kafka.pid"
        pid = _alive(pidfile)
        if pid is None:
            pytest.fail(f"no running Kafka broker behind {pidfile} (run `make up`)")
        argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
        assert "kafka.Kafka" in argv, f"{pidfile} names pid {pid}, not a broker: {argv}"
        return cls(
            settings, pidfile, var / "log" / "kafka.log", argv, os.readlink(f"/proc/{pid}/cwd")
        )

    def stop(self) -> None:
        pid = _alive(self.pidfile)
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)

    def start(self) -> None:
        if _alive(self.pidfile) is None:
            with self.logfile.open("a") as log:
                # Its own session: the broker must outlive this test process, like stack.sh's.
                proc = subprocess.Popen(
                    self.argv,
                    cwd=self.cwd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            self.pidfile.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + 90
        while not self.serves(self.settings.events_topic):
            if _alive(self.pidfile) is None:
                pytest.fail(f"Kafka exited during start-up; read {self.logfile}")
            if time.monotonic() > deadline:
                pytest.fail(f"Kafka not healthy 90 s after start; read {self.logfile}")
            time.sleep(0.5)

    def serves(self, topic: str) -> bool:
        try:
            # log_level 0: "connection refused" while it boots is the expected answer, not news
            admin = AdminClient({**self.settings.kafka_config("operator"), "log_level": 0})
            md = admin.list_topics(topic, timeout=2)
        except Exception:
            return False
        t = md.topics.get(topic)
        return bool(
            md.brokers
            and t is not None
            and t.error is None
            and t.partitions
            and all(p.leader >= 0 for p in t.partitions.values())
        )


def _alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of ours is dead for our purposes
    with contextlib.suppress(FileNotFoundError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


# ----------------------------------------------------------------------------- the client


@dataclass
class ClientFiles:
    directory: Path

    @property
    def spool(self) -> Path:
        return self.directory / "spool"

    @property
    def accepted(self) -> Path:
        return self.directory / "accepted.txt"

    @property
    def tracking(self) -> Path:
        return self.directory / "tracking.txt"

    @property
    def stats(self) -> Path:
        return self.directory / "stats.json"

    def start(self, scratch: Scratch) -> subprocess.Popen:
        self.stats.unlink(missing_ok=True)
        with (self.directory / f"client-{time.time_ns()}.log").open("w") as log:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.integration.sdk_client_proc",
                    *("--spool", str(self.spool), "--accepted", str(self.accepted)),
                    *("--tracking", str(self.tracking), "--stats", str(self.stats)),
                    *("--rate", str(RATE), "--delivery-timeout", str(DELIVERY_TIMEOUT_S)),
                    *("--max-in-flight", str(MAX_IN_FLIGHT)),
                ],
                cwd=REPO_ROOT,
                env=scratch.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # so a SIGKILL can take its whole process group
            )

    def read_stats(self) -> dict:
        try:
            return json.loads(self.stats.read_text())
        except FileNotFoundError:
            return {}

    def ids(self, path: Path) -> set[str]:
        # only complete lines: the client cuts a torn last line off when it starts again
        data = path.read_text()
        return set(data[: data.rfind("\n") + 1].split())


def _wait(what: str, check, timeout: float, alive: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        for proc in alive:
            if proc.poll() is not None:
                pytest.fail(f"{proc.args[:3]} exited ({proc.returncode}) waiting for {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.25)


# ----------------------------------------------------------------------------- the test


# both jobs: the Python one writes ClickHouse itself, the JVM one writes Kafka (through the
# same broker outage) and `meterflow load` stores its output
@pytest.mark.parametrize("module", ["jobs.metering", "jobs.streaming"])
def test_tracked_events_reach_clickhouse_once_through_a_broker_outage_and_a_sigkill(
    base_settings, tmp_path, module
):
    with make_scratch(base_settings, tmp_path) as scratch:
        broker = Broker.of_stack(scratch.settings)
        loader = scratch.loader() if module == "jobs.streaming" else contextlib.nullcontext()
        try:
            with loader:
                _outage_and_crash(scratch, broker, ClientFiles(tmp_path), module)
        finally:
            broker.start()  # whatever happened, the shared stack keeps its broker


def _outage_and_crash(scratch: Scratch, broker: Broker, files: ClientFiles, module: str) -> None:
    took: dict[str, float] = {}
    clock = time.monotonic()

    def lap(phase: str) -> None:
        nonlocal clock
        took[phase], clock = time.monotonic() - clock, time.monotonic()

    job = scratch.start_job("--checkpoint-interval", "2", "--prices", "none", module=module)
    client = files.start(scratch)
    try:
        _wait(
            "the first SDK events in ClickHouse",
            lambda: _stored_count(scratch) >= 100,
            timeout=150,
            alive=[job, client],
        )
        before = files.read_stats()
        lap("first events stored")

        broker.stop()
        lap("broker stop")
        try:
            down_at = time.monotonic()
            _wait(
                "the end of the outage",
                lambda: time.monotonic() - down_at >= OUTAGE_S,
                timeout=OUTAGE_S + 5,
                alive=[job, client],
            )
            during = files.read_stats()
            lap("outage")
        finally:
            broker.start()
        up = files.read_stats()
        lap("broker start")

        # track() went on at its pace while Kafka was gone: into the spool, never blocking
        assert during["accepted"] - before["accepted"] >= RATE * OUTAGE_S * 0.8
        assert during["spool_depth"] >= RATE * OUTAGE_S * 0.7
        assert during["max_track_ms"] < 1000, during
        # deliveries timed out, were counted, and their events were kept to be resent
        assert sum(during["errors"].values()) >= MAX_IN_FLIGHT, during["errors"]

        # the same process resumes delivering once the broker is back... A broker restarted
        # after kill -9 recovers every partition's log and reloads the transaction state of
        # the earlier tests' exactly-once sinks first; that took over 60 s once in a full run.
        _wait(
            "deliveries after the outage",
            lambda: files.read_stats()["delivered"] > up["delivered"] + 100,
            timeout=180,
            alive=[job, client],
        )
        kill_job(client)  # ...and is SIGKILLed mid-stream
        at_kill = files.read_stats()
        lap("deliveries resumed")

        client = files.start(scratch)  # same spool: replays what was not acknowledged
        _wait("the restarted client", lambda: "pid" in files.read_stats(), 30, [job, client])
        time.sleep(5)
        client.send_signal(signal.SIGTERM)
        assert client.wait(90) == 0, files.read_stats()
        final = files.read_stats()
        lap("restarted client ran and closed")
        assert final["replayed_at_start"] > 0
        assert (final["remaining"], final["spool_depth"]) == (0, 0)

        accepted = files.ids(files.accepted)
        tracking = files.ids(files.tracking)
        _wait(
            "every accepted id in ClickHouse",
            lambda: accepted <= _stored_ids(scratch),
            timeout=120,
            alive=[job],
        )
        lap("all accepted ids stored")
    finally:
        kill_job(job)
        kill_job(client)

    stored = _stored_ids(scratch)
    count, distinct = scratch.query("SELECT count(), uniqExact(event_id) FROM {db}.events FINAL")[0]
    assert count == distinct == len(stored)
    assert accepted <= stored
    assert stored <= tracking | accepted, stored - tracking - accepted
    assert scratch.query("SELECT count() FROM {db}.late_events FINAL")[0][0] == 0
    print(
        f"\naccepted {len(accepted)}, stored {len(stored)}, tracked-not-accepted "
        f"{len(tracking - accepted)}; outage: spool depth {during['spool_depth']}, errors "
        f"{during['errors']}; at SIGKILL: depth {at_kill['spool_depth']}; replayed "
        f"{final['replayed_at_start']}; max track() {during['max_track_ms']:.1f} ms; "
        + ", ".join(f"{k} {v:.1f}s" for k, v in took.items())
    )


def _stored_count(scratch: Scratch) -> int:
    return scratch.query("SELECT count() FROM {db}.events")[0][0]


def _stored_ids(scratch: Scratch) -> set[str]:
    return {r[0] for r in scratch.query("SELECT event_id FROM {db}.events FINAL")}
