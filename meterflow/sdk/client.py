"""`UsageClient`: track() validates and appends to the spool; a background sender produces
from the spool to Kafka and records what Kafka acknowledged."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry

from meterflow.decoding import Limits
from meterflow.sdk.errors import InvalidEvent, SpoolClosed
from meterflow.sdk.metrics import SdkMetrics
from meterflow.sdk.records import build_event, decode_event, encode_event, epoch_ms
from meterflow.sdk.spool import FsyncPolicy, Spool
from meterflow.sdk.transport import KafkaTransport, SendError, Transport
from meterflow.settings import REPO_ROOT, Settings

log = logging.getLogger(__name__)

SPOOL_DIR_ENV = "METERFLOW_SDK_SPOOL_DIR"


def default_spool_dir() -> Path:
    """$METERFLOW_SDK_SPOOL_DIR, else var/sdk-spool in the repo (next to the stack's data)."""
    return Path(os.environ.get(SPOOL_DIR_ENV) or REPO_ROOT / "var" / "sdk-spool")


class UsageClient:
    """Track usage events from an app. `track()` only validates and appends to the local spool;
    a background thread sends spooled events to Kafka and records what Kafka acknowledged.

    Accepted (track() returned) means delivered to Kafka at least once with that event_id, even
    if the process is killed: a restart on the same `spool_dir` resends every unacknowledged
    event, in order. Duplicates are possible after a crash; the pipeline drops them by event_id.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        spool_dir: Path | None = None,
        schema_version: int = 1,
        max_in_flight: int = 10_000,
        max_spool_bytes: int = 512 << 20,
        registry: CollectorRegistry | None = None,
        *,
        segment_bytes: int = 8 << 20,
        fsync: FsyncPolicy = "interval",
        fsync_interval_s: float = 0.2,
        linger_ms: int = 20,
        delivery_timeout_s: float = 120.0,
        transport_factory: Callable[[], Transport] | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self.settings = settings or Settings()
        self.max_in_flight = max_in_flight
        self._fsync_interval_s = fsync_interval_s
        self._limits = Limits()
        self._transport_factory = transport_factory or (
            lambda: KafkaTransport(
                self.settings,
                schema_version,
                linger_ms=linger_ms,
                delivery_timeout_s=delivery_timeout_s,
                queue_messages=max(2 * max_in_flight, 1000),
            )
        )
        self._spool = Spool(
            default_spool_dir() if spool_dir is None else Path(spool_dir),
            segment_bytes=segment_bytes,
            max_bytes=max_spool_bytes,
            fsync=fsync,
        )
        self._registry = REGISTRY if registry is None else registry
        try:
            self._metrics = SdkMetrics.create(self._registry, self._spool)
        except BaseException:
            self._spool.close()
            raise
        try:
            self._transport = self._transport_factory()
        except BaseException:
            self._metrics.unregister(self._registry)
            self._spool.close()
            raise
        self.replayed_at_start = self._spool.depth
        self._counts_lock = threading.Lock()
        self._tracked = 0
        self._delivered = 0
        self._errors: Tally[str] = Tally()
        self._closed = False
        # Sender state, touched only by the sender thread (and by close() once it stopped).
        self._generation = 0
        self._next = self._spool.acked_through  # last seq handed to the transport
        self._in_flight: set[int] = set()
        self._rewind = False
        self._retry_at = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sender = threading.Thread(target=self._run, name="meterflow-sdk-sender", daemon=True)
        self._sender.start()

    # -- caller side

    def track(
        self,
        event_name: str,
        customer_id: str,
        value: Decimal | int | float | str | None = None,
        properties: Mapping[str, str] | None = None,
        timestamp: datetime | None = None,
        event_id: str | None = None,
        source: str | None = None,
    ) -> str:
        """Accept one event; returns its event_id. Raises InvalidEvent (a ValueError) for input
        the pipeline would reject, SpoolFull when the spool is at its cap. Never waits on the
        network."""
        now = datetime.now(UTC)
        event = build_event(
            event_name,
            customer_id,
            value,
            properties,
            timestamp,
            event_id,
            source,
            now=now,
            limits=self._limits,
        )
        payload = encode_event(event, accepted_ms=epoch_ms(now))
        if len(payload) > self._limits.max_record_bytes:
            raise InvalidEvent(f"event is {len(payload)} bytes encoded, limit is 64 KiB")
        if self._closed:
            raise SpoolClosed("UsageClient is closed")
        self._spool.append(payload)
        with self._counts_lock:
            self._tracked += 1
        self._metrics.tracked.inc()
        self._wake.set()
        return event.event_id

    def flush(self, timeout: float = 30.0) -> int:
        """Wait until every event tracked before this call is acknowledged by Kafka, or until
        `timeout` seconds; returns how many of them are still unacknowledged (they stay
        spooled)."""
        target = self._spool.last_seq
        self._wake.set()
        self._spool.wait_acked(target, timeout)
        return self._spool.unacked_through(target)

    def close(self, timeout: float = 30.0) -> int:
        """Flush for up to `timeout`, stop the sender and close the spool. Returns the events
        left unacknowledged: they are resent by the next client opened on the same spool_dir."""
        if self._closed:
            return self._spool.depth
        self.flush(timeout)
        self._closed = True
        self._stop.set()
        self._wake.set()
        self._sender.join()
        self._transport.flush(0)  # run the callbacks of deliveries that completed meanwhile
        self._generation += 1  # what close() purges is not a delivery error: it stays spooled
        self._transport.close()
        remaining = self._spool.depth
        self._spool.close()
        self._metrics.unregister(self._registry)
        return remaining

    def __enter__(self) -> UsageClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- counters

    @property
    def events_tracked(self) -> int:
        return self._tracked

    @property
    def events_delivered(self) -> int:
        return self._delivered

    @property
    def delivery_errors(self) -> dict[str, int]:
        """Failed delivery attempts by reason (each failed event is resent from the spool)."""
        with self._counts_lock:
            return dict(self._errors)

    @property
    def spool_depth(self) -> int:
        return self._spool.depth

    @property
    def spool_bytes(self) -> int:
        return self._spool.size_bytes

    @property
    def spool(self) -> Spool:
        return self._spool

    # -- sender thread

    def _run(self) -> None:
        next_sync = time.monotonic() + self._fsync_interval_s
        while not self._stop.is_set():
            try:
                self._transport.poll(0)
                if self._transport.fatal is not None:
                    self._replace_transport()
                busy = self._pump()
                if time.monotonic() >= next_sync:
                    self._spool.commit()
                    if self._spool.fsync_policy == "interval":
                        self._spool.sync()
                    next_sync = time.monotonic() + self._fsync_interval_s
                if not busy:
                    if self._in_flight:
                        self._transport.poll(0.02)
                    else:
                        self._wake.wait(0.05)
                        self._wake.clear()
            except Exception as exc:  # the sender must outlive any surprise; counted, logged
                log.exception("sdk sender: unexpected error, retrying in 1s")
                self._count_error(f"internal_{type(exc).__name__}")
                self._stop.wait(1.0)

    def _pump(self) -> bool:
        """Hand the next spooled events to the transport, within the in-flight window."""
        if self._rewind:
            if self._in_flight:
                return False  # resend in order only once every outstanding attempt reported
            self._next = self._spool.acked_through
            self._rewind = False
        if time.monotonic() < self._retry_at:
            return False
        # The window spans from the oldest unacknowledged event to the newest sent one, which
        # bounds both what the producer holds and the acknowledgements kept out of order.
        room = self.max_in_flight - (self._next - self._spool.acked_through)
        if room <= 0:
            return False
        records = self._spool.read(self._next, room)
        generation = self._generation
        for seq, payload in records:
            if self._spool.is_acked(seq):
                self._next = seq
                continue
            event, accepted_ms = decode_event(payload)
            try:
                self._transport.send(
                    event.customer_id,
                    event.to_record(),
                    # Record time = when track() accepted it: a replay is classified against the
                    # same time bounds as an immediate send would have been.
                    accepted_ms,
                    lambda reason, seq=seq: self._on_delivery(generation, seq, reason),
                )
            except SendError as exc:
                self._count_error(exc.reason)
                log.warning("sdk sender: event seq %d not sent (%s), retrying", seq, exc)
                self._retry_at = time.monotonic() + (0.1 if exc.reason == "queue_full" else 1.0)
                return True
            self._in_flight.add(seq)
            self._next = seq
        return bool(records)

    def _on_delivery(self, generation: int, seq: int, reason: str | None) -> None:
        if generation != self._generation:
            return  # a replaced transport's late report; its events were rewound already
        self._in_flight.discard(seq)
        if reason is None:
            self._spool.ack(seq)
            with self._counts_lock:
                self._delivered += 1
            self._metrics.delivered.inc()
        else:
            self._count_error(reason)
            log.debug("sdk sender: delivery of seq %d failed: %s", seq, reason)
            self._rewind = True

    def _count_error(self, reason: str) -> None:
        with self._counts_lock:
            self._errors[reason] += 1
        self._metrics.errors.labels(reason=reason).inc()

    def _replace_transport(self) -> None:
        log.error("sdk sender: transport failed fatally (%s); recreating", self._transport.fatal)
        self._count_error("fatal")
        self._generation += 1
        with contextlib.suppress(Exception):
            self._transport.close()
        self._in_flight.clear()
        self._rewind = True
        self._transport = self._transport_factory()
