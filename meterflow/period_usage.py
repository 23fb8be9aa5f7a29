"""A billing period's usage recomputed from stored raw events (pure).

The close job feeds every stored event of a customer's period through the same meter code the
streaming job uses (selection, filters, measure, dimensions) and aggregates over the whole
period, so an invoice never depends on how the stream was windowed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

from meterflow.events import QUANTUM, WIDE
from meterflow.meters import Aggregation, Meter

_MASK64 = (1 << 64) - 1


def id_hash(event_id: str) -> int:
    return int.from_bytes(hashlib.md5(event_id.encode()).digest()[:8], "big")


def digest_of(ids: Iterable[str]) -> str:
    """Order-independent digest of a set of event ids: the sum of 64-bit MD5 prefixes, mod 2^64.

    A sum (not XOR) so that a repeated id changes the digest instead of cancelling out.
    """
    return f"{sum(id_hash(i) for i in ids) & _MASK64:016x}"


@dataclass(frozen=True)
class StoredEvent:
    event_id: str
    event_name: str
    timestamp_ms: int
    value: Decimal | None
    properties: Mapping[str, str]


LineKey = tuple[str, int, str]  # meter id, meter version, dimensions JSON
# A charge prices a meter's total over all its dimensions (usage_windows keeps the breakdown),
# so billing lines carry no dimensions today; the key keeps room for per-dimension charges.
ALL_DIMENSIONS = "{}"


@dataclass
class LineUsage:
    """One billing line's usage in a period: its quantity, events and digest."""

    aggregation: Aggregation
    event_count: int = 0
    q_sum: Decimal = Decimal(0)
    q_min: Decimal | None = None
    q_max: Decimal | None = None
    latest: tuple[int, str, Decimal] | None = None
    uniques: set[str] = field(default_factory=set)
    values: list[Decimal] = field(default_factory=list)
    _digest: int = 0

    def add(self, event_id: str, ts_ms: int, q: Decimal | None, unique: str | None) -> None:
        self.event_count += 1
        self._digest = (self._digest + id_hash(event_id)) & _MASK64
        if unique is not None:
            self.uniques.add(unique)
        if q is None:
            return
        self.values.append(q)
        self.q_sum = WIDE.add(self.q_sum, q)
        self.q_min = q if self.q_min is None else min(self.q_min, q)
        self.q_max = q if self.q_max is None else max(self.q_max, q)
        # LATEST: greatest event time, then greatest event_id (the streaming job's tie-break)
        if self.latest is None or (ts_ms, event_id) > self.latest[:2]:
            self.latest = (ts_ms, event_id, q)

    @property
    def digest(self) -> str:
        return f"{self._digest:016x}"

    @property
    def quantity(self) -> Decimal:
        match self.aggregation:
            case Aggregation.COUNT:
                return Decimal(self.event_count)
            case Aggregation.UNIQUE_COUNT:
                return Decimal(len(self.uniques))
            case Aggregation.SUM:
                return self.q_sum
            case Aggregation.MIN:
                return self.q_min if self.q_min is not None else Decimal(0)
            case Aggregation.MAX:
                return self.q_max if self.q_max is not None else Decimal(0)
            case Aggregation.AVG:
                if not self.event_count:
                    return Decimal(0)
                mean = WIDE.divide(self.q_sum, self.event_count)
                return mean.quantize(QUANTUM, rounding=ROUND_HALF_EVEN, context=WIDE)
            case Aggregation.LATEST:
                return self.latest[2] if self.latest is not None else Decimal(0)
        raise ValueError(f"unknown aggregation {self.aggregation!r}")


class MeasureError(ValueError):
    pass


def period_usage(
    meters: Sequence[Meter], events: Iterable[StoredEvent]
) -> dict[LineKey, LineUsage]:
    """Aggregate one customer's period. `events` must already be unique by event_id."""
    by_name: dict[str, list[Meter]] = {}
    for m in meters:
        by_name.setdefault(m.event_name, []).append(m)
    out: dict[LineKey, LineUsage] = {}
    for ev in events:
        for m in by_name.get(ev.event_name, ()):
            if not m.selects(ev.event_name, ev.properties):
                continue
            try:
                q = m.measure(ev.value, ev.properties)
                unique = m.unique_key(ev.properties)
            except ValueError as exc:
                # Stored events passed validation against the meters of their time; a different
                # meter definition (shadow re-rate) may not be able to measure them.
                raise MeasureError(f"event {ev.event_id}: meter {m.id}: {exc}") from None
            if q is not None:
                q = q.quantize(QUANTUM, context=WIDE)
            key = (m.id, m.version, ALL_DIMENSIONS)
            line = out.get(key)
            if line is None:
                line = out[key] = LineUsage(m.aggregation)
            line.add(ev.event_id, ev.timestamp_ms, q, unique)
    return out
