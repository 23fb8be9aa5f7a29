"""Fixtures for tests against the real local stack started by `make up` / `make test`.

Each test gets its own topic, subject and ClickHouse database so tests never see each other's
data or the demo's. A missing service is a failure with a pointer to `make up`, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors.clickhouse import connect, migrate
from connectors.kafka_admin import delete_deployment, ensure_deployment
from connectors.registry import client as registry_client
from connectors.registry import register_event_schema
from meterflow.events import schema_text
from meterflow.settings import REPO_ROOT, Settings

JOB_TIMEOUT_S = 300


def _check_stack(settings: Settings) -> None:
    problems = []
    try:
        AdminClient({**settings.kafka_config("operator")}).list_topics(timeout=5)
    except Exception as exc:  # the exact error is what the reader needs
        problems.append(f"kafka at {settings.kafka_bootstrap}: {exc}")
    try:
        registry_client(settings).get_subjects()
    except Exception as exc:
        problems.append(f"registry at {settings.registry_url}: {exc}")
    try:
        connect(settings, role="migrate").execute("SELECT 1")
    except Exception as exc:
        problems.append(
            f"clickhouse at {settings.clickhouse_host}:{settings.clickhouse_port}: {exc}"
        )
    if problems:
        pytest.fail("local stack not reachable (run `make up`): " + "; ".join(problems))


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    settings = Settings()
    _check_stack(settings)
    return settings


@dataclass(frozen=True)
class Scratch:
    settings: Settings
    run_id: str
    checkpoints: Path

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "METERFLOW_EVENTS_TOPIC": self.settings.events_topic,
            "METERFLOW_DB": self.settings.clickhouse_database,
        }

    def job_cmd(
        self, *args: str, group_id: str | None = None, module: str = "jobs.metering"
    ) -> list[str]:
        """The Python job (jobs.metering) or, with module="jobs.streaming", the JVM job."""
        return [
            sys.executable,
            "-m",
            module,
            "--group-id",
            group_id or f"meterflow-metering-it-{self.run_id}",
            "--checkpoint-dir",
            str(self.checkpoints),
            *args,
        ]

    def run_job(
        self, *args: str, group_id: str | None = None, module: str = "jobs.metering"
    ) -> subprocess.CompletedProcess:
        """Run the metering job bounded on the local mini-cluster, in its own process; the JVM
        job's output is then loaded (`meterflow load --once`)."""
        proc = subprocess.run(
            self.job_cmd("--bounded", *args, group_id=group_id, module=module),
            cwd=REPO_ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=JOB_TIMEOUT_S,
        )
        assert proc.returncode == 0, f"job failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        if module == "jobs.streaming":
            load = subprocess.run(
                [sys.executable, "-m", "meterflow.cli", "load", "--once", "--group-id",
                 f"meterflow-loader-once-{self.run_id}", "--metrics-port", "0"],
                cwd=REPO_ROOT, env=self.env(), capture_output=True, text=True,
                timeout=JOB_TIMEOUT_S,
            )  # fmt: skip
            assert load.returncode == 0, f"load failed:\n{load.stderr[-4000:]}"
        return proc

    def start_job(
        self,
        *args: str,
        group_id: str | None = None,
        module: str = "jobs.metering",
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen:
        """Start the unbounded job in its own process group (so a test can kill all of it);
        `env` adds to the scratch environment."""
        log = open(self.checkpoints / f"job-{time.time_ns()}.log", "w")  # noqa: SIM115
        return subprocess.Popen(
            self.job_cmd(*args, group_id=group_id, module=module),
            cwd=REPO_ROOT,
            env={**self.env(), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @contextlib.contextmanager
    def loader(self) -> Iterator[subprocess.Popen]:
        """`meterflow load` running (unbounded) beside the JVM job, stopped at the end."""
        log = open(self.checkpoints / f"loader-{time.time_ns()}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "meterflow.cli", "load", "--group-id",
             f"meterflow-loader-it-{self.run_id}",
             "--metrics-port", "0"],
            cwd=REPO_ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                kill_job(proc)
            log.close()

    def ch(self):
        return connect(self.settings, self.settings.clickhouse_database, role="migrate")

    def query(self, sql: str, params: dict | None = None) -> list[tuple]:
        return self.ch().execute(sql.replace("{db}", self.settings.clickhouse_database), params)

    def topic_records(self, topic: str, quiet_s: float = 5.0) -> list[Message]:
        """Every committed record of `topic` from the beginning (read_committed). Stops at the
        end offsets, or after `quiet_s` without progress (an open transaction holds the end)."""
        c = Consumer(
            {
                **self.settings.kafka_config("operator"),
                "group.id": f"check-{self.run_id}-{topic}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        md = c.list_topics(topic, timeout=10).topics[topic]
        parts = [TopicPartition(topic, p, 0) for p in md.partitions]
        ends = {p.partition: c.get_watermark_offsets(p, timeout=10)[1] for p in parts}
        c.assign(parts)
        out: list[Message] = []
        last_progress = time.monotonic()
        # Transactional topics end with commit markers, so "caught up" is the consumer's position
        # reaching the end offset, not a message at end - 1.
        while any(
            ends[p.partition] > 0 and p.offset < ends[p.partition] for p in c.position(parts)
        ):
            if time.monotonic() - last_progress > quiet_s:
                break
            for msg in c.consume(1000, timeout=0.5):
                assert msg.error() is None, msg.error()
                out.append(msg)
                last_progress = time.monotonic()
        c.close()
        return out

    def wait_for(self, what: str, check, timeout: float = 180.0, job=None, describe=None) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if job is not None and job.poll() is not None:
                pytest.fail(f"job exited ({job.returncode}) while waiting for {what}")
            if time.monotonic() > deadline:
                detail = f": {describe()}" if describe else ""
                pytest.fail(f"timed out after {timeout}s waiting for {what}{detail}")
            time.sleep(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def job_metrics(port: int) -> dict[str, float]:
    """The job's Prometheus reporter: every sample summed over its labels, by name."""
    out: dict[str, float] = defaultdict(float)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#"):
                name = line.split("{", 1)[0].split(" ", 1)[0]
                out[name] += float(line.rsplit(" ", 1)[1])
    return out


def job_counters(port: int) -> dict[str, float]:
    """meterflow_* operator counters of the job, summed over subtasks."""
    prefix = "flink_taskmanager_job_task_operator_meterflow_"
    out: dict[str, float] = defaultdict(float)  # a counter not yet exported reads 0
    out.update(
        (k.removeprefix(prefix), v) for k, v in job_metrics(port).items() if k.startswith(prefix)
    )
    return out


def kill_job(job: subprocess.Popen) -> None:
    """SIGKILL the job's whole process group: driver, JVM and Python workers, no clean-up."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(job.pid, signal.SIGKILL)
    job.wait(30)


@contextlib.contextmanager
def make_scratch(base: Settings, tmp: Path) -> Iterator[Scratch]:
    run_id = uuid.uuid4().hex[:10]
    settings = replace(base, events_topic=f"it-events-{run_id}", clickhouse_database=f"it_{run_id}")
    ensure_deployment(settings)
    register_event_schema(settings, schema_text(1))
    migrate(settings)
    try:
        yield Scratch(settings, run_id, tmp)
    finally:
        if not os.environ.get("METERFLOW_KEEP_SCRATCH"):  # set it to inspect a failed run's data
            connect(settings, role="migrate").execute(
                f"DROP DATABASE IF EXISTS {settings.clickhouse_database}"
            )
            delete_deployment(settings)
            reg = registry_client(settings)
            reg.delete_subject(settings.events_subject, permanent=False)
            if settings.alerts_subject in reg.get_subjects():  # only once an alert fired
                reg.delete_subject(settings.alerts_subject, permanent=False)


@pytest.fixture
def scratch(base_settings: Settings, tmp_path: Path) -> Iterator[Scratch]:
    with make_scratch(base_settings, tmp_path) as s:
        yield s


@pytest.fixture(scope="module")
def module_scratch(base_settings: Settings, tmp_path_factory) -> Iterator[Scratch]:
    with make_scratch(base_settings, tmp_path_factory.mktemp("scratch")) as s:
        yield s
