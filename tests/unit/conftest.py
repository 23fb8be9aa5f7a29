"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from meterflow.settings import KAFKA_ROLES


@pytest.fixture(autouse=True)
def unit_secrets(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Unit tests never read the local stack's var/secrets: every principal gets a made-up
    password (`pw-<name>`) in a directory of the test's own."""
    d = tmp_path_factory.mktemp("secrets")
    for role in KAFKA_ROLES:
        (d / f"kafka-{role}").write_text(f"pw-kafka-{role}\n")
    monkeypatch.setenv("METERFLOW_SECRETS", str(d))
    yield d


@pytest.fixture
def meter_def() -> Callable[..., dict[str, Any]]:
    """Builds the raw definition of a minimal valid meter (`m`, a SUM of the event value), with
    `fields` added or replaced: the meter loader's tests and the identifier tests vary it one
    field at a time."""

    def build(**fields: Any) -> dict[str, Any]:
        # a fresh dict (and nested quantity) each call: tests edit what they get
        base: dict[str, Any] = {
            "id": "m",
            "version": 1,
            "event_name": "e",
            "aggregation": "SUM",
            "quantity": {"from": "value"},
        }
        base.update(fields)
        return base

    return build
