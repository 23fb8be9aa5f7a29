"""Producer SDK for client apps: `UsageClient.track()` writes ahead to a local spool, a background
sender produces from the spool to Kafka, and delivery acknowledgements are recorded so a restart
replays exactly the events Kafka has not confirmed, in order, with their original event ids.

Why this shape and what each durability setting guarantees: docs/decisions/0007-sdk-spool.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import math
import os
import struct
import threading
import time
import uuid
import zlib
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from meterflow.config import REPO_ROOT, Settings
from meterflow.decoding import Limits
from meterflow.events import UsageEvent

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message

log = logging.getLogger(__name__)

SPOOL_DIR_ENV = "METERFLOW_SDK_SPOOL_DIR"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FsyncPolicy = Literal["always", "interval"]

# ----------------------------------------------------------------------------- errors


class InvalidEvent(ValueError):
    """track() was given something the pipeline would dead-letter or cannot encode."""


class SpoolError(RuntimeError):
    pass


class SpoolFull(SpoolError):
    """The spool reached its byte cap: the event was NOT accepted (Kafka unreachable too long?)."""


class SpoolLocked(SpoolError):
    """Another client (this or another process) has the spool directory open."""


class SpoolCorrupt(SpoolError):
    """A record before the spool's tail fails its checksum: refuse to guess what was lost."""


class SpoolClosed(SpoolError):
    pass


# ----------------------------------------------------------------------------- spool

# One frame per event: payload length, crc32(seq + payload), seq, then the JSON payload. The CRC
# tells a torn or zero-filled tail (crash mid-write) from a record, which a JSON line cannot.
_FRAME = struct.Struct(">IIQ")
_SEQ = struct.Struct(">Q")
_SEGMENT_SUFFIX = ".seg"
_ACK_FILE = "acked"
_LOCK_FILE = "lock"
_READ_CHUNK = 1 << 20


def _frame(seq: int, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(_SEQ.pack(seq)))
    return _FRAME.pack(len(payload), crc, seq) + payload


@dataclass
class _Segment:
    base: int  # seq of its first record
    path: Path
    size: int = 0  # bytes of complete frames
    count: int = 0

    @property
    def last(self) -> int:
        return self.base + self.count - 1


class Spool:
    """Append-only segment files of checksummed frames, numbered by a sequence (seq) that only
    grows, plus a small file holding the highest seq below which every event is acknowledged.

    `append` is thread-safe. `read`, `ack` and `commit` belong to a single consumer (the sender).
    """

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = 8 << 20,
        max_bytes: int = 512 << 20,
        fsync: FsyncPolicy = "interval",
    ) -> None:
        if max_bytes < 2 * segment_bytes:
            raise ValueError("max_bytes must hold at least two segments")
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.fsync_policy = fsync
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_directory(self.directory)
        self._lock = threading.Lock()
        self._acked_cond = threading.Condition(self._lock)
        self._closed = False
        self._active_fd: int | None = None
        self._dirty = False  # appended since the last fsync
        self._dir_dirty = False  # segment files created or deleted since the last fsync
        self._acked_above: set[int] = set()
        self._reader_fds: dict[int, int] = {}
        self._cursor: tuple[int, int, int] | None = None  # (segment base, offset, next seq)
        try:
            self._recover()
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- recovery

    def _recover(self) -> None:
        mark = _read_ack_file(self.directory / _ACK_FILE)
        segments = sorted(
            (_Segment(int(p.stem), p) for p in self.directory.glob(f"*{_SEGMENT_SUFFIX}")),
            key=lambda s: s.base,
        )
        for i, seg in enumerate(segments):
            _scan_segment(seg, is_tail=i == len(segments) - 1)
        for prev, seg in itertools.pairwise(segments):
            if seg.base <= prev.last:
                raise SpoolCorrupt(f"{seg.path} overlaps {prev.path}")
        if segments:
            # Segments are deleted only once fully acknowledged, so everything before the first
            # remaining one was delivered even if the ack file is stale or missing.
            mark = max(mark, segments[0].base - 1)
        last = max([mark] + [s.last for s in segments])
        self._mark = mark
        # Never reuse a seq the ack file already covers (its data may have been lost in an OS
        # crash): a reused seq would be treated as delivered and never sent.
        self._next_seq = last + 1
        self._segments: list[_Segment] = []
        for seg in segments:
            if seg.count == 0 or seg.last <= mark:
                seg.path.unlink()
                self._dir_dirty = True
            else:
                self._segments.append(seg)
        self._persisted_mark = -1
        self._write_ack_file()

    # -- producer side (any thread)

    def append(self, payload: bytes) -> int:
        frame_len = _FRAME.size + len(payload)
        with self._lock:
            if self._closed:
                raise SpoolClosed(f"spool {self.directory} is closed")
            if self._size() + frame_len > self.max_bytes:
                self._drop_acked_active()
                if self._size() + frame_len > self.max_bytes:
                    raise SpoolFull(
                        f"spool {self.directory} holds {self._size()} bytes, cap "
                        f"{self.max_bytes}: {self._depth()} events wait for Kafka; event refused"
                    )
            seg = self._active_segment(frame_len)
            seq = self._next_seq
            fd = self._active_fd
            assert fd is not None
            try:
                _write_all(fd, _frame(seq, payload))
                if self.fsync_policy == "always":
                    os.fsync(fd)
            except OSError:
                # A partial frame would hide every later one from recovery: cut it off.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, seg.size)
                raise
            seg.size += frame_len
            seg.count += 1
            self._next_seq += 1
            self._dirty = self.fsync_policy != "always"  # else this append already synced
            return seq

    def _active_segment(self, frame_len: int) -> _Segment:
        seg = self._segments[-1] if self._active_fd is not None else None
        if seg is not None and seg.size + frame_len <= self.segment_bytes:
            return seg
        if seg is not None:
            self._close_active()  # rotation: a full segment is made durable once
        path = self.directory / f"{self._next_seq:020d}{_SEGMENT_SUFFIX}"
        self._active_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        seg = _Segment(self._next_seq, path)
        self._segments.append(seg)
        self._dir_dirty = True
        if self.fsync_policy == "always":
            _fsync_dir(self.directory)
            self._dir_dirty = False
        return seg

    def _close_active(self) -> None:
        if self._active_fd is None:
            return
        os.fsync(self._active_fd)
        os.close(self._active_fd)
        self._active_fd = None

    def _drop_acked_active(self) -> None:
        # The cap counts bytes on disk; an acknowledged active segment is reclaimable right now.
        # Safe from a caller's thread: the sender only reads above the mark, never this segment.
        if self._active_fd is not None and self._segments[-1].last <= self._mark:
            os.close(self._active_fd)
            self._active_fd = None
            self._delete(self._segments.pop())

    # -- consumer side (one thread)

    def read(self, after_seq: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` (seq, payload) in seq order, starting after `after_seq`."""
        out: list[tuple[int, bytes]] = []
        seq = after_seq + 1
        with self._lock:
            snapshot = [
                (s.base, s.path, s.count) for s in self._segments if s.count and s.last >= seq
            ]
        for base, path, count in snapshot:
            seq = max(seq, base)
            fd = self._reader_fds.get(base)
            if fd is None:
                fd = self._reader_fds[base] = os.open(path, os.O_RDONLY)
            if self._cursor is not None and self._cursor[0] == base and self._cursor[2] == seq:
                offset = self._cursor[1]
            else:
                offset = _skip_frames(fd, 0, seq - base)
            want = min(count - (seq - base), limit)
            for rec_seq, payload, end in _read_frames(fd, offset, want):
                if rec_seq != seq:
                    raise SpoolCorrupt(f"{path}: expected seq {seq}, found {rec_seq}")
                out.append((seq, payload))
                seq += 1
                offset = end
                limit -= 1
                want -= 1
            if want:  # a frame written whole earlier no longer checks out: never skip past it
                raise SpoolCorrupt(f"{path}: damaged record at byte {offset} (seq {seq})")
            self._cursor = (base, offset, seq)
            if limit <= 0:
                break
        return out

    def ack(self, seq: int) -> None:
        with self._lock:
            if seq <= self._mark:
                return
            self._acked_above.add(seq)
            while self._mark + 1 in self._acked_above:
                self._mark += 1
                self._acked_above.remove(self._mark)
            self._acked_cond.notify_all()

    def is_acked(self, seq: int) -> bool:
        with self._lock:
            return seq <= self._mark or seq in self._acked_above

    def commit(self) -> None:
        """Persist the acknowledged mark, then delete segments that are entirely below it."""
        with self._lock:
            self._write_ack_file()
            keep = []
            for seg in self._segments:
                is_active = self._active_fd is not None and seg is self._segments[-1]
                if seg.last <= self._mark and not is_active:
                    self._delete(seg)
                else:
                    keep.append(seg)
            self._segments = keep

    def sync(self) -> None:
        """fsync what was appended since the last call (the 'interval' policy's timer calls it)."""
        with self._lock:
            if self._closed:
                return
            fd = os.dup(self._active_fd) if self._dirty and self._active_fd is not None else None
            self._dirty = False
            dir_dirty, self._dir_dirty = self._dir_dirty, False
        if fd is not None:
            try:
                os.fsync(fd)  # outside the lock: track() never waits for another caller's fsync
            finally:
                os.close(fd)
        if dir_dirty:
            _fsync_dir(self.directory)

    def wait_acked(self, seq: int, timeout: float) -> bool:
        with self._acked_cond:
            return self._acked_cond.wait_for(lambda: self._mark >= seq, timeout)

    def unacked_through(self, seq: int) -> int:
        with self._lock:
            return max(0, seq - self._mark - sum(1 for s in self._acked_above if s <= seq))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
        self.sync()
        with self._lock:
            self._closed = True
            self._close_active()
        self.commit()  # with no active segment left, a fully acknowledged spool ends up empty
        with self._lock:
            for fd in self._reader_fds.values():
                os.close(fd)
            self._reader_fds.clear()
            os.close(self._lock_fd)

    # -- state

    @property
    def acked_through(self) -> int:
        return self._mark

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    @property
    def depth(self) -> int:
        """Events appended and not yet acknowledged."""
        with self._lock:
            return self._depth()

    @property
    def size_bytes(self) -> int:
        with self._lock:
            return self._size()

    @property
    def segment_paths(self) -> list[Path]:
        with self._lock:
            return [s.path for s in self._segments]

    def _depth(self) -> int:
        return max(0, self._next_seq - 1 - self._mark - len(self._acked_above))

    def _size(self) -> int:
        return sum(s.size for s in self._segments)

    def _delete(self, seg: _Segment) -> None:
        fd = self._reader_fds.pop(seg.base, None)
        if fd is not None:
            os.close(fd)
        if self._cursor is not None and self._cursor[0] == seg.base:
            self._cursor = None
        seg.path.unlink(missing_ok=True)
        self._dir_dirty = True

    def _write_ack_file(self) -> None:
        if self._mark == self._persisted_mark:
            return
        # Not fsync'd: a stale mark after an OS crash only replays delivered events (duplicates
        # the pipeline drops by event_id); rename keeps the file whole either way.
        tmp = self.directory / f"{_ACK_FILE}.tmp"
        tmp.write_text(f"{self._mark}\n")
        os.replace(tmp, self.directory / _ACK_FILE)
        self._persisted_mark = self._mark


def _lock_directory(directory: Path) -> int:
    fd = os.open(directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        # Released by the kernel when the process dies, so a SIGKILLed client never blocks its
        # restart, while two live clients can never interleave appends in one spool.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpoolLocked(f"spool {directory} is in use by another client") from None
    return fd


def _read_ack_file(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _scan_segment(seg: _Segment, *, is_tail: bool) -> None:
    """Count the valid frames; cut a torn tail off the last segment, refuse damage elsewhere."""
    fd = os.open(seg.path, os.O_RDONLY)
    try:
        file_size = os.fstat(fd).st_size
        for seq, _payload, end in _read_frames(fd, 0, None):
            if seq != seg.base + seg.count:
                break
            seg.count += 1
            seg.size = end
    finally:
        os.close(fd)
    if seg.size == file_size:
        return
    if not is_tail:
        raise SpoolCorrupt(f"{seg.path}: damaged record at byte {seg.size} of {file_size}")
    # Only an append that never returned can be torn, so no accepted event is in the cut bytes.
    log.warning("spool %s: dropping a torn tail of %d bytes", seg.path, file_size - seg.size)
    os.truncate(seg.path, seg.size)


def _read_frames(fd: int, offset: int, limit: int | None) -> Iterator[tuple[int, bytes, int]]:
    """(seq, payload, end offset) of consecutive valid frames from `offset`; stops at the first
    incomplete or invalid one, or after `limit` frames."""
    buf = b""
    buf_at = offset  # file offset of buf[0]
    n = 0
    while limit is None or n < limit:
        pos = offset - buf_at
        if len(buf) - pos < _FRAME.size:
            buf, buf_at, pos = os.pread(fd, _READ_CHUNK, offset), offset, 0
            if len(buf) < _FRAME.size:
                return
        length, crc, seq = _FRAME.unpack_from(buf, pos)
        end = pos + _FRAME.size + length
        if end > len(buf):
            buf, buf_at, pos = (
                os.pread(fd, max(_READ_CHUNK, _FRAME.size + length), offset),
                offset,
                0,
            )
            end = _FRAME.size + length
            if end > len(buf):
                return
        payload = buf[pos + _FRAME.size : end]
        if zlib.crc32(payload, zlib.crc32(_SEQ.pack(seq))) != crc:
            return
        offset = buf_at + end
        n += 1
        yield seq, payload, offset


def _skip_frames(fd: int, offset: int, count: int) -> int:
    for _ in range(count):
        header = os.pread(fd, _FRAME.size, offset)
        offset += _FRAME.size + _FRAME.unpack(header)[0]
    return offset


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- events <-> spool


def encode_event(event: UsageEvent, accepted_ms: int) -> bytes:
    return json.dumps(
        {
            "event_id": event.event_id,
            "event_name": event.event_name,
            "customer_id": event.customer_id,
            "timestamp_ms": _to_ms(event.timestamp),
            "value": None if event.value is None else str(event.value),
            "properties": event.properties,
            "source": event.source,
            "accepted_ms": accepted_ms,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def decode_event(payload: bytes) -> tuple[UsageEvent, int]:
    d = json.loads(payload)
    event = UsageEvent(
        event_id=d["event_id"],
        event_name=d["event_name"],
        customer_id=d["customer_id"],
        timestamp=EPOCH + timedelta(milliseconds=d["timestamp_ms"]),
        value=None if d["value"] is None else Decimal(d["value"]),
        properties=d["properties"],
        source=d["source"],
    )
    return event, d["accepted_ms"]


def _to_ms(ts: datetime) -> int:
    return (ts - EPOCH) // timedelta(milliseconds=1)


def build_event(
    event_name: str,
    customer_id: str,
    value: Decimal | int | float | str | None,
    properties: Mapping[str, str] | None,
    timestamp: datetime | None,
    event_id: str | None,
    source: str | None,
    *,
    now: datetime,
    limits: Limits,
) -> UsageEvent:
    """Validate track()'s arguments the way the pipeline will, without any I/O."""
    for name, text in (("event_name", event_name), ("customer_id", customer_id)):
        if not isinstance(text, str) or not text.strip():
            raise InvalidEvent(f"{name} must be a non-empty string, got {text!r}")
    if event_id is None:
        event_id = str(uuid.uuid4())
    elif not isinstance(event_id, str) or not event_id.strip():
        raise InvalidEvent(f"event_id must be a non-empty string, got {event_id!r}")
    if source is not None and not isinstance(source, str):
        raise InvalidEvent(f"source must be a string, got {source!r}")
    props = dict(properties or {})
    for k, v in props.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidEvent(f"properties must map strings to strings, got {k!r}: {v!r}")
    if timestamp is None:
        timestamp = now
    elif not isinstance(timestamp, datetime) or timestamp.tzinfo is None:
        raise InvalidEvent(f"timestamp must be a timezone-aware datetime, got {timestamp!r}")
    # Avro timestamp-millis: keep what will be stored, so a replay sends the identical event.
    timestamp = EPOCH + timedelta(milliseconds=_to_ms(timestamp.astimezone(UTC)))
    skew_ms = _to_ms(timestamp) - _to_ms(now)
    if skew_ms > limits.max_future_skew_ms:
        raise InvalidEvent(f"timestamp {timestamp.isoformat()} is too far in the future")
    if -skew_ms > limits.max_age_ms:
        raise InvalidEvent(f"timestamp {timestamp.isoformat()} is older than the pipeline keeps")
    event = UsageEvent(
        event_id, event_name, customer_id, timestamp, _quantity(value), props, source
    )
    try:
        event.to_record()  # the exact conversion the sender will do: fail here, not in the spool
    except (InvalidOperation, ArithmeticError) as exc:
        raise InvalidEvent(f"value {value!r} does not fit the event's decimal(38,12)") from exc
    return event


def _quantity(value: Decimal | int | float | str | None) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float | str):
        raise InvalidEvent(f"value must be a Decimal, int, float or numeric string, got {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidEvent(f"value must be finite, got {value!r}")
        value = repr(value)  # 0.1 means 0.1, not its binary expansion
    try:
        q = Decimal(value)
    except InvalidOperation:
        raise InvalidEvent(f"value {value!r} is not a number") from None
    if not q.is_finite():
        raise InvalidEvent(f"value must be finite, got {value!r}")
    return q


# ----------------------------------------------------------------------------- transport

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


# ----------------------------------------------------------------------------- client


def default_spool_dir() -> Path:
    """$METERFLOW_SDK_SPOOL_DIR, else var/sdk-spool in the repo (next to the stack's data)."""
    return Path(os.environ.get(SPOOL_DIR_ENV) or REPO_ROOT / "var" / "sdk-spool")


@dataclass(frozen=True)
class _Metrics:
    tracked: Counter
    delivered: Counter
    errors: Counter
    depth: Gauge
    size: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry, spool: Spool) -> _Metrics:
        # Built unregistered, then registered together: a name clash (a second live client on
        # the same registry) leaves nothing half-registered behind.
        depth = Gauge("meterflow_sdk_spool_depth", "Events not yet acknowledged", registry=None)
        depth.set_function(lambda: spool.depth)
        size = Gauge("meterflow_sdk_spool_bytes", "Bytes of spool on disk", registry=None)
        size.set_function(lambda: spool.size_bytes)
        metrics = cls(
            Counter("meterflow_sdk_events_tracked", "Events accepted by track()", registry=None),
            Counter("meterflow_sdk_events_delivered", "Events acked by Kafka", registry=None),
            Counter(
                "meterflow_sdk_delivery_errors",
                "Failed attempts to deliver an event (it stays in the spool and is resent)",
                ["reason"],
                registry=None,
            ),
            depth,
            size,
        )
        done = []
        try:
            for collector in metrics.collectors:
                registry.register(collector)
                done.append(collector)
        except ValueError as exc:
            for collector in done:
                registry.unregister(collector)
            raise ValueError(
                f"{exc}: another UsageClient is registered there; pass registry=..."
            ) from exc
        return metrics

    @property
    def collectors(self) -> tuple[Counter | Gauge, ...]:
        return (self.tracked, self.delivered, self.errors, self.depth, self.size)

    def unregister(self, registry: CollectorRegistry) -> None:
        for collector in self.collectors:
            with contextlib.suppress(KeyError):
                registry.unregister(collector)


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
            self._metrics = _Metrics.create(self._registry, self._spool)
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
        payload = encode_event(event, accepted_ms=_to_ms(now))
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
