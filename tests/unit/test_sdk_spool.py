"""The SDK's spool and sender without services: write-ahead, acknowledgement, replay after
re-open, segment clean-up, the byte cap, concurrency. The sender runs against a fake of our own
Transport interface (not of confluent-kafka); test_sdk.py proves the real thing on Kafka."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from meterflow.sdk import (
    DeliveryCallback,
    InvalidEvent,
    SendError,
    Spool,
    SpoolClosed,
    SpoolCorrupt,
    SpoolFull,
    SpoolLocked,
    UsageClient,
    decode_event,
)
from meterflow.settings import REPO_ROOT


def payload(i: int) -> bytes:
    return f'{{"n":{i}}}'.encode()


# ----------------------------------------------------------------------------- spool


def test_appends_read_back_in_order_and_the_mark_advances_only_over_contiguous_acks(tmp_path):
    spool = Spool(tmp_path)
    seqs = [spool.append(payload(i)) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert spool.read(0, 100) == [(i + 1, payload(i)) for i in range(5)]
    assert spool.read(3, 1) == [(4, payload(3))]

    spool.ack(2)
    spool.ack(3)
    assert (spool.acked_through, spool.depth) == (0, 3)
    assert spool.is_acked(3) and not spool.is_acked(1)
    spool.ack(1)
    assert (spool.acked_through, spool.depth) == (3, 2)
    assert spool.unacked_through(4) == 1
    spool.close()


def test_after_a_sigkill_reopen_resumes_after_the_committed_mark_with_the_same_seqs(tmp_path):
    # A real SIGKILL of the owning process: no close(), no final commit, the kernel drops the lock.
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal, sys\n"
            "from pathlib import Path\n"
            "from meterflow.sdk import Spool\n"
            "spool = Spool(Path(sys.argv[1]))\n"
            "for i in range(6):\n"
            "    spool.append(b'{\"n\":%d}' % i)\n"
            "for seq in (1, 2, 4):\n"
            "    spool.ack(seq)\n"
            "spool.commit()\n"
            "spool.ack(3)\n"  # acknowledged, never committed: replayed, a harmless duplicate
            "os.kill(os.getpid(), signal.SIGKILL)\n",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr

    again = Spool(tmp_path)
    # 4 was acknowledged out of order: it is replayed too (a duplicate the pipeline drops)
    assert again.acked_through == 2
    assert again.read(again.acked_through, 100) == [(s, payload(s - 1)) for s in (3, 4, 5, 6)]
    assert again.append(payload(99)) == 7
    again.close()


def test_a_torn_tail_is_cut_off_and_appends_continue_after_it(tmp_path):
    spool = Spool(tmp_path)
    for i in range(3):
        spool.append(payload(i))
    (segment,) = spool.segment_paths
    spool.close()
    whole = segment.stat().st_size
    with segment.open("ab") as f:
        f.write(b"\x00\x00\x00\x30\xde\xad")  # an append that died half-way (never returned)

    again = Spool(tmp_path)
    assert segment.stat().st_size == whole
    assert [s for s, _ in again.read(0, 100)] == [1, 2, 3]
    assert again.append(payload(3)) == 4
    assert again.read(3, 100) == [(4, payload(3))]
    again.close()


def test_a_damaged_record_before_the_tail_is_refused_not_skipped(tmp_path):
    spool = Spool(tmp_path, segment_bytes=64, max_bytes=10_000)
    for i in range(6):
        spool.append(payload(i))
    first = spool.segment_paths[0]
    spool.close()
    data = bytearray(first.read_bytes())
    data[-1] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(SpoolCorrupt, match=first.name):
        Spool(tmp_path, segment_bytes=64, max_bytes=10_000)


def test_a_record_damaged_while_open_stops_the_reader_instead_of_being_skipped(tmp_path):
    spool = Spool(tmp_path, segment_bytes=64, max_bytes=10_000)
    for i in range(6):
        spool.append(payload(i))
    first = spool.segment_paths[0]
    data = bytearray(first.read_bytes())
    data[-1] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(SpoolCorrupt, match=first.name):
        spool.read(0, 100)
    spool.close()


def test_segments_rotate_and_fully_acknowledged_ones_are_deleted(tmp_path):
    spool = Spool(tmp_path, segment_bytes=100, max_bytes=10_000)
    for i in range(20):
        spool.append(payload(i))
    segments = spool.segment_paths
    assert len(segments) > 3
    # every segment but the active one is at most segment_bytes
    assert all(p.stat().st_size <= 100 for p in segments[:-1])
    assert spool.size_bytes == sum(p.stat().st_size for p in segments)

    for seq in range(1, 11):
        spool.ack(seq)
    spool.commit()
    kept = spool.segment_paths
    assert kept == [p for p in segments if p.exists()]
    assert all(p.exists() == (p in kept) for p in segments)
    # what is left still holds seq 11 onwards
    assert [s for s, _ in spool.read(10, 100)] == list(range(11, 21))

    for seq in range(11, 21):
        spool.ack(seq)
    spool.commit()
    assert spool.segment_paths == [segments[-1]]  # the active one is kept for appending
    spool.close()
    assert list(tmp_path.glob("*.seg")) == []  # closing drops the acknowledged active one too
    again = Spool(tmp_path, segment_bytes=100, max_bytes=10_000)
    assert (again.depth, again.append(payload(20))) == (0, 21)
    again.close()


def test_the_byte_cap_refuses_events_with_spool_full_until_acks_free_space(tmp_path):
    spool = Spool(tmp_path, segment_bytes=100, max_bytes=300)
    accepted = []
    with pytest.raises(SpoolFull, match="event refused"):
        for i in range(1000):
            accepted.append(spool.append(payload(i)))
    assert 0 < len(accepted) < 1000
    assert spool.size_bytes <= 300
    assert spool.depth == len(accepted)  # every accepted one is still there

    for seq in accepted:
        spool.ack(seq)
    spool.commit()
    assert spool.append(payload(-1)) == accepted[-1] + 1
    spool.close()


def test_a_missing_ack_file_replays_only_what_is_still_spooled(tmp_path):
    spool = Spool(tmp_path, segment_bytes=100, max_bytes=10_000)
    for i in range(20):
        spool.append(payload(i))
    for seq in range(1, 16):
        spool.ack(seq)
    spool.commit()
    first_kept = spool.read(15, 1)[0][0]
    spool.close()
    (tmp_path / "acked").unlink()

    again = Spool(tmp_path, segment_bytes=100, max_bytes=10_000)
    # deleted segments were fully acknowledged, so the mark is at least just before the first
    # remaining one; nothing un-acked is skipped
    assert again.acked_through <= 15
    assert [s for s, _ in again.read(again.acked_through, 100)][-5:] == [16, 17, 18, 19, 20]
    assert first_kept == 16
    again.close()


def test_an_ack_file_ahead_of_the_data_never_lets_a_new_event_reuse_an_acked_seq(tmp_path):
    # After an OS crash the ack file can be newer than the (unsynced) data it acknowledges.
    spool = Spool(tmp_path)
    for i in range(3):
        spool.append(payload(i))
    spool.close()
    (tmp_path / "acked").write_text("10\n")

    again = Spool(tmp_path)
    assert again.acked_through == 10
    seq = again.append(payload(11))
    assert seq == 11
    assert again.read(again.acked_through, 10) == [(11, payload(11))]
    again.close()


@pytest.mark.parametrize(("policy", "on_append", "on_sync"), [("always", 1, 0), ("interval", 0, 1)])
def test_fsync_policy_always_syncs_in_append_interval_only_in_sync(
    tmp_path, monkeypatch, policy, on_append, on_sync
):
    spool = Spool(tmp_path, fsync=policy)
    spool.append(payload(0))  # creates the first segment
    spool.sync()
    calls: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd))[1])
    spool.append(payload(1))
    assert len(calls) == on_append
    spool.sync()
    assert len(calls) == on_append + on_sync
    spool.sync()  # nothing new appended: nothing to flush
    assert len(calls) == on_append + on_sync
    spool.close()


def test_one_spool_directory_has_one_owner_at_a_time(tmp_path):
    spool = Spool(tmp_path)
    with pytest.raises(SpoolLocked):
        Spool(tmp_path)
    spool.close()
    Spool(tmp_path).close()


def test_concurrent_appends_get_unique_contiguous_seqs_and_every_record_survives(tmp_path):
    spool = Spool(tmp_path, segment_bytes=4096, max_bytes=10 << 20)
    got: list[list[int]] = [[] for _ in range(8)]

    def worker(k: int) -> None:
        for i in range(500):
            got[k].append(spool.append(payload(k * 1000 + i)))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(s for g in got for s in g) == list(range(1, 4001))
    assert all(g == sorted(g) for g in got)  # each thread sees its own appends in order
    spool.close()

    again = Spool(tmp_path, segment_bytes=4096, max_bytes=10 << 20)
    records = dict(again.read(0, 10_000))
    assert len(records) == 4000
    for k, seqs in enumerate(got):
        assert [records[s] for s in seqs] == [payload(k * 1000 + i) for i in range(500)]
    again.close()


# ----------------------------------------------------------------------------- client + sender


class FakeTransport:
    """Our Transport interface in memory. Deliveries are reported from poll(), on the sender's
    thread, like confluent-kafka's callbacks; `hold` keeps them pending (broker unreachable)."""

    def __init__(self, fail: list[str] | None = None, send_errors: list[str] | None = None):
        self.fatal: str | None = None
        self.hold = False
        self.fail = list(fail or [])  # reasons for the next failed deliveries
        self.send_errors = list(send_errors or [])  # reasons the next send() calls raise
        self.attempts: list[dict] = []  # every record handed over, in order
        self.acked: list[dict] = []
        self.max_pending = 0
        self._pending: list[tuple[dict, DeliveryCallback]] = []
        self._lock = threading.Lock()

    def send(self, key, value, timestamp_ms, on_delivery) -> None:
        with self._lock:
            if self.send_errors:
                raise SendError(self.send_errors.pop(0), "refused by the fake")
            assert key == value["customer_id"]
            self.attempts.append(value)
            self._pending.append((value, on_delivery))
            self.max_pending = max(self.max_pending, len(self._pending))

    def poll(self, timeout: float) -> None:
        if self.hold:
            time.sleep(min(timeout, 0.005))
            return
        with self._lock:
            pending, self._pending = self._pending, []
        for value, cb in pending:
            reason = self.fail.pop(0) if self.fail else None
            if reason is None:
                self.acked.append(value)
            cb(reason)

    def flush(self, timeout: float) -> int:
        self.poll(0)
        return len(self._pending)

    def close(self) -> None:
        self._pending = []

    @property
    def acked_ids(self) -> list[str]:
        return [v["event_id"] for v in self.acked]


def client(tmp_path: Path, transport: FakeTransport | Callable[[], FakeTransport], **kw):
    factory = transport if callable(transport) else (lambda: transport)
    kw.setdefault("registry", CollectorRegistry())
    return UsageClient(spool_dir=tmp_path / "spool", transport_factory=factory, **kw)


def test_track_returns_the_id_and_the_sender_delivers_the_event_unchanged(tmp_path):
    fake = FakeTransport()
    ts = datetime.now(UTC).replace(microsecond=678_901)
    with client(tmp_path, fake) as c:
        given = c.track("llm_tokens", "cust-1", Decimal("12.5"), {"model": "m"}, ts, "id-1", "app")
        generated = c.track("api_call", "cust-2")
        assert c.flush(5) == 0
    assert given == "id-1"
    assert uuid.UUID(generated).version == 4
    first, second = fake.acked
    assert first == {
        "event_id": "id-1",
        "event_name": "llm_tokens",
        "customer_id": "cust-1",
        "timestamp": ts.replace(microsecond=678_000),  # Avro timestamp-millis
        "value": Decimal("12.500000000000"),
        "properties": {"model": "m"},
        "source": "app",
    }
    assert (second["event_id"], second["value"], second["properties"]) == (generated, None, {})


def test_unacknowledged_events_are_replayed_in_order_with_their_ids_after_reopen(tmp_path):
    down = FakeTransport()
    down.hold = True  # Kafka never answers in the first life
    c = client(tmp_path, down)
    ids = [c.track("api_call", f"cust-{i % 3}") for i in range(50)]
    assert c.flush(0.2) == 50
    assert c.close(0.1) == 50
    assert down.acked == []

    up = FakeTransport()
    with client(tmp_path, up) as again:
        assert again.replayed_at_start == 50
        assert again.flush(5) == 0
        later = again.track("api_call", "cust-x")
        assert again.flush(5) == 0
    assert up.acked_ids == [*ids, later]
    assert [v["timestamp"] for v in up.acked[:50]] == [v["timestamp"] for v in down.attempts]

    nothing = FakeTransport()
    with client(tmp_path, nothing) as third:
        assert third.replayed_at_start == 0
        assert third.flush(1) == 0
    assert nothing.attempts == []


def test_failed_deliveries_are_counted_by_reason_and_resent_in_order(tmp_path):
    registry = CollectorRegistry()
    fake = FakeTransport(fail=["msg_timed_out", "msg_timed_out", "transport"])
    with client(tmp_path, fake, registry=registry) as c:
        ids = [c.track("api_call", "cust-1") for _ in range(20)]
        assert c.flush(5) == 0
        assert c.delivery_errors == {"msg_timed_out": 2, "transport": 1}
        assert (c.events_tracked, c.events_delivered, c.spool_depth) == (20, 20, 0)

        def sample(name: str, **labels: str) -> float | None:
            return registry.get_sample_value(name, labels)

        assert sample("meterflow_sdk_events_tracked_total") == 20
        assert sample("meterflow_sdk_events_delivered_total") == 20
        assert sample("meterflow_sdk_delivery_errors_total", reason="msg_timed_out") == 2
        assert sample("meterflow_sdk_delivery_errors_total", reason="transport") == 1
        assert sample("meterflow_sdk_spool_depth") == 0
        assert sample("meterflow_sdk_spool_bytes") == c.spool_bytes > 0
    # every id delivered; the resent ones in their original relative order
    assert sorted(fake.acked_ids) == sorted(ids)
    resent = [i for i in fake.acked_ids if fake.acked_ids.index(i) >= 17]
    assert resent == [i for i in ids if i in resent]
    assert registry.get_sample_value("meterflow_sdk_events_tracked_total") is None  # unregistered


def test_the_in_flight_window_bounds_what_the_transport_holds(tmp_path):
    fake = FakeTransport()
    fake.hold = True
    with client(tmp_path, fake, max_in_flight=10) as c:
        ids = [c.track("api_call", "cust-1") for _ in range(200)]
        deadline = time.monotonic() + 2
        while len(fake.attempts) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert len(fake.attempts) == 10
        assert c.spool_depth == 200
        fake.hold = False
        assert c.flush(10) == 0
    assert fake.max_pending <= 10
    assert fake.acked_ids == ids


def test_a_refused_send_leaves_the_event_spooled_and_it_is_retried(tmp_path):
    fake = FakeTransport(send_errors=["serialization"])
    with client(tmp_path, fake) as c:
        ids = [c.track("api_call", "cust-1") for _ in range(3)]
        assert c.flush(5) == 0
        assert c.delivery_errors == {"serialization": 1}
    assert fake.acked_ids == ids


def test_a_fatally_failed_transport_is_replaced_and_nothing_is_lost(tmp_path):
    first = FakeTransport()
    first.hold = True
    made = [first]

    def factory() -> FakeTransport:
        if len(made) == 1 and first.attempts:
            made.append(FakeTransport())
        return made[-1]

    with client(tmp_path, factory) as c:
        ids = [c.track("api_call", "cust-1") for _ in range(5)]
        deadline = time.monotonic() + 2
        while len(first.attempts) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        first.fatal = "_FENCED: producer fenced"
        assert c.flush(5) == 0
        assert c.delivery_errors == {"fatal": 1}
    assert made[1].acked_ids == ids


def test_flush_reports_what_is_still_undelivered_and_close_keeps_it_spooled(tmp_path):
    fake = FakeTransport()
    fake.hold = True
    c = client(tmp_path, fake)
    for _ in range(7):
        c.track("api_call", "cust-1")
    started = time.monotonic()
    assert c.flush(0.3) == 7
    assert 0.25 < time.monotonic() - started < 2
    assert c.close(0.1) == 7
    with pytest.raises(SpoolClosed):
        c.track("api_call", "cust-1")
    assert Spool(tmp_path / "spool").depth == 7


def test_concurrent_track_from_many_threads_delivers_every_id_once(tmp_path):
    fake = FakeTransport()
    returned: list[str] = []
    lock = threading.Lock()
    with client(tmp_path, fake, max_in_flight=64, segment_bytes=16_384) as c:

        def worker(k: int) -> None:
            for i in range(300):
                event_id = c.track("api_call", f"cust-{k}", i)
                with lock:
                    returned.append(event_id)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert c.flush(10) == 0
        assert c.events_tracked == c.events_delivered == 2400
    assert len(set(returned)) == 2400
    assert sorted(fake.acked_ids) == sorted(returned)
    # per customer (= per Kafka key) the events went out in the order track() accepted them
    for k in range(8):
        values = [v["value"] for v in fake.acked if v["customer_id"] == f"cust-{k}"]
        assert values == [Decimal(i).quantize(Decimal("1e-12")) for i in range(300)]


def test_a_second_live_client_on_the_same_spool_or_registry_is_refused(tmp_path):
    registry = CollectorRegistry()
    with client(tmp_path, FakeTransport(), registry=registry):
        with pytest.raises(SpoolLocked):
            client(tmp_path, FakeTransport(), registry=CollectorRegistry())
        with pytest.raises(ValueError, match="another UsageClient"):
            UsageClient(
                spool_dir=tmp_path / "other",
                registry=registry,
                transport_factory=FakeTransport,
            )
    # both refusals released what they took: the same spool and registry work again
    with client(tmp_path, FakeTransport(), registry=registry) as c:
        assert c.spool_depth == 0


NOW = datetime.now(UTC)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"event_name": ""}, "event_name"),
        ({"event_name": "  "}, "event_name"),
        ({"customer_id": ""}, "customer_id"),
        ({"customer_id": None}, "customer_id"),
        ({"value": float("nan")}, "finite"),
        ({"value": float("inf")}, "finite"),
        ({"value": Decimal("NaN")}, "finite"),
        ({"value": Decimal("-Infinity")}, "finite"),
        ({"value": "lots"}, "not a number"),
        ({"value": True}, "value must be"),
        ({"value": Decimal("1e30")}, "decimal"),
        ({"event_id": ""}, "event_id"),
        ({"properties": {"model": 3}}, "properties"),
        ({"timestamp": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"timestamp": NOW + timedelta(hours=1)}, "future"),
        ({"timestamp": NOW - timedelta(days=60)}, "older"),
        ({"properties": {"blob": "x" * 70_000}}, "64 KiB"),
    ],
)
def test_bad_input_raises_value_error_and_spools_nothing(tmp_path, kwargs, match):
    fake = FakeTransport()
    with client(tmp_path, fake) as c:
        args = {"event_name": "api_call", "customer_id": "cust-1", **kwargs}
        with pytest.raises(ValueError, match=match) as err:
            c.track(**args)
        assert isinstance(err.value, InvalidEvent)
        assert (c.events_tracked, c.spool_depth) == (0, 0)


def test_numbers_keep_their_decimal_meaning(tmp_path):
    fake = FakeTransport()
    with client(tmp_path, fake) as c:
        for v in (0.1, 3, "2.50", Decimal("-1.000000000001")):
            c.track("llm_tokens", "cust-1", v)
        assert c.flush(5) == 0
    assert [v["value"] for v in fake.acked] == [
        Decimal("0.100000000000"),
        Decimal("3.000000000000"),
        Decimal("2.500000000000"),
        Decimal("-1.000000000001"),
    ]


def test_spool_records_are_plain_json_with_the_acceptance_time(tmp_path):
    with client(tmp_path, FakeTransport()) as c:
        c.track("api_call", "cust-1", event_id="e-1")
        ((_, raw),) = c.spool.read(0, 1)
    event, accepted_ms = decode_event(raw)
    assert event.event_id == "e-1"
    assert abs(accepted_ms / 1000 - time.time()) < 60
