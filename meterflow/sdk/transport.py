"""How the sender reaches Kafka: the Transport interface and its confluent-kafka
implementation (idempotent producer, registry AvroSerializer)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from meterflow.settings import Settings

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message

log = logging.getLogger(__name__)


DeliveryCallback = Callable[[str | None], None]  # None = acknowledged, else an error reason


class SendError(Exception):
    """The transport refused one event before sending it; the event stays in the spool."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class Transport(Protocol):
    """What the sender needs from Kafka. Callbacks run inside poll()/flush() on the caller."""

    fatal: str | None  # set when the transport must be replaced (e.g. a fatal producer error)

    def send(
        self, key: str, value: dict[str, object], timestamp_ms: int, on_delivery: DeliveryCallback
    ) -> None: ...

    def poll(self, timeout: float) -> None: ...

    def flush(self, timeout: float) -> int: ...

    def close(self) -> None: ...


class KafkaTransport:
    """confluent-kafka idempotent producer with the registry's AvroSerializer (as in
    connectors.producer.event_producer), plus the SDK's delivery timeout and queue bound."""

    def __init__(
        self,
        settings: Settings,
        schema_version: int,
        *,
        linger_ms: int,
        delivery_timeout_s: float,
        queue_messages: int,
    ) -> None:
        from confluent_kafka import SerializingProducer

        from connectors.producer import event_producer_config

        self.fatal: str | None = None
        self._topic = settings.events_topic
        self._producer = SerializingProducer(
            {
                **event_producer_config(settings, schema_version),
                "client.id": "meterflow-sdk",
                "linger.ms": linger_ms,
                # A timed-out event is not lost: it stays in the spool and is sent again.
                "message.timeout.ms": int(delivery_timeout_s * 1000),
                "queue.buffering.max.messages": queue_messages,
                "error_cb": self._on_error,
                "logger": logging.getLogger("meterflow.sdk.kafka"),
            }
        )

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.fatal = f"{err.name()}: {err.str()}"
        log.debug("kafka: %s", err)

    def send(
        self, key: str, value: dict[str, object], timestamp_ms: int, on_delivery: DeliveryCallback
    ) -> None:
        from confluent_kafka.error import SerializationError

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None and err.fatal():
                self.fatal = f"{err.name()}: {err.str()}"
            on_delivery(None if err is None else err.name().lstrip("_").lower())

        try:
            self._producer.produce(
                self._topic, key=key, value=value, timestamp=timestamp_ms, on_delivery=delivered
            )
        except BufferError as exc:
            raise SendError("queue_full", str(exc)) from exc
        except SerializationError as exc:  # the registry is unreachable, typically
            raise SendError("serialization", str(exc)) from exc

    def poll(self, timeout: float) -> None:
        self._producer.poll(timeout)

    def flush(self, timeout: float) -> int:
        return self._producer.flush(timeout)

    def close(self) -> None:
        # Whatever is still queued is in the spool, un-acknowledged: the next sender resends it.
        self._producer.purge()
        self._producer.poll(0)
