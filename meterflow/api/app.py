"""The HTTP layer: routes, keys, status codes. Everything it reads or sends goes through a
`Store` (ClickHouse: meterflow.api.service) and a `Publisher` (Kafka), so this module holds
no SQL and no client; decisions are the pure modules' (api_keys, entitlements, ingest).

Order of checks on every customer route: a key at all (401), a live key (401), may this key
read this customer (403), does the customer exist (404), then the data. A customer key asking
for another customer is refused before anything is looked up, so the answer says nothing about
whether that customer exists.
"""

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Protocol

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic.json_schema import models_json_schema
from starlette.concurrency import run_in_threadpool

from meterflow import api_keys
from meterflow.api import models as m
from meterflow.api.ingest import MAX_BODY_BYTES, BadRequest, judge_batch, parse_body
from meterflow.api_keys import Action, ApiKey, Denied
from meterflow.entitlements import Entitlement, entitlement
from meterflow.events import UsageEvent
from meterflow.invoicing import Line
from meterflow.meters import Meter
from meterflow.money import currency, format_amount, round_amount
from meterflow.price_book import PriceBook, PriceLookupError
from meterflow.rating import period_plan
from meterflow.subscriptions import (
    Period,
    Subscription,
    active_subscription,
    period_at,
    subscriptions_by_customer,
)

log = logging.getLogger(__name__)

API_VERSION = "1.0.0"
WINDOWS = {"minute": 60, "hour": 3600, "day": 86400}


class Unavailable(Exception):
    """A backing service (ClickHouse) cannot answer now: HTTP 503 with Retry-After."""


class Store(Protocol):
    """What the API reads (meterflow.api.service.ClickHouseStore)."""

    def key(self, key_id: str) -> ApiKey | None: ...
    def has_events(self, customer_id: str) -> bool: ...
    def windows(
        self,
        customer_id: str,
        meter: str | None,
        dimensions: dict[str, str],
        window_s: int | None,
        start: datetime | None,
        end: datetime | None,
        limit: int,
    ) -> list[Any]: ...
    def period_costs(self, customer_id: str, period_start: datetime) -> list[Any]: ...
    def invoices(self, customer_id: str) -> list[Any]: ...
    def invoice(self, customer_id: str, invoice_id: str) -> Any | None: ...
    def lines(self, invoice_id: str) -> list[tuple[int, Line]]: ...
    def explain(self, header: Any, lines: list[tuple[int, Line]]) -> str: ...


class Publisher(Protocol):
    def publish(self, events: Sequence[UsageEvent], record_ts: int) -> list[str | None]: ...


@dataclass
class ApiConfig:
    subscriptions: Sequence[Subscription]
    book: PriceBook
    meters: Sequence[Meter]
    # verified keys are remembered this long: a revocation takes effect within it
    key_cache_s: float = 5.0
    retry_after_s: int = 5
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


def dec(d: Decimal) -> str:
    """A quantity as JSON: plain digits, no exponent, no trailing zeros."""
    return f"{d.normalize():f}" if d else "0"


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


class _KeyCache:
    def __init__(self, store: Store, ttl_s: float) -> None:
        self._store, self._ttl = store, ttl_s
        self._seen: dict[str, tuple[float, ApiKey]] = {}
        self._lock = threading.Lock()

    def lookup(self, key_id: str) -> ApiKey | None:
        now = time.monotonic()
        with self._lock:
            hit = self._seen.get(key_id)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        key = self._store.key(key_id)
        with self._lock:
            if key is not None and not key.revoked:
                self._seen[key_id] = (now, key)
            else:
                self._seen.pop(key_id, None)
        return key


def create_app(config: ApiConfig, store: Store, publisher: Publisher) -> FastAPI:
    app = FastAPI(
        title="meterflow",
        version=API_VERSION,
        description="Usage ingest, usage and cost queries, entitlements and invoices. Every "
        "/v1 route takes `Authorization: Bearer <key>` (`meterflow keys create`).",
    )
    keys = _KeyCache(store, config.key_cache_s)
    meter_ids = {mt.id for mt in config.meters}
    subs_by_customer = subscriptions_by_customer(config.subscriptions)
    unauthorized = {"model": m.Error, "description": "no key, or a malformed/unknown/revoked one"}
    forbidden = {"model": m.Error, "description": "the key may not do this"}
    not_found = {"model": m.Error, "description": "no such customer (or invoice, or meter)"}
    unavailable = {"model": m.Error, "description": "a backing service is down: retry later"}
    read_errors: dict[int | str, dict[str, Any]] = {
        401: unauthorized, 403: forbidden, 404: not_found, 503: unavailable,
    }  # fmt: skip

    @app.exception_handler(Unavailable)
    async def _unavailable(_req: Request, exc: Unavailable) -> JSONResponse:
        log.warning("backing service unavailable: %s", exc)
        return JSONResponse(
            {"detail": "a backing service is unavailable; retry later"},
            status_code=503,
            headers={"Retry-After": str(config.retry_after_s)},
        )

    def authenticate(request: Request) -> ApiKey:
        header = request.headers.get("authorization")
        challenge = {"WWW-Authenticate": "Bearer"}
        if not header:
            raise HTTPException(401, "missing Authorization: Bearer <key>", challenge)
        scheme, _, token = header.partition(" ")
        key_id = api_keys.key_id_of(token.strip()) if scheme.lower() == "bearer" else None
        if key_id is None:
            raise HTTPException(401, "malformed key", challenge)
        key = api_keys.verify(token.strip(), keys.lookup(key_id))
        if key is None:
            raise HTTPException(401, "unknown or revoked key", challenge)
        return key

    Key = Annotated[ApiKey, Depends(authenticate)]
    CustomerId = Annotated[str, Path(min_length=1, max_length=256)]

    def readable(key: ApiKey, customer_id: str) -> None:
        try:
            api_keys.authorize(key, Action.READ, customer_id)
        except Denied as exc:
            raise HTTPException(403, str(exc)) from None
        if customer_id not in subs_by_customer and not store.has_events(customer_id):
            raise HTTPException(404, "no such customer")

    def current(customer_id: str, now: datetime) -> tuple[Subscription, Period] | None:
        sub = active_subscription(subs_by_customer.get(customer_id, []), now)
        period = period_at(sub, now) if sub is not None else None
        return (sub, period) if sub is not None and period is not None else None

    def entitlements_of(customer_id: str, now: datetime) -> tuple[Period | None, list[Entitlement]]:
        cur = current(customer_id, now)
        if cur is None:
            return None, []
        sub, period = cur
        try:
            _plan, version = period_plan(sub, period, config.book)
        except PriceLookupError:
            return period, []
        used: dict[str, Decimal] = {}
        # the newest meter version's row: the definition the stream rates the period with now
        for pc in sorted(store.period_costs(customer_id, period.start), key=_version):
            used[pc.meter] = pc.quantity
        return period, [
            entitlement(meter, version.quotas.get(meter), used.get(meter, Decimal(0)))
            for meter in sorted(version.charges)
        ]

    @app.get("/health", response_model=m.Health, tags=["service"])
    def health() -> m.Health:
        return m.Health(status="ok")

    @app.post(
        "/v1/events",
        response_model=m.IngestResponse,
        tags=["ingest"],
        summary="send a batch of up to 1,000 usage events",
        description="Answers once every accepted event is acknowledged by Kafka (acks=all). "
        "Each event is judged on its own: the response lists accepted and rejected events in "
        "request order. A 503 means some accepted events were not acknowledged in time: send "
        "the same request again (with the event ids of the response for events that had none); "
        "an event id is counted once.",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/EventBatch"}}
                },
            }
        },
        responses={
            400: {"model": m.Error, "description": 'not JSON, or not {"events": [...]}'},
            401: unauthorized,
            403: forbidden,
            413: {"model": m.Error, "description": "body over 4 MiB or over 1,000 events"},
            503: {"model": m.IngestResponse, "description": "Kafka did not acknowledge in time"},
        },
    )
    async def ingest(request: Request, key: Key) -> Any:
        try:
            api_keys.authorize(key, Action.INGEST)
        except Denied as exc:
            raise HTTPException(403, str(exc)) from None
        body = await _read_body(request)
        try:
            items = parse_body(body)
        except BadRequest as exc:
            raise HTTPException(413 if exc.too_large else 400, str(exc)) from None
        now = config.now()
        verdicts = judge_batch(items, config.meters, now)
        accepted = [v for v in verdicts if v.event is not None]
        # a blocking wait on Kafka: off the event loop
        failures = await run_in_threadpool(
            publisher.publish, [v.event for v in accepted if v.event is not None], _ms(now)
        )
        unacked = {v.index: why for v, why in zip(accepted, failures, strict=True) if why}
        results = []
        for v in verdicts:
            if v.index in unacked:
                results.append(
                    m.EventResult(
                        index=v.index, event_id=v.event_id, status="not_acknowledged",
                        reason="NOT_ACKNOWLEDGED", detail=unacked[v.index],
                    )
                )  # fmt: skip
            elif v.accepted:
                results.append(m.EventResult(index=v.index, event_id=v.event_id, status="accepted"))
            else:
                results.append(
                    m.EventResult(
                        index=v.index, event_id=v.event_id, status="rejected",
                        reason=v.reason, detail=v.detail,
                    )
                )  # fmt: skip
        out = m.IngestResponse(
            accepted=len(accepted) - len(unacked),
            rejected=len(verdicts) - len(accepted),
            not_acknowledged=len(unacked),
            results=results,
        )
        if unacked:
            return JSONResponse(
                out.model_dump(mode="json"),
                status_code=503,
                headers={"Retry-After": str(config.retry_after_s)},
            )
        return out

    @app.get(
        "/v1/customers/{customer_id}/usage",
        response_model=m.UsageResponse,
        tags=["usage"],
        summary="usage windows (newest revision) of a customer",
        responses=read_errors,
    )
    def usage(
        customer_id: CustomerId,
        key: Key,
        meter: Annotated[str | None, Query(max_length=256)] = None,
        dimension: Annotated[
            list[str], Query(description="key=value, repeatable", max_length=16)
        ] = [],  # noqa: B006 -- FastAPI copies defaults per request
        window: Literal["minute", "hour", "day"] | None = None,
        start: Annotated[datetime | None, Query(alias="from")] = None,
        end: Annotated[datetime | None, Query(alias="to")] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> m.UsageResponse:
        readable(key, customer_id)
        if meter is not None and meter not in meter_ids:
            raise HTTPException(404, f"no meter {meter!r}")
        dims = {}
        for item in dimension:
            k, sep, v = item.partition("=")
            if not sep or not k:
                raise HTTPException(422, f"dimension {item!r}: expected key=value")
            dims[k] = v
        start, end = _utc(start), _utc(end)
        if start and end and end <= start:
            raise HTTPException(422, "`to` must be after `from`")
        rows = store.windows(
            customer_id, meter, dims, WINDOWS[window] if window else None, start, end, limit + 1
        )
        return m.UsageResponse(
            customer_id=customer_id,
            windows=[
                m.UsageWindowOut(
                    meter=w.meter,
                    meter_version=w.meter_version,
                    dimensions=json.loads(w.dimensions) if w.dimensions else {},
                    window_start=w.window_start,
                    window_end=w.window_end,
                    event_count=w.event_count,
                    quantity=dec(w.quantity),
                )
                for w in rows[:limit]
            ],
            truncated=len(rows) > limit,
        )

    @app.get(
        "/v1/customers/{customer_id}/cost",
        response_model=m.CostResponse,
        tags=["usage"],
        summary="cost so far in the current billing period, per meter, from the stream",
        responses=read_errors,
    )
    def cost(customer_id: CustomerId, key: Key) -> m.CostResponse:
        readable(key, customer_id)
        now = config.now()
        cur = current(customer_id, now)
        if cur is None:
            return m.CostResponse(
                customer_id=customer_id, subscription_id=None, plan=None, price_version=None,
                currency=None, period_start=None, period_end=None, as_of=now, meters=[],
            )  # fmt: skip
        sub, period = cur
        plan, version = period_plan(sub, period, config.book)
        cur_ = plan.currency
        meters = []
        total = Decimal(0)
        for pc in store.period_costs(customer_id, period.start):
            rounded = round_amount(pc.amount, cur_) if pc.amount is not None else None
            total += rounded or 0
            quota = version.quotas.get(pc.meter)
            ent = entitlement(pc.meter, quota, pc.quantity) if quota else None
            meters.append(
                m.MeterCost(
                    meter=pc.meter,
                    meter_version=pc.meter_version,
                    quantity=dec(pc.quantity),
                    amount=dec(pc.amount) if pc.amount is not None else None,
                    amount_rounded=format_amount(rounded, cur_) if rounded is not None else None,
                    quota=_quota(ent) if ent else None,
                )
            )
        return m.CostResponse(
            customer_id=customer_id,
            subscription_id=sub.id,
            plan=plan.id,
            price_version=version.version,
            currency=cur_.code,
            period_start=period.start,
            period_end=period.end,
            as_of=now,
            meters=meters,
            total_rounded=format_amount(total, cur_),
        )

    @app.get(
        "/v1/customers/{customer_id}/entitlements",
        response_model=m.EntitlementsResponse,
        tags=["entitlements"],
        summary="every charged meter of the current plan: quota, used, remaining, allowed",
        responses=read_errors,
    )
    def entitlements(customer_id: CustomerId, key: Key) -> m.EntitlementsResponse:
        readable(key, customer_id)
        now = config.now()
        period, ents = entitlements_of(customer_id, now)
        return m.EntitlementsResponse(
            customer_id=customer_id,
            period_start=period.start if period else None,
            period_end=period.end if period else None,
            as_of=now,
            entitlements=[_entitlement(e) for e in ents],
        )

    @app.get(
        "/v1/customers/{customer_id}/entitlements/{meter}",
        response_model=m.EntitlementOut,
        tags=["entitlements"],
        summary="may the customer still use this meter's feature (allowed)",
        responses=read_errors,
    )
    def entitlement_one(
        customer_id: CustomerId, meter: Annotated[str, Path(max_length=256)], key: Key
    ) -> m.EntitlementOut:
        readable(key, customer_id)
        if meter not in meter_ids:
            raise HTTPException(404, f"no meter {meter!r}")
        _period, ents = entitlements_of(customer_id, config.now())
        found = next((e for e in ents if e.meter == meter), None)
        # a meter the plan does not charge has no quota: nothing to refuse
        return _entitlement(found or entitlement(meter, None, Decimal(0)))

    @app.get(
        "/v1/customers/{customer_id}/invoices",
        response_model=m.InvoicesResponse,
        tags=["invoices"],
        summary="the customer's final invoices",
        responses=read_errors,
    )
    def invoices(customer_id: CustomerId, key: Key) -> m.InvoicesResponse:
        readable(key, customer_id)
        return m.InvoicesResponse(
            customer_id=customer_id, invoices=[_summary(h) for h in store.invoices(customer_id)]
        )

    @app.get(
        "/v1/customers/{customer_id}/invoices/{invoice_id}",
        response_model=m.InvoiceResponse,
        tags=["invoices"],
        summary="one final invoice with its lines and explanation",
        responses=read_errors,
    )
    def invoice(
        customer_id: CustomerId,
        invoice_id: Annotated[str, Path(min_length=1, max_length=256)],
        key: Key,
    ) -> m.InvoiceResponse:
        readable(key, customer_id)
        h = store.invoice(customer_id, invoice_id)
        if h is None:
            raise HTTPException(404, "no such invoice")
        lines = store.lines(invoice_id)
        return m.InvoiceResponse(
            customer_id=customer_id,
            invoice=_summary(h),
            lines=[_line(no, ln) for no, ln in lines],
            explanation=store.explain(h, lines),
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        # The ingest body is read by hand (per-event verdicts, byte limit): its schema is
        # added here so the description still documents it.
        _, defs = models_json_schema(
            [(m.EventBatch, "validation")], ref_template="#/components/schemas/{model}"
        )
        schema.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
        schema["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "meterflow keys create"}
        }
        for path, ops in schema["paths"].items():
            if path.startswith("/v1/"):
                for op in ops.values():
                    op["security"] = [{"bearer": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def _read_body(request: Request) -> bytes:
    """The body, refusing more than MAX_BODY_BYTES without reading past it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(413, f"body is {declared} bytes, limit {MAX_BODY_BYTES}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HTTPException(413, f"body is over the {MAX_BODY_BYTES}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _utc(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _version(pc: Any) -> int:
    return pc.meter_version


def _quota(e: Entitlement) -> m.QuotaOut:
    assert e.limit is not None and e.remaining is not None
    return m.QuotaOut(
        limit=dec(e.limit),
        hard_cap=e.hard_cap,
        remaining=dec(e.remaining),
        threshold_pct=e.threshold_pct,
        allowed=e.allowed,
    )


def _entitlement(e: Entitlement) -> m.EntitlementOut:
    return m.EntitlementOut(
        meter=e.meter,
        used=dec(e.used),
        limit=dec(e.limit) if e.limit is not None else None,
        remaining=dec(e.remaining) if e.remaining is not None else None,
        hard_cap=e.hard_cap,
        threshold_pct=e.threshold_pct,
        allowed=e.allowed,
    )


def _money(amount: Decimal, code: str) -> str:
    try:
        return format_amount(amount, currency(code))
    except ValueError:
        return dec(amount)


def _summary(h: Any) -> m.InvoiceSummary:
    return m.InvoiceSummary(
        invoice_id=h.invoice_id,
        subscription_id=h.subscription_id,
        plan=h.plan,
        price_version=h.price_version,
        currency=h.currency,
        period_start=h.period_start,
        period_end=h.period_end,
        subtotal=_money(h.subtotal, h.currency),
        credits=_money(h.credits, h.currency),
        total=_money(h.total, h.currency),
        closed_at=h.closed_at,
    )


def _line(no: int, ln: Line) -> m.InvoiceLineOut:
    return m.InvoiceLineOut(
        line_no=no,
        kind=ln.kind,
        meter=ln.meter,
        meter_version=ln.meter_version,
        dimensions=ln.dimensions,
        plan=ln.plan,
        price_version=ln.price_version,
        pricing=ln.pricing,
        quantity=dec(ln.quantity),
        amount=dec(ln.amount),
        event_count=ln.event_count,
        events_digest=ln.events_digest,
        refers_to=ln.refers_to,
        detail=ln.detail,
        period_start=ln.period_start,
        period_end=ln.period_end,
    )
