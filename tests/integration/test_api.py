"""`meterflow serve` on the real stack: events sent over HTTP are acknowledged by Kafka, metered
by the JVM job (a retried batch counted once), and read back through the API from ClickHouse;
keys made with the CLI; isolation, bad keys and injection strings against the real tables; a
broker that cannot be reached is a 503 with Retry-After, not a 5xx of another kind or a loss."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from meterflow.settings import REPO_ROOT
from tests.integration.conftest import Scratch, free_port

SCHEMAS = REPO_ROOT / "schemas"
CATALOG = [
    "--meters", str(SCHEMAS / "meters" / "scenario.yaml"),
    "--prices", str(SCHEMAS / "prices" / "scenario.yaml"),
    "--subscriptions", str(SCHEMAS / "customers" / "scenario.yaml"),
]  # fmt: skip
INJECTIONS = [
    "cust-0' OR '1'='1",
    "cust-0\\' OR 1=1 --",
    "x') UNION ALL SELECT name, '', '', '', 0 FROM system.users --",
    "cust-0%00",
]


def cli(s: Scratch, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "meterflow.cli", *args],
        cwd=REPO_ROOT, env=s.env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@contextlib.contextmanager
def serving(s: Scratch, *extra: str, env: dict[str, str] | None = None) -> Iterator[str]:
    port = free_port()
    log = open(s.checkpoints / f"api-{port}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "meterflow.cli", "serve", "--port", str(port), *CATALOG, *extra],
        cwd=REPO_ROOT, env={**s.env(), **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (s.checkpoints / f"api-{port}.log").read_text()[-3000:]
            with contextlib.suppress(OSError):
                if call(base, "GET", "/health")[0] == 200:
                    break
            assert time.monotonic() < deadline, "the API did not answer /health in 60 s"
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def call(
    base: str, method: str, path: str, token: str | None = None, body: Any = None
) -> tuple[int, Any, dict[str, str]]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    if token is not None:
        req.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), dict(e.headers)


def call_event(customer: str, n: int, run: str, **kw: Any) -> dict[str, Any]:
    return {
        "event_id": f"{run}-{customer}-{n}",
        "event_name": "api_call",
        "customer_id": customer,
        "properties": {"region": "eu", "endpoint": "/v1/x", "user_id": f"u{n % 3}"},
        **kw,
    }


@pytest.fixture(scope="module")
def api(module_scratch: Scratch) -> Iterator[tuple[Scratch, str, dict[str, str]]]:
    s = module_scratch
    tokens = {
        "admin": cli(s, "keys", "create", "--scope", "admin").strip(),
        "ingest": cli(s, "keys", "create", "--scope", "ingest").strip(),
        "cust-0": cli(s, "keys", "create", "--scope", "customer", "--customer", "cust-0").strip(),
        "cust-2": cli(s, "keys", "create", "--scope", "customer", "--customer", "cust-2").strip(),
        "revoked": cli(s, "keys", "create", "--scope", "admin").strip(),
    }
    cli(s, "keys", "revoke", tokens["revoked"].split("_")[1])
    listed = cli(s, "keys", "list")
    assert listed.count("active") == 4 and listed.count("revoked") == 1
    assert not any(t in listed for t in tokens.values())  # tokens are not stored
    stored = s.query("SELECT key_hash FROM {db}.api_keys FINAL")
    assert not any(t in str(stored) for t in tokens.values())
    # a final invoice of cust-0 (the close is tested elsewhere): header and one line
    closed = datetime(2026, 12, 1, 6, tzinfo=UTC).replace(tzinfo=None)
    nov, dec = datetime(2026, 11, 1), datetime(2026, 12, 1)
    s.query(
        "INSERT INTO {db}.invoice_lines (invoice_id, line_no, customer_id, kind, period_start, "
        "period_end, meter, meter_version, dimensions, plan, price_version, pricing, quantity, "
        "amount, event_count, events_digest, refers_to, detail, closed_at) VALUES",
        [("inv-c0-nov", 1, "cust-0", "usage", nov, dec, "calls", 3, "{}", "scenario", 1,
          "graduated", Decimal(60), Decimal("1.58"), 60, "abc", "", "", closed)],
    )  # fmt: skip
    s.query(
        "INSERT INTO {db}.invoices (invoice_id, customer_id, subscription_id, plan, "
        "price_version, currency, period_start, period_end, subtotal, credits, total, "
        "line_count, closed_at) VALUES",
        [("inv-c0-nov", "cust-0", "sub-cust-0", "scenario", 1, "USD", nov, dec,
          Decimal("1.58"), Decimal(0), Decimal("1.58"), 1, closed)],
    )  # fmt: skip
    with serving(s, "--ack-timeout", "10") as base:
        yield s, base, tokens


READS = [
    "/v1/customers/{c}/usage",
    "/v1/customers/{c}/cost",
    "/v1/customers/{c}/entitlements",
    "/v1/customers/{c}/entitlements/calls",
    "/v1/customers/{c}/invoices",
    "/v1/customers/{c}/invoices/inv-c0-nov",
]


def test_ingest_is_acked_metered_once_on_retry_and_read_back(api) -> None:
    s, base, tokens = api
    run = uuid.uuid4().hex[:6]
    now = datetime.now(UTC).replace(microsecond=0)
    ts = (now - timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    batch = [call_event("cust-0", n, run, timestamp=ts) for n in range(100)]
    batch += [call_event("cust-2", n, run, timestamp=ts) for n in range(10)]
    batch.append({"event_name": "api_call", "customer_id": "cust-2", "timestamp": ts,
                  "properties": {"region": "us", "user_id": "u9"}})  # fmt: skip
    batch.append(call_event("cust-2", 99, run, value=0.5))  # a JSON float: rejected
    status, body, _ = call(base, "POST", "/v1/events", tokens["ingest"], {"events": batch})
    assert status == 200, body
    assert (body["accepted"], body["rejected"], body["not_acknowledged"]) == (111, 1, 0)
    generated = body["results"][110]["event_id"]
    assert generated and body["results"][111]["reason"] == "INVALID_EVENT"
    # the client retries the whole request (say its connection dropped before the answer),
    # with the generated id filled in: the same 111 events again
    batch[110]["event_id"] = generated
    status, again, _ = call(base, "POST", "/v1/events", tokens["admin"], {"events": batch})
    assert status == 200 and again["accepted"] == 111
    # acknowledged means in the topic (keyed by customer): every accepted event twice now
    keys = Counter(r.key().decode() for r in s.topic_records(s.settings.events_topic))
    assert keys == {"cust-0": 200, "cust-2": 22}
    s.run_job(*CATALOG, module="jobs.streaming")
    # the job keeps the first copy of each event_id: stored once, counted once
    assert s.query("SELECT count(), uniqExact(event_id) FROM {db}.events FINAL") == [(111, 111)]
    status, usage, _ = call(base, "GET", "/v1/customers/cust-0/usage?meter=calls", tokens["cust-0"])
    assert status == 200 and sum(w["event_count"] for w in usage["windows"]) == 100
    assert {json.dumps(w["dimensions"]) for w in usage["windows"]} == {'{"region": "eu"}'}
    status, u2, _ = call(
        base, "GET", "/v1/customers/cust-2/usage?meter=calls&window=minute&dimension=region=us",
        tokens["cust-2"],
    )  # fmt: skip
    assert status == 200 and [w["event_count"] for w in u2["windows"]] == [1]
    # cost and entitlements from the streamed period cost: 100 calls = the hard cap
    status, cost, _ = call(base, "GET", "/v1/customers/cust-0/cost", tokens["cust-0"])
    assert status == 200 and (cost["plan"], cost["price_version"]) == ("scenario", 1)
    calls = next(m for m in cost["meters"] if m["meter"] == "calls")
    # graduated: 50 x 0.01 + 50 x 0.008 + the second tier's flat fee 1.00
    assert (calls["quantity"], calls["amount_rounded"]) == ("100", "1.90")
    assert calls["quota"]["allowed"] is False and calls["quota"]["threshold_pct"] == 100
    status, ent, _ = call(base, "GET", "/v1/customers/cust-0/entitlements/calls", tokens["cust-0"])
    assert (status, ent["used"], ent["remaining"], ent["allowed"]) == (200, "100", "0", False)
    status, ent, _ = call(base, "GET", "/v1/customers/cust-2/entitlements/calls", tokens["cust-2"])
    assert (status, ent["used"], ent["limit"], ent["allowed"]) == (200, "11", "100", True)


def test_invoices_and_their_explanation(api) -> None:
    _, base, tokens = api
    status, body, _ = call(base, "GET", "/v1/customers/cust-0/invoices", tokens["cust-0"])
    assert status == 200 and [i["invoice_id"] for i in body["invoices"]] == ["inv-c0-nov"]
    status, inv, _ = call(base, "GET", "/v1/customers/cust-0/invoices/inv-c0-nov", tokens["cust-0"])
    assert status == 200 and inv["invoice"]["total"] == "1.58"
    assert inv["lines"][0]["pricing"] == "graduated" and inv["lines"][0]["amount"] == "1.58"
    assert "line 1: usage" in inv["explanation"] and "rule: graduated" in inv["explanation"]
    # the invoice under another customer's path is no such invoice, even for an admin
    status, _, _ = call(base, "GET", "/v1/customers/cust-2/invoices/inv-c0-nov", tokens["admin"])
    assert status == 404
    status, body, _ = call(base, "GET", "/v1/customers/cust-2/invoices", tokens["cust-2"])
    assert status == 200 and body["invoices"] == []


@pytest.mark.parametrize("route", READS)
def test_keys_and_isolation_on_every_route(api, route: str) -> None:
    _, base, tokens = api
    own = call(base, "GET", route.format(c="cust-0"), tokens["cust-0"])
    assert own[0] == 200, own
    for token, customer, expect in [
        (tokens["cust-2"], "cust-0", 403),
        (tokens["cust-0"], "cust-2", 403),
        (tokens["ingest"], "cust-0", 403),
        (None, "cust-0", 401),
        (tokens["revoked"], "cust-0", 401),
        ("mf_' OR 1=1 --", "cust-0", 401),
        (tokens["admin"][:-1] + "A" if tokens["admin"][-1] != "A" else "B", "cust-0", 401),
        *((tokens["cust-0"], bad, 403) for bad in INJECTIONS),
        *((tokens["admin"], bad, 404) for bad in INJECTIONS),
    ]:
        path = route.format(c=urllib.request.quote(customer, safe=""))
        status, body, _ = call(base, "GET", path, token)
        assert status == expect, (customer, status, body)
        assert set(body) == {"detail"}, body  # no data, only the reason


def test_a_revoked_key_stops_working_within_the_cache_time(api) -> None:
    s, base, _ = api
    token = cli(s, "keys", "create", "--scope", "customer", "--customer", "cust-0").strip()
    assert call(base, "GET", "/v1/customers/cust-0/entitlements", token)[0] == 200
    cli(s, "keys", "revoke", token.split("_")[1])
    time.sleep(5.5)  # ApiConfig.key_cache_s
    assert call(base, "GET", "/v1/customers/cust-0/entitlements", token)[0] == 401


def test_an_unreachable_broker_is_a_503_with_retry_after(api) -> None:
    s, _, tokens = api
    # a real producer whose broker is not there: librdkafka retries, then gives up at the bound
    dead = f"127.0.0.1:{free_port()}"
    with serving(s, "--ack-timeout", "3", env={"METERFLOW_KAFKA": dead}) as base:
        ev = call_event("cust-0", 0, uuid.uuid4().hex[:6])
        t0 = time.monotonic()
        status, body, headers = call(base, "POST", "/v1/events", tokens["ingest"], {"events": [ev]})
        assert status == 503 and headers["retry-after"] == "5", body
        assert time.monotonic() - t0 < 15
        assert body["not_acknowledged"] == 1
        assert body["results"][0] | {"detail": None} == {
            "index": 0, "event_id": ev["event_id"], "status": "not_acknowledged",
            "reason": "NOT_ACKNOWLEDGED", "detail": None,
        }  # fmt: skip
        # a bad request is still a 4xx while the broker is away
        assert call(base, "POST", "/v1/events", tokens["ingest"], b"{")[0] == 400
