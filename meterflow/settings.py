"""Runtime settings, read from the environment with defaults matching infra/ports.env."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from meterflow.identifiers import NAME, TOPIC

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = field(
        default_factory=lambda: _env("METERFLOW_KAFKA", f"127.0.0.1:{_env('KAFKA_PORT', '9092')}")
    )
    registry_url: str = field(
        default_factory=lambda: _env(
            "METERFLOW_REGISTRY",
            f"http://127.0.0.1:{_env('REGISTRY_PORT', '8085')}/apis/ccompat/v7",
        )
    )
    clickhouse_host: str = field(default_factory=lambda: _env("CLICKHOUSE_HOST", "127.0.0.1"))
    clickhouse_port: int = field(default_factory=lambda: int(_env("CLICKHOUSE_PORT", "9000")))
    clickhouse_database: str = field(default_factory=lambda: _env("METERFLOW_DB", "meterflow"))
    events_topic: str = field(
        default_factory=lambda: _env("METERFLOW_EVENTS_TOPIC", "usage-events")
    )
    topic_partitions: int = field(default_factory=lambda: int(_env("METERFLOW_PARTITIONS", "2")))

    def __post_init__(self) -> None:
        # Both are spliced into generated SQL and Flink table options (see meterflow.identifiers);
        # the error names the variable because that is where a bad value usually comes from.
        for var, value, kind in (
            ("METERFLOW_DB", self.clickhouse_database, NAME),
            ("METERFLOW_EVENTS_TOPIC", self.events_topic, TOPIC),
        ):
            problem = kind.problem(value) if isinstance(value, str) else f"got {value!r}"
            if problem is not None:
                raise ValueError(f"{var}: {problem}")

    @property
    def dlq_topic(self) -> str:
        return f"{self.events_topic}-dlq"

    @property
    def late_topic(self) -> str:
        return f"{self.events_topic}-late"

    @property
    def alerts_topic(self) -> str:
        return f"{self.events_topic}-alerts"

    # The metering job's outputs to ClickHouse, loaded by `meterflow load` (connectors/loader).
    @property
    def accepted_topic(self) -> str:
        return f"{self.events_topic}-accepted"

    @property
    def late_events_topic(self) -> str:
        return f"{self.events_topic}-late-events"

    @property
    def windows_topic(self) -> str:
        return f"{self.events_topic}-windows"

    @property
    def period_cost_topic(self) -> str:
        return f"{self.events_topic}-period-cost"

    @property
    def alert_rows_topic(self) -> str:
        return f"{self.events_topic}-alert-rows"

    @property
    def alerts_subject(self) -> str:
        return f"{self.alerts_topic}-value"

    @property
    def all_topics(self) -> list[str]:
        return [
            self.events_topic,
            self.dlq_topic,
            self.late_topic,
            self.alerts_topic,
            self.accepted_topic,
            self.late_events_topic,
            self.windows_topic,
            self.period_cost_topic,
            self.alert_rows_topic,
        ]

    @property
    def events_subject(self) -> str:
        # TopicNameStrategy: the subject confluent-kafka's serializer and Flink's format both use.
        return f"{self.events_topic}-value"
