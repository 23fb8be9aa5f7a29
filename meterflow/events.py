"""The usage-event contract (schemas/usage_event) as plain Python, plus demo traffic."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal
from pathlib import Path

from meterflow.settings import REPO_ROOT

SCHEMA_DIR = REPO_ROOT / "schemas" / "usage_event"
# Avro decimal(38, 12): the quantum every quantity is stored with, end to end.
QUANTITY_SCALE = 12
QUANTUM = Decimal(1).scaleb(-QUANTITY_SCALE)
# Quantities have up to 38 significant digits; Python's default context keeps 28 and would round
# sums and quantize() would fail. Quantity arithmetic goes through this context explicitly.
WIDE = Context(prec=80)
AVRO_LIMIT = Decimal(10) ** 26  # decimal(38, 12): 26 integer digits


class QuantityTooLarge(ArithmeticError):
    pass


def avro_quantity(value: Decimal) -> Decimal:
    """`value` at the contract's scale; refuses what decimal(38, 12) cannot hold (fastavro
    would write it anyway, and every consumer would then read a different number)."""
    q = value.quantize(QUANTUM, context=WIDE)
    if abs(q) >= AVRO_LIMIT:
        raise QuantityTooLarge(f"{value} does not fit the event's decimal(38, 12)")
    return q


def schema_path(version: int) -> Path:
    return SCHEMA_DIR / f"v{version}.avsc"


def schema_text(version: int = 1) -> str:
    # Normalised JSON so registering the same schema twice is recognised as the same schema.
    return json.dumps(json.loads(schema_path(version).read_text()), separators=(",", ":"))


@dataclass(frozen=True)
class UsageEvent:
    event_id: str
    event_name: str
    customer_id: str
    timestamp: datetime
    value: Decimal | None = None
    properties: dict[str, str] = field(default_factory=dict)
    source: str | None = None

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is None:
            raise ValueError("UsageEvent.timestamp must be timezone-aware (UTC)")

    def to_record(self) -> dict[str, object]:
        """The dict confluent-kafka's AvroSerializer expects for schema v1."""
        return {
            "event_id": self.event_id,
            "event_name": self.event_name,
            "customer_id": self.customer_id,
            "timestamp": self.timestamp.astimezone(UTC),
            "value": None if self.value is None else avro_quantity(self.value),
            "properties": dict(self.properties),
            "source": self.source,
        }


def demo_events(
    count: int,
    *,
    start: datetime,
    customers: int = 5,
    event_names: tuple[str, ...] = ("api_call", "llm_tokens"),
    span: timedelta = timedelta(minutes=3),
    seed: int = 7,
) -> Iterator[UsageEvent]:
    """Deterministic demo traffic spread over `span` starting at `start` (UTC)."""
    rng = random.Random(seed)
    span_ms = int(span.total_seconds() * 1000)
    for i in range(count):
        name = event_names[i % len(event_names)]
        props = {"region": rng.choice(("eu-west-1", "us-east-1"))}
        if name == "llm_tokens":
            props["model"] = rng.choice(("small", "large"))
        yield UsageEvent(
            event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            event_name=name,
            customer_id=f"cust-{rng.randrange(customers):03d}",
            timestamp=start + timedelta(milliseconds=rng.randrange(span_ms)),
            value=Decimal(rng.randrange(1, 2000)) if name == "llm_tokens" else Decimal(1),
            properties=props,
            source="meterflow-demo",
        )
