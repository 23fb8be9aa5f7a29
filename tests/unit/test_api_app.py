"""The HTTP layer without services: keys and isolation on every route, status codes, bodies.

The store and the publisher are in-memory stand-ins holding rows as the connectors return
them; tests/integration/test_api.py runs the same routes against ClickHouse and Kafka.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import pytest
from fastapi.testclient import TestClient

from connectors.clickhouse import UsageWindow
from connectors.ledger import FinalHeader, PeriodCost
from meterflow.api.app import ApiConfig, Unavailable, create_app
from meterflow.api_keys import ApiKey, Scope, new_key
from meterflow.catalog import load_catalog
from meterflow.events import UsageEvent
from meterflow.invoicing import Line
from meterflow.settings import REPO_ROOT

NOW = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)
PERIOD = datetime(2026, 12, 1, tzinfo=UTC)
SCHEMAS = REPO_ROOT / "schemas"
INJECTIONS = [
    "cust-0' OR '1'='1",
    "cust-0%27%20OR%201=1--",
    "cust-0\\'; DROP TABLE api_keys; --",
    "cust-0) UNION ALL SELECT * FROM system.users --",
    "%00",
    "..%2F..%2Fetc%2Fpasswd",
]


@dataclass
class Store:
    keys: dict[str, ApiKey] = field(default_factory=dict)
    down: bool = False
    calls: list[str] = field(default_factory=list)

    def _log(self, what: str) -> None:
        if self.down:
            raise Unavailable("clickhouse: connection refused")
        self.calls.append(what)

    def key(self, key_id: str) -> ApiKey | None:
        self._log("key")
        return self.keys.get(key_id)

    def has_events(self, customer_id: str) -> bool:
        self._log("has_events")
        return customer_id == "cust-events-only"

    def windows(self, customer_id: str, meter, dims, window_s, start, end, limit) -> list:
        self._log(f"windows {customer_id}")
        rows = [
            UsageWindow(
                customer_id, "calls", 3, '{"region":"eu"}', PERIOD, PERIOD.replace(minute=1),
                5, D("5.000000000000"), 5,
            ),
            UsageWindow(
                customer_id, "calls", 3, '{"region":"us"}', PERIOD, PERIOD.replace(minute=1),
                2, D("2"), 2,
            ),
        ]  # fmt: skip
        return rows[:limit]

    def period_costs(self, customer_id: str, period_start: datetime) -> list:
        self._log(f"period_costs {customer_id}")
        if customer_id != "cust-0":
            return []
        args = ("sub-cust-0", PERIOD, datetime(2027, 1, 1, tzinfo=UTC), "scenario", 1, "USD")
        return [
            PeriodCost("calls", 2, *args, D("40"), D("0.4"), 40),
            PeriodCost("calls", 3, *args, D("100"), D("2.2"), 100),
            PeriodCost("gpu_max", 1, *args, D("6.5"), D("13.750000000000000001"), 3),
            PeriodCost("active_users", 1, *args, D("3"), None, 3),
        ]

    def _header(self, customer_id: str) -> FinalHeader:
        return FinalHeader(
            f"inv-{customer_id}-202611", customer_id, f"sub-{customer_id}", "scenario", 1,
            "USD", datetime(2026, 11, 1, tzinfo=UTC), PERIOD, D("12.5"), D("0"), D("12.5"),
            datetime(2026, 12, 2, tzinfo=UTC),
        )  # fmt: skip

    def invoices(self, customer_id: str) -> list:
        self._log(f"invoices {customer_id}")
        return [self._header(customer_id)] if customer_id.startswith("cust-") else []

    def invoice(self, customer_id: str, invoice_id: str) -> Any | None:
        self._log(f"invoice {customer_id}")
        h = self._header(customer_id)
        return h if invoice_id == h.invoice_id else None

    def lines(self, invoice_id: str) -> list[tuple[int, Line]]:
        self._log("lines")
        return [(1, Line("usage", "calls", 3, "{}", D("100"), D("12.50"), 100, "d1", "graduated"))]

    def explain(self, header: Any, lines: list) -> str:
        return f"invoice {header.invoice_id}"


@dataclass
class Publisher:
    sent: list[tuple[UsageEvent, int]] = field(default_factory=list)
    fail: str | None = None

    def publish(self, events: Sequence[UsageEvent], record_ts: int) -> list[str | None]:
        if self.fail:
            return [self.fail] * len(events)
        self.sent.extend((e, record_ts) for e in events)
        return [None] * len(events)


@pytest.fixture
def world():
    cat = load_catalog(
        SCHEMAS / "customers" / "scenario.yaml",
        SCHEMAS / "prices" / "scenario.yaml",
        SCHEMAS / "meters" / "scenario.yaml",
        None,
    )
    store, pub = Store(), Publisher()
    app = create_app(
        ApiConfig(cat.subscriptions, cat.book, cat.meters, key_cache_s=0, now=lambda: NOW),
        store,
        pub,
    )
    tokens = {}
    for name, scope, customer in (
        ("admin", Scope.ADMIN, ""),
        ("ingest", Scope.INGEST, ""),
        ("cust-0", Scope.CUSTOMER, "cust-0"),
        ("cust-2", Scope.CUSTOMER, "cust-2"),
        ("revoked", Scope.ADMIN, ""),
    ):
        k = new_key()
        store.keys[k.key_id] = ApiKey(
            k.key_id, k.key_hash, scope, customer, name, NOW, revoked=name == "revoked"
        )
        tokens[name] = k.token
    return TestClient(app), store, pub, tokens


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


READS = [
    "/v1/customers/{c}/usage",
    "/v1/customers/{c}/cost",
    "/v1/customers/{c}/entitlements",
    "/v1/customers/{c}/entitlements/calls",
    "/v1/customers/{c}/invoices",
    "/v1/customers/{c}/invoices/inv-{c}-202611",
]


@pytest.mark.parametrize("route", READS)
def test_a_customer_key_reads_its_customer_and_nothing_else(world, route: str) -> None:
    client, store, _, tokens = world
    own = client.get(route.format(c="cust-0"), headers=auth(tokens["cust-0"]))
    assert own.status_code == 200, own.text
    store.calls.clear()
    for other in ("cust-2", "cust-1", "no-such-customer", *INJECTIONS):
        r = client.get(route.format(c=other), headers=auth(tokens["cust-0"]))
        assert r.status_code in (403, 404), (other, r.status_code)
        assert "cust-2" not in r.text.replace(other, "") and "windows" not in r.json()
    # refused before any data was read: only key look-ups reached the store
    assert set(store.calls) <= {"key"}


@pytest.mark.parametrize("route", [*READS, "/v1/events"])
def test_missing_malformed_unknown_and_revoked_keys_get_401(world, route: str) -> None:
    client, _, _, tokens = world
    url = route.format(c="cust-0")
    call = client.post if route == "/v1/events" else client.get
    body = {"json": {"events": [{"event_name": "api_call", "customer_id": "c"}]}}
    kw = body if route == "/v1/events" else {}
    unknown = new_key().token
    for headers in (
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic " + tokens["admin"]},
        {"Authorization": "Bearer mf_' OR 1=1 --"},
        {"Authorization": "Bearer " + tokens["admin"][:-2]},
        auth(unknown),
        auth(tokens["revoked"]),
        auth(tokens["admin"][:-1] + ("x" if tokens["admin"][-1] != "x" else "y")),
    ):
        r = call(url, headers=headers, **kw)
        assert r.status_code == 401, (headers, r.status_code, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        assert set(r.json()) == {"detail"}


@pytest.mark.parametrize("route", READS)
def test_an_ingest_key_reads_nothing(world, route: str) -> None:
    client, _, _, tokens = world
    assert client.get(route.format(c="cust-0"), headers=auth(tokens["ingest"])).status_code == 403


@pytest.mark.parametrize("route", READS[:-1])
def test_admin_reads_any_customer_and_gets_404_for_unknown_ones(world, route: str) -> None:
    client, _, _, tokens = world
    assert client.get(route.format(c="cust-2"), headers=auth(tokens["admin"])).status_code == 200
    for bad in ("nobody", *INJECTIONS):
        r = client.get(route.format(c=bad), headers=auth(tokens["admin"]))
        assert r.status_code == 404, (bad, r.text)
    # a customer with stored events but no subscription exists
    r = client.get(route.format(c="cust-events-only"), headers=auth(tokens["admin"]))
    assert r.status_code == 200, r.text


def test_another_customers_invoice_id_is_not_found(world) -> None:
    client, _, _, tokens = world
    r = client.get(
        "/v1/customers/cust-0/invoices/inv-cust-2-202611", headers=auth(tokens["cust-0"])
    )
    assert r.status_code == 404 and "cust-2" not in r.text.replace("inv-cust-2-202611", "")
    for bad in INJECTIONS:
        r = client.get(f"/v1/customers/cust-0/invoices/{bad}", headers=auth(tokens["cust-0"]))
        assert r.status_code == 404


def test_cost_so_far_with_plan_price_version_and_quota_state(world) -> None:
    client, _, _, tokens = world
    body = client.get("/v1/customers/cust-0/cost", headers=auth(tokens["cust-0"])).json()
    assert (body["plan"], body["price_version"], body["currency"]) == ("scenario", 1, "USD")
    assert body["period_start"] == "2026-12-01T00:00:00Z"
    by = {(x["meter"], x["meter_version"]): x for x in body["meters"]}
    calls = by[("calls", 3)]
    assert (calls["quantity"], calls["amount"], calls["amount_rounded"]) == ("100", "2.2", "2.20")
    assert calls["quota"] == {
        "limit": "100", "hard_cap": True, "remaining": "0", "threshold_pct": 100, "allowed": False
    }  # fmt: skip
    assert by[("gpu_max", 1)]["amount_rounded"] == "13.75"
    assert by[("gpu_max", 1)]["quota"]["allowed"] is True  # soft quota
    assert by[("active_users", 1)]["amount"] is None and by[("active_users", 1)]["quota"] is None
    assert body["total_rounded"] == "16.35"  # 0.40 + 2.20 + 13.75


def test_entitlements(world) -> None:
    client, _, _, tokens = world
    body = client.get("/v1/customers/cust-0/entitlements", headers=auth(tokens["cust-0"])).json()
    ents = {e["meter"]: e for e in body["entitlements"]}
    # the newest meter version's quantity (calls v3), not the sum with v2
    assert ents["calls"] == {
        "meter": "calls", "used": "100", "limit": "100", "remaining": "0", "hard_cap": True,
        "threshold_pct": 100, "allowed": False,
    }  # fmt: skip
    assert ents["gpu_max"]["remaining"] == "1.5" and ents["gpu_max"]["allowed"]
    assert ents["tokens"] == {
        "meter": "tokens", "used": "0", "limit": None, "remaining": None, "hard_cap": False,
        "threshold_pct": 0, "allowed": True,
    }  # fmt: skip
    one = client.get("/v1/customers/cust-2/entitlements/calls", headers=auth(tokens["cust-2"]))
    assert one.json()["allowed"] is True and one.json()["used"] == "0"
    r = client.get("/v1/customers/cust-0/entitlements/nope", headers=auth(tokens["cust-0"]))
    assert r.status_code == 404


def test_usage_filters_are_checked(world) -> None:
    client, _, _, tokens = world
    h = auth(tokens["admin"])
    r = client.get("/v1/customers/cust-0/usage?meter=calls&window=minute&limit=1", headers=h)
    body = r.json()
    assert body["truncated"] is True and len(body["windows"]) == 1
    assert body["windows"][0]["dimensions"] == {"region": "eu"}
    assert body["windows"][0]["quantity"] == "5"
    for q in (
        "meter=nope",
        "window=week",
        "dimension=noequals",
        "from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z",
        "from=yesterday",
        "limit=0",
        "limit=100000",
    ):
        r = client.get(f"/v1/customers/cust-0/usage?{q}", headers=h)
        assert 400 <= r.status_code < 500, (q, r.status_code)


def test_invoice_with_lines_and_explanation(world) -> None:
    client, _, _, tokens = world
    r = client.get(
        "/v1/customers/cust-0/invoices/inv-cust-0-202611", headers=auth(tokens["cust-0"])
    )
    body = r.json()
    assert body["invoice"]["total"] == "12.50" and body["lines"][0]["pricing"] == "graduated"
    assert body["explanation"] == "invoice inv-cust-0-202611"


def test_clickhouse_down_is_503_with_retry_after(world) -> None:
    client, store, _, tokens = world
    store.down = True
    r = client.get("/v1/customers/cust-0/cost", headers=auth(tokens["cust-0"]))
    assert r.status_code == 503 and r.headers["retry-after"] == "5"


# ---------------------------------------------------------------------------------- ingest


CALL = {"event_name": "api_call", "customer_id": "c", "properties": {"user_id": "u"}}


def post(client: TestClient, token: str, body: Any, **kw: Any):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(
        "/v1/events", content=data, headers={**auth(token), "content-type": "application/json"},
        **kw,
    )  # fmt: skip


def test_ingest_answers_per_event_and_sends_only_the_accepted(world) -> None:
    client, _, pub, tokens = world
    events = [
        {"event_id": "e1", "event_name": "api_call", "customer_id": "cust-0",
         "properties": {"region": "eu", "endpoint": "/x", "user_id": "u1"}},
        {"event_name": "llm_tokens", "customer_id": "cust-0", "value": "-3",
         "properties": {"model": "small"}},
        {"event_name": "llm_tokens", "customer_id": "cust-0", "value": 1.5},
        {"event_name": "llm_tokens", "customer_id": "cust-0", "value": "12.25",
         "timestamp": "2026-12-10T11:59:00Z", "properties": {"model": "large"}},
        {"event_name": "api_call", "customer_id": "cust-0", "timestamp": "2026-01-01T00:00:00Z"},
        {"event_name": "api_call", "customer_id": "cust-0", "colour": "red"},
        {"event_id": "e1", "event_name": "api_call", "customer_id": "cust-0",
         "properties": {"user_id": "u2"}},
        "not an object",
    ]  # fmt: skip
    r = post(client, tokens["ingest"], {"events": events})
    assert r.status_code == 200, r.text
    body = r.json()
    res = body["results"]
    assert [x["status"] for x in res] == [
        "accepted", "rejected", "rejected", "accepted", "rejected", "rejected", "rejected",
        "rejected",
    ]  # fmt: skip
    assert [x["reason"] for x in res if x["status"] == "rejected"] == [
        "NEGATIVE_QUANTITY", "INVALID_EVENT", "INVALID_EVENT", "UNKNOWN_FIELD",
        "DUPLICATE_IN_BATCH", "INVALID_EVENT",
    ]  # fmt: skip
    assert "decimal string" in res[2]["detail"] and "older" in res[4]["detail"]
    assert (body["accepted"], body["rejected"], body["not_acknowledged"]) == (2, 6, 0)
    sent = [e for e, _ in pub.sent]
    assert [e.event_id for e in sent] == ["e1", res[3]["event_id"]]
    assert sent[1].value == D("12.25") and sent[1].timestamp == datetime(
        2026, 12, 10, 11, 59, tzinfo=UTC
    )
    assert {ts for _, ts in pub.sent} == {int(NOW.timestamp() * 1000)}  # record time = now


def test_ingest_refuses_whole_requests_with_4xx(world) -> None:
    client, _, pub, tokens = world
    one = {"event_name": "api_call", "customer_id": "c"}
    cases = [
        (b"{not json", 400),
        (b"", 400),
        (b"\xff\xfe", 400),
        (b"[]", 400),
        (b'{"events": {}}', 400),
        (b'{"events": []}', 400),
        (b'{"events": [], "extra": 1}', 400),
        (b'{"events": [NaN]}', 400),
        (b"[" * 100_000, 400),
        (json.dumps({"events": [one] * 1001}).encode(), 413),
        (b'{"events": ["' + b"x" * (5 << 20) + b'"]}', 413),
    ]
    for data, status in cases:
        r = post(client, tokens["ingest"], data)
        assert r.status_code == status, (data[:40], r.status_code, r.text[:200])
        assert r.json()["detail"]
    assert pub.sent == []
    assert post(client, tokens["cust-0"], {"events": [one]}).status_code == 403
    assert post(client, tokens["admin"], {"events": [one] * 1000}).status_code == 200


def test_kafka_not_acknowledging_is_503_with_the_ids_to_retry(world) -> None:
    client, _, pub, tokens = world
    pub.fail = "_MSG_TIMED_OUT: Local: Message timed out"
    r = post(client, tokens["ingest"], {"events": [CALL]})
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    body = r.json()
    assert body["not_acknowledged"] == 1 and body["accepted"] == 0
    assert body["results"][0]["status"] == "not_acknowledged" and body["results"][0]["event_id"]


def test_health_needs_no_key(world) -> None:
    client, *_ = world
    assert client.get("/health").json() == {"status": "ok"}
