"""The write-ahead spool: append-only segment files of CRC-framed records, an ack mark,
a directory lock. Durability of each fsync policy: docs/decisions/0007-sdk-spool.md."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from meterflow.sdk.errors import SpoolClosed, SpoolCorrupt, SpoolFull, SpoolLocked

log = logging.getLogger(__name__)

FsyncPolicy = Literal["always", "interval"]


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
