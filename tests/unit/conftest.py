"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


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
