"""Fixtures for tests against the real local stack started by `make up` / `make test`.

Each test gets its own topic, subject and ClickHouse database so tests never see each other's
data or the demo's. A missing service is a failure with a pointer to `make up`, never a skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from confluent_kafka.admin import AdminClient

from connectors.clickhouse import connect, migrate
from connectors.kafka_admin import delete_topics, ensure_topics
from connectors.registry import client as registry_client
from connectors.registry import register_event_schema
from meterflow.config import REPO_ROOT, Settings
from meterflow.events import schema_text

JOB_TIMEOUT_S = 300


def _check_stack(settings: Settings) -> None:
    problems = []
    try:
        AdminClient({"bootstrap.servers": settings.kafka_bootstrap}).list_topics(timeout=5)
    except Exception as exc:  # the exact error is what the reader needs
        problems.append(f"kafka at {settings.kafka_bootstrap}: {exc}")
    try:
        registry_client(settings).get_subjects()
    except Exception as exc:
        problems.append(f"registry at {settings.registry_url}: {exc}")
    try:
        connect(settings).execute("SELECT 1")
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

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "METERFLOW_EVENTS_TOPIC": self.settings.events_topic,
            "METERFLOW_DB": self.settings.clickhouse_database,
        }

    def run_job(self, *args: str, group_id: str | None = None) -> subprocess.CompletedProcess:
        """Run the metering job on the local mini-cluster in its own process, bounded."""
        cmd = [
            sys.executable,
            "-m",
            "jobs.metering",
            "--bounded",
            "--group-id",
            group_id or f"it-{self.run_id}",
            *args,
        ]
        proc = subprocess.run(
            cmd,
            cwd=REPO_ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=JOB_TIMEOUT_S,
        )
        assert proc.returncode == 0, f"job failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        return proc


@pytest.fixture
def scratch(base_settings: Settings) -> Iterator[Scratch]:
    run_id = uuid.uuid4().hex[:10]
    settings = replace(
        base_settings,
        events_topic=f"it-events-{run_id}",
        clickhouse_database=f"it_{run_id}",
    )
    ensure_topics(settings, [settings.events_topic])
    register_event_schema(settings, schema_text(1))
    migrate(settings)
    yield Scratch(settings, run_id)
    connect(settings).execute(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")
    delete_topics(settings, [settings.events_topic])
    registry_client(settings).delete_subject(settings.events_subject, permanent=False)
