"""The HTTP API's Kafka side: publish a batch of validated events and wait, within a bound, for
Kafka to acknowledge each one (acks=all, idempotent: connectors.producer's configuration, as
the `producer` principal)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from confluent_kafka import KafkaError, SerializingProducer
from confluent_kafka.error import SerializationError

from connectors.producer import event_producer_config
from meterflow.events import UsageEvent
from meterflow.settings import Settings

log = logging.getLogger(__name__)


class KafkaPublisher:
    """One producer shared by every request. A thread polls it, so each request waits for its
    own deliveries only (a flush() would wait for everyone's)."""

    def __init__(self, settings: Settings, ack_timeout_s: float = 10.0) -> None:
        self._settings = settings
        self._timeout_s = ack_timeout_s
        self._lock = threading.Lock()
        self._fatal: str | None = None
        self._producer = self._new_producer()
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="meterflow-api-kafka", daemon=True)
        self._poller.start()

    def _new_producer(self) -> SerializingProducer:
        return SerializingProducer(
            {
                **event_producer_config(self._settings),
                "client.id": "meterflow-api",
                "linger.ms": 5,  # a request waits for its acks: do not hold them long
                # librdkafka retries a broker outage by itself until this timeout; then the
                # request answers 503 and the client retries with the same event ids
                "message.timeout.ms": int(self._timeout_s * 1000),
                "error_cb": self._on_error,
                "logger": logging.getLogger("meterflow.api.kafka"),
            }
        )

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = f"{err.name()}: {err.str()}"
        log.info("kafka: %s", err)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def publish(self, events: Sequence[UsageEvent], record_ts: int) -> list[str | None]:
        """Send `events` (record time `record_ts`, epoch ms) and wait; per event None when
        Kafka acknowledged it, else why not (not acknowledged within the bound: it may or may
        not be stored, and a retry with the same event_id counts once)."""
        self._replace_if_fatal()
        deadline = time.monotonic() + self._timeout_s
        results: list[str | None] = ["not sent"] * len(events)
        pending = len(events)
        done = threading.Event() if events else None
        counter = threading.Lock()

        def delivered(i: int, err: KafkaError | None) -> None:
            nonlocal pending
            results[i] = None if err is None else f"{err.name()}: {err.str()}"
            with counter:
                pending -= 1
                if pending == 0 and done is not None:
                    done.set()

        for i, ev in enumerate(events):
            reason = self._hand_over(ev, record_ts, deadline, lambda e, _m, i=i: delivered(i, e))
            if reason is not None:
                # the events not handed over will never report: they failed
                for j in range(i, len(events)):
                    delivered(j, _Failed(reason))
                break
        if done is not None:
            # librdkafka reports every message by message.timeout.ms; a margin for the report
            done.wait(max(deadline - time.monotonic(), 0) + 5.0)
        return results

    def _hand_over(self, ev: UsageEvent, record_ts: int, deadline: float, cb) -> str | None:
        """Queue one event; None once queued, else why not by the deadline."""
        while True:
            try:
                self._producer.produce(
                    self._settings.events_topic,
                    key=ev.customer_id,
                    value=ev.to_record(),
                    timestamp=record_ts,
                    on_delivery=cb,
                )
                return None
            except BufferError:  # the local queue is full: let deliveries drain
                reason = "producer queue full"
            except SerializationError as exc:  # the registry is unreachable, typically
                reason = f"serialization: {exc}"
            if time.monotonic() >= deadline:
                return reason
            time.sleep(0.1)

    def _replace_if_fatal(self) -> None:
        with self._lock:
            if self._fatal is None:
                return
            log.error("kafka producer failed fatally (%s): recreating it", self._fatal)
            self._fatal = None
            old, self._producer = self._producer, self._new_producer()
            old.flush(0)

    def close(self) -> None:
        self._stop.set()
        self._poller.join()
        self._producer.flush(self._timeout_s)


class _Failed:
    """Stands in for a KafkaError for an event that was never handed to the producer."""

    def __init__(self, reason: str) -> None:
        self._reason = reason

    def name(self) -> str:
        return "NOT_SENT"

    def str(self) -> str:
        return self._reason
