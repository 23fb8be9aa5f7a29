"""The webhook sender against a real local HTTP receiver and the real alerts topic: every alert
arrives once, failures are retried with backoff, and a second run sends nothing new."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest

from connectors.alerts import send_alerts
from connectors.producer import produce_raw
from connectors.webhook import DeliveryError, RetryPolicy, post_json
from jobs.rating_operator import AlertCodec
from meterflow.alerts import Alert


class Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []
    fail_next = 0

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if Receiver.fail_next > 0:
            Receiver.fail_next -= 1
            self.send_response(503)
        else:
            Receiver.received.append(body)
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    Receiver.received, Receiver.fail_next = [], 0
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_port}/alerts"
    server.shutdown()


def _alerts(n: int) -> list[Alert]:
    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    return [
        Alert(f"c{i}", f"s{i}", "calls", start, end, pct, Decimal(pct), Decimal(100), True)
        for i in range(n)
        for pct in (75, 90)
    ]


def test_alerts_reach_the_webhook_once_with_retries(scratch, receiver):
    codec = AlertCodec(scratch.settings)
    alerts = _alerts(3)
    ws = datetime(2026, 11, 3, tzinfo=UTC)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    records = [(a.customer_id.encode(), codec.encode(a, ws), now_ms) for a in alerts]
    produce_raw(
        scratch.settings, records, topic=scratch.settings.alerts_topic, role="operator"
    )  # as the job

    Receiver.fail_next = 2  # the first alert needs three attempts
    fast = RetryPolicy(attempts=4, first_delay_s=0.05)
    res = send_alerts(
        scratch.settings, lambda a: post_json(receiver, a), "meterflow-alerts-hook", fast, idle_s=3
    )
    assert res.sent == len(alerts) and res.attempts == len(alerts) + 2
    got = [(r["customer_id"], r["threshold_pct"], r["alert_id"]) for r in Receiver.received]
    assert sorted(got) == sorted((a.customer_id, a.threshold_pct, a.alert_id) for a in alerts)

    # committed: a second run has nothing to send
    again = send_alerts(
        scratch.settings, lambda a: post_json(receiver, a), "meterflow-alerts-hook", fast, 2
    )
    assert again.sent == 0 and len(Receiver.received) == len(alerts)


def test_a_receiver_that_keeps_failing_stops_the_sender_without_losing_the_alert(scratch, receiver):
    codec = AlertCodec(scratch.settings)
    (alert,) = _alerts(1)[:1]
    ws = datetime(2026, 11, 3, tzinfo=UTC)
    produce_raw(
        scratch.settings,
        [(b"c0", codec.encode(alert, ws), int(datetime.now(UTC).timestamp() * 1000))],
        topic=scratch.settings.alerts_topic,
        role="operator",  # standing in for the job, the alerts topic's only writer
    )
    Receiver.fail_next = 10
    fast = RetryPolicy(attempts=3, first_delay_s=0.05)
    with pytest.raises(DeliveryError, match="gave up after 3 attempts"):
        send_alerts(
            scratch.settings, lambda a: post_json(receiver, a), "meterflow-alerts-hook2", fast, 3
        )
    Receiver.fail_next = 0  # the receiver recovers: the next run delivers it
    res = send_alerts(
        scratch.settings, lambda a: post_json(receiver, a), "meterflow-alerts-hook2", fast, 3
    )
    assert res.sent == 1 and Receiver.received[0]["alert_id"] == alert.alert_id
