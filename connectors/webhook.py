"""Optional webhook delivery of usage alerts: POST each alert as JSON, retrying with exponential
backoff. The alerts topic is the source: an offset is committed only after the receiver
answered 2xx, so an alert is never lost; a receiver that keeps failing stops the sender (non-zero
exit) with the alert still uncommitted, to be retried by the next run. Receivers must be
idempotent on `alert_id` (a crash between POST and commit re-sends)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    first_delay_s: float = 0.5
    factor: float = 2.0
    max_delay_s: float = 30.0

    def delays(self) -> list[float]:
        """Waits before attempts 2..n."""
        return [
            min(self.max_delay_s, self.first_delay_s * self.factor**i)
            for i in range(self.attempts - 1)
        ]


class DeliveryError(RuntimeError):
    pass


def deliver(
    send: Callable[[], None],
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Call `send` until it returns without raising; return the attempts used, or raise
    DeliveryError naming the last failure once the policy is exhausted."""
    waits = policy.delays()
    for attempt in range(1, policy.attempts + 1):
        try:
            send()
            return attempt
        except Exception as exc:  # any failure of the receiver is retried the same way
            last = exc
            if attempt <= len(waits):
                sleep(waits[attempt - 1])
    raise DeliveryError(f"gave up after {policy.attempts} attempts: {last!r}")


def post_json(url: str, body: dict[str, Any], timeout_s: float = 10.0) -> None:
    data = json.dumps(body, default=_json_default, sort_keys=True).encode()
    req = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # raises on 4xx/5xx
        resp.read()


def _json_default(v: object) -> str:
    if isinstance(v, datetime):
        return v.isoformat()
    return str(v)
