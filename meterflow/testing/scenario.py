"""Seeded, deterministic adversarial usage streams with their ground truth.

A scenario is a list of Kafka records (key, Confluent-framed Avro bytes, record timestamp) in
production order, grouped in phases, plus what a correct pipeline must make of each record:
accepted once, dropped as a duplicate, late, or dead-lettered with a given reason. The truth is
what the generator *intended* for each record; it never runs pipeline code.

Phases matter for lateness: a record is late only relative to a watermark the job has already
seen, so tests produce phase N+1 after the job has processed phase N.
"""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import fastavro

from meterflow.decoding import DEAD_LETTER_REASONS
from meterflow.events import UsageEvent, schema_text
from meterflow.settings import REPO_ROOT
from meterflow.wire import confluent_frame

# The meters the generated malformed kinds are written against (e.g. a non-numeric `gpus`
# property is only a dead letter because a meter measures it).
SCENARIO_METERS = REPO_ROOT / "schemas" / "meters" / "scenario.yaml"

MS = timedelta(milliseconds=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Dead-letter kinds the generator makes: every reason there is, in this order (seeds pin it).
MALFORMED_KINDS = DEAD_LETTER_REASONS


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes
    timestamp_ms: int  # the Kafka record timestamp
    kind: str  # "accepted", "duplicate", "late", "flush" or a dead-letter reason


@dataclass
class Scenario:
    phases: list[list[Record]]
    accepted: list[UsageEvent] = field(default_factory=list)  # once each, on time
    late: list[UsageEvent] = field(default_factory=list)
    duplicates: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)

    @property
    def records(self) -> list[Record]:
        return [r for phase in self.phases for r in phase]


@dataclass(frozen=True)
class ScenarioConfig:
    seed: int = 1
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    span: timedelta = timedelta(minutes=90)
    customers: int = 4
    # 0: every customer equally likely; s > 0: customer k (from 0) with weight 1 / (k + 1)^s
    # (Zipf: a few heavy hitters, a long tail)
    customer_skew: float = 0.0
    events: int = 2000
    duplicate_rate: float = 0.05
    out_of_order_rate: float = 0.10
    out_of_order_max: timedelta = timedelta(seconds=4)  # < the job's out-of-orderness bound
    malformed_per_kind: int = 2
    allowed_late: int = 0  # events behind the watermark but within allowed lateness
    late: int = 0  # events beyond allowed lateness
    allowed_lateness: timedelta = timedelta(minutes=5)
    schema_id: int = 1
    max_record_bytes: int = 64 * 1024


def encode(record: dict[str, Any], schema_id: int) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, _SCHEMA, record)
    return confluent_frame(schema_id, body.getvalue())


_SCHEMA = fastavro.parse_schema(json.loads(schema_text(1)))


def _ms(ts: datetime) -> int:
    return (ts - EPOCH) // MS


class _Gen:
    def __init__(self, cfg: ScenarioConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.n = 0
        self.cum_weights: list[float] | None = None
        if cfg.customer_skew > 0:
            total, cum = 0.0, []
            for k in range(cfg.customers):
                total += 1.0 / (k + 1) ** cfg.customer_skew
                cum.append(total)
            self.cum_weights = cum

    def customer(self) -> str:
        if self.cum_weights is None:  # unchanged draws for the scenarios tests pin by seed
            return f"cust-{self.rng.randrange(self.cfg.customers)}"
        k = self.rng.choices(range(self.cfg.customers), cum_weights=self.cum_weights)[0]
        return f"cust-{k}"

    def event(
        self, ts: datetime, name: str | None = None, customer: str | None = None
    ) -> UsageEvent:
        rng = self.rng
        self.n += 1
        name = name or rng.choice(("api_call", "llm_tokens", "gpu"))
        customer = customer or self.customer()
        props: dict[str, str] = {"region": rng.choice(("eu", "us"))}
        value: Decimal | None = None
        if name == "api_call":
            props["endpoint"] = rng.choice(("/v1/a", "/v1/b", "/health"))
            props["user_id"] = f"u{rng.randrange(12)}"
        elif name == "llm_tokens":
            props["model"] = rng.choice(("small", "large"))
            value = Decimal(rng.randrange(1, 5000)) / (4 if rng.random() < 0.3 else 1)
        elif name == "gpu":
            props["gpus"] = str(Decimal(rng.randrange(1, 64)) / 8)
        return UsageEvent(
            event_id=f"ev-{self.cfg.seed}-{self.n:07d}",
            event_name=name,
            customer_id=customer,
            timestamp=ts,
            value=value,
            properties=props,
            source="scenario",
        )

    def record(
        self,
        ev: UsageEvent,
        kind: str,
        record_ts: datetime | None = None,
        record: dict[str, Any] | None = None,
        value: bytes | None = None,
    ) -> Record:
        rts = record_ts or ev.timestamp + timedelta(seconds=1)
        payload = (
            value if value is not None else encode(record or ev.to_record(), self.cfg.schema_id)
        )
        return Record(ev.customer_id.encode(), payload, _ms(rts), kind)

    def malformed(self, kind: str, ts: datetime) -> Record:
        ev = self.event(ts)
        rec = ev.to_record()
        gpu = self.event(ts, "gpu", ev.customer_id)
        match kind:
            case "UNDECODABLE":
                return self.record(ev, kind, value=confluent_frame(1, b"\xff\xff\xff"))
            case "UNKNOWN_SCHEMA":
                return self.record(ev, kind, value=confluent_frame(987654, b"\x02a"))
            case "MISSING_FIELD":
                rec["event_id"] = ""
            case "TIMESTAMP_IN_FUTURE":
                return self.record(ev, kind, record_ts=ts - timedelta(hours=2))
            case "TIMESTAMP_TOO_OLD":
                # (the broker refuses record times far in the future, so move the event back)
                rec["timestamp"] = ts - timedelta(days=60)
            case "OVERSIZED":
                rec["properties"] = {**rec["properties"], "blob": "x" * self.cfg.max_record_bytes}
            case (
                "NON_NUMERIC_QUANTITY"
                | "NAN_QUANTITY"
                | "INFINITE_QUANTITY"
                | "QUANTITY_OUT_OF_RANGE"
            ):
                rec = gpu.to_record()
                rec["properties"]["gpus"] = {
                    "NON_NUMERIC_QUANTITY": "lots",
                    "NAN_QUANTITY": "NaN",
                    "INFINITE_QUANTITY": "Infinity",
                    "QUANTITY_OUT_OF_RANGE": "1e30",
                }[kind]
                return self.record(gpu, kind, record=rec)
            case "NEGATIVE_QUANTITY" | "MISSING_QUANTITY" | "UNKNOWN_MULTIPLIER_KEY":
                tok = self.event(ts, "llm_tokens", ev.customer_id)
                rec = tok.to_record()
                if kind == "NEGATIVE_QUANTITY":
                    rec["value"] = Decimal("-5.000000000000")
                elif kind == "MISSING_QUANTITY":
                    rec["value"] = None
                else:
                    rec["properties"]["model"] = "mystery"
                return self.record(tok, kind, record=rec)
        return self.record(ev, kind, record=rec)


def event_maker(seed: int, customers: int) -> Callable[[datetime], UsageEvent]:
    """Scenario-shaped events one at a time, at the times asked for (the fault harness's client
    apps); ids are unique per seed."""
    return _Gen(ScenarioConfig(seed=seed, customers=customers)).event


def generate(cfg: ScenarioConfig) -> Scenario:
    g = _Gen(cfg)
    rng = g.rng
    span_ms = cfg.span // MS
    times = sorted(cfg.start + rng.randrange(span_ms) * MS for _ in range(cfg.events))
    sc = Scenario(phases=[])
    phase1: list[tuple[datetime, Record]] = []  # (production sort key, record)
    for ts in times:
        ev = g.event(ts)
        sc.accepted.append(ev)
        sort_key = ts
        if rng.random() < cfg.out_of_order_rate:
            # produced after events up to out_of_order_max younger than itself
            sort_key = ts + rng.randrange(1, cfg.out_of_order_max // MS) * MS
        phase1.append((sort_key, g.record(ev, "accepted")))
        if rng.random() < cfg.duplicate_rate:
            # a retry: same bytes, a little later
            later = sort_key + rng.randrange(1, 3000) * MS
            phase1.append((later, g.record(ev, "duplicate", record_ts=ts + timedelta(seconds=2))))
            sc.duplicates += 1
    for kind in MALFORMED_KINDS:
        for _ in range(cfg.malformed_per_kind):
            ts = cfg.start + rng.randrange(span_ms) * MS
            phase1.append((ts, g.malformed(kind, ts)))
            sc.dead_letters[kind] += 1
    phase1.sort(key=lambda kr: kr[0])
    sc.phases.append([r for _, r in phase1])

    if cfg.allowed_late or cfg.late:
        head = times[-1]
        phase2 = []
        for _ in range(cfg.allowed_late):
            # behind windows that have fired, but within allowed lateness
            ts = head - timedelta(seconds=90) - rng.randrange(30_000) * MS
            ev = g.event(ts)
            sc.accepted.append(ev)
            phase2.append(g.record(ev, "accepted", record_ts=head))
        for _ in range(cfg.late):
            ts = head - cfg.allowed_lateness - timedelta(minutes=10) - rng.randrange(600_000) * MS
            ev = g.event(ts)
            sc.late.append(ev)
            phase2.append(g.record(ev, "late", record_ts=head))
        sc.phases.append(phase2)
    return sc


def flush_phase(sc: Scenario, cfg: ScenarioConfig, at: datetime) -> list[Record]:
    """One event per customer at `at`: moves every partition's watermark past the scenario so
    an unbounded job closes all its windows. The events are accepted (event name `flush`)."""
    g = _Gen(ScenarioConfig(seed=cfg.seed + 1_000_000, customers=cfg.customers))
    out = []
    for c in range(cfg.customers):
        ev = g.event(at, "flush", f"cust-{c}")
        sc.accepted.append(ev)
        out.append(g.record(ev, "flush"))
    sc.phases.append(out)
    return out
