"""The metering job's Python DataStream operators and the rows they hand on.

`RateWindows`: window firings in, rated rows out, quota alerts as a side output. `CreditAlerts`:
rated rows in, prepaid-credit alerts out. `AlertCodec`: alerts as Confluent-framed Avro for the
alerts topic. `RATED_FIELDS` and `ALERT_FIELDS` name and type those rows; every stage reads
them by field name.

Its own module so that PyFlink pickles these by reference when the job runs as `__main__`.
"""

from __future__ import annotations

import decimal
from collections.abc import Sequence
from datetime import UTC
from decimal import Decimal

import pandas as pd
from pyflink.common import Row, RowKind, Types
from pyflink.datastream import KeyedProcessFunction, OutputTag, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from meterflow.aggregation import Partials, window_quantity
from meterflow.alerts import Alert, Quota, crossed
from meterflow.credits import balances
from meterflow.meters import load_meters
from meterflow.rating import FoldedWindow, LineState, period_charge, rateable
from meterflow.settings import Settings
from meterflow.wire import confluent_frame

RATED_FIELDS = (
    ("customer_id", Types.STRING()),
    ("subscription_id", Types.STRING()),
    ("period_start", Types.SQL_TIMESTAMP()),
    ("period_end", Types.SQL_TIMESTAMP()),
    ("meter", Types.STRING()),
    ("meter_version", Types.INT()),
    ("dims", Types.STRING()),
    ("ws", Types.SQL_TIMESTAMP()),
    ("we", Types.SQL_TIMESTAMP()),
    ("plan", Types.STRING()),
    ("price_version", Types.INT()),
    ("currency", Types.STRING()),
    ("quantity", Types.STRING()),
    ("period_quantity", Types.STRING()),
    ("amount", Types.STRING()),
    ("period_amount", Types.STRING()),
    ("revision", Types.LONG()),
    ("period_revision", Types.LONG()),
)
RATED_COLUMNS = tuple(name for name, _ in RATED_FIELDS)


def row_type(fields: Sequence[tuple[str, object]]):
    return Types.ROW_NAMED([n for n, _ in fields], [t for _, t in fields])


ALERT_FIELDS = (
    ("alert_id", Types.STRING()),
    ("customer_id", Types.STRING()),
    ("subscription_id", Types.STRING()),
    ("meter", Types.STRING()),
    ("period_start", Types.SQL_TIMESTAMP()),
    ("period_end", Types.SQL_TIMESTAMP()),
    ("threshold_pct", Types.INT()),
    ("quantity", Types.STRING()),
    ("quota", Types.STRING()),
    ("hard_cap", Types.BOOLEAN()),
    ("window_start", Types.SQL_TIMESTAMP()),
    ("payload", Types.PRIMITIVE_ARRAY(Types.BYTE())),  # Confluent-Avro bytes for the topic
)
ALERT_COLUMNS = tuple(name for name, _ in ALERT_FIELDS)
ALERTS = OutputTag("alerts", row_type(ALERT_FIELDS))


class RateWindows(KeyedProcessFunction):
    """Window firings (the aggregation's changelog) in; when the customer's plan charges for
    the meter, a rated row with the window's telescoping amount out, and quota alerts as a side
    output. Keyed by (customer, meter,
    meter version): a charge prices the meter's total over its dimensions. The key's open
    periods live in checkpointed state."""

    def __init__(
        self,
        meters_file: str,
        subscriptions_file: str,
        prices_file: str,
        settings: Settings,
        allowed_lateness_s: int,
    ) -> None:
        self.files = (meters_file, subscriptions_file, prices_file)
        self.settings = settings
        self.allowed_lateness_s = allowed_lateness_s

    def open(self, runtime_context: RuntimeContext) -> None:
        from meterflow.price_book import load_price_book
        from meterflow.rating import Rater
        from meterflow.subscriptions import load_subscriptions

        meters_file, subs_file, prices_file = self.files
        self.aggregations = {m.id: m.aggregation for m in load_meters(meters_file)}
        self.rater = Rater(load_subscriptions(subs_file), load_price_book(prices_file))
        self.state = runtime_context.get_state(
            ValueStateDescriptor("line", Types.PICKLED_BYTE_ARRAY())
        )
        self.alert_codec = None  # registered on the first alert: most jobs never fire one
        metrics = runtime_context.get_metrics_group()
        self.alerts_fired = metrics.counter("alerts_fired")
        self.rated = metrics.counter("windows_rated")
        self.unrated = metrics.counter("windows_unrated")
        self.folded_refirings = metrics.counter("windows_refired_after_fold")

    def process_element(self, row: Row, ctx: KeyedProcessFunction.Context):
        # A late firing arrives as -U (the old result) then +U: the +U carries the new partials.
        if row.get_row_kind() == RowKind.UPDATE_BEFORE:
            return
        meter, customer, ws, we = row["meter"], row["customer_id"], row["ws"], row["we"]
        ws_utc = ws.replace(tzinfo=UTC)
        aggregation = self.aggregations[meter]
        rc = self.rater.context(customer, meter, ws_utc)
        if rc is None or not rateable(aggregation):
            self.unrated.inc()
            return
        with decimal.localcontext() as dc:
            dc.prec = 80  # quantities have up to 38 digits; amounts must not round here
            partials = Partials(
                event_count=int(row["n"]),
                q_sum=dec(row["s"]),
                q_min=dec(row["mn"]),
                q_max=dec(row["mx"]),
                unique_count=row["uc"],
                latest_key=row["lk"],
                fee_sum=dec(row["fs"]),
            )
            state = self.state.value() or LineState()
            period_s = int(rc.period.start.timestamp())
            try:
                amount, pq = state.fire(
                    period_s,
                    (int(ws_utc.timestamp()), row["dims"]),
                    partials,
                    aggregation,
                    rc.model,
                )
            except FoldedWindow:
                # Only after a restore rebuilt the watermark from replayed records; the close
                # bills from stored events and reconciliation reports the gap.
                self.folded_refirings.inc()
                return
            # Windows the watermark has passed by more than the allowed lateness cannot fire
            # again: fold them so the state stays small.
            wm_ms = ctx.timer_service().current_watermark()
            size_s = int((we - ws).total_seconds())
            if wm_ms > 0:
                state.fold(wm_ms // 1000 - self.allowed_lateness_s - size_s)
            charge_now = period_charge(rc.model, aggregation, state.all_windows(period_s))
            events_now = state.period_total_events(period_s)
            due = state.alerts_due(period_s, pq, rc.quota) if rc.quota is not None else []
            # Older periods can no longer change: allowed lateness is minutes, not months.
            state.forget_before(period_s - 100 * 86400)
            self.state.update(state)
            for pct in due:
                yield ALERTS, self._alert_row(rc, meter, pct, pq, ws)
            # keyword order = RATED_FIELDS order: the row coder then takes the values as they are
            yield Row(
                customer_id=customer,
                subscription_id=rc.subscription.id,
                period_start=rc.period.start.replace(tzinfo=None),
                period_end=rc.period.end.replace(tzinfo=None),
                meter=meter,
                meter_version=row["meter_version"],
                dims=row["dims"],
                ws=ws,
                we=we,
                plan=rc.plan,
                price_version=rc.price_version,
                currency=rc.currency,
                quantity=str(window_quantity(aggregation, partials)),
                period_quantity=str(pq),
                amount=_q18(amount),
                period_amount=_q18(charge_now),
                revision=row["n"],
                period_revision=events_now,
            )
        self.rated.inc()

    def _alert_row(self, rc, meter: str, pct: int, quantity, ws) -> Row:
        if self.alert_codec is None:
            self.alert_codec = AlertCodec(self.settings)
        assert rc.quota is not None
        alert = Alert(
            rc.subscription.customer_id, rc.subscription.id, meter, rc.period.start,
            rc.period.end, pct, quantity, rc.quota.limit, rc.quota.hard_cap,
        )  # fmt: skip
        self.alerts_fired.inc()
        return Row(
            alert_id=alert.alert_id,
            customer_id=alert.customer_id,
            subscription_id=alert.subscription_id,
            meter=meter,
            period_start=rc.period.start.replace(tzinfo=None),
            period_end=rc.period.end.replace(tzinfo=None),
            threshold_pct=pct,
            quantity=str(quantity),
            quota=str(rc.quota.limit),
            hard_cap=rc.quota.hard_cap,
            window_start=ws,
            payload=self.alert_codec.encode(alert, ws.replace(tzinfo=UTC)),
        )


class CreditAlerts(KeyedProcessFunction):
    """Keyed by customer, fed every rated row: the customer's cost so far in a period (the
    latest `period_amount` of each meter) against its usable prepaid credit at the period's
    start; alerts at 75/90/100 %, once per period (thresholds kept in checkpointed state).

    The credit balance is read when the job starts (grants file minus the applications of final
    invoices): a close that consumes credit is reflected after the next job restart."""

    CREDIT_METER = "credit_balance"

    def __init__(self, credits_file: str, settings: Settings) -> None:
        self.credits_file = credits_file
        self.settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        from connectors import ledger
        from connectors.clickhouse import connect
        from meterflow.credits import load_grants

        self.grants: dict = {}
        for g in load_grants(self.credits_file):
            self.grants.setdefault(g.customer_id, []).append(g)
        db = self.settings.clickhouse_database
        self.applications = ledger.applications(connect(self.settings, db, role="loader"), db)
        self.state = runtime_context.get_state(
            ValueStateDescriptor("credit", Types.PICKLED_BYTE_ARRAY())
        )
        self.alert_codec = None
        self.alerts_fired = runtime_context.get_metrics_group().counter("credit_alerts_fired")

    def process_element(self, row: Row, ctx: KeyedProcessFunction.Context):
        customer = row["customer_id"]
        grants = self.grants.get(customer)
        if not grants:
            return
        sub_id, meter = row["subscription_id"], row["meter"]
        ps, pe = row["period_start"], row["period_end"]
        currency, period_amount = row["currency"], dec(row["period_amount"])
        period_revision, ws = row["period_revision"], row["ws"]
        start = ps.replace(tzinfo=UTC)
        mine = [g for g in grants if g.currency == currency]
        usable = sum(
            (b.usable_amount for b in balances(mine, self.applications, start).values()),
            Decimal(0),
        )
        if usable <= 0:
            return
        with decimal.localcontext() as dc:
            dc.prec = 80
            state = self.state.value() or {}
            period_s = int(start.timestamp())
            per = state.setdefault(period_s, {"costs": {}, "alerted": set()})
            # a meter's newest firing states its period amount (order-independent)
            if period_revision >= per["costs"].get(meter, (-1, None))[0]:
                per["costs"][meter] = (period_revision, period_amount)
            cost = sum((a for _, a in per["costs"].values()), Decimal(0))
            due = crossed(cost, Quota(usable), per["alerted"])
            per["alerted"].update(due)
            for p in [p for p in state if p < period_s - 100 * 86400]:
                del state[p]
            self.state.update(state)
        if due and self.alert_codec is None:
            self.alert_codec = AlertCodec(self.settings)
        for pct in due:
            alert = Alert(
                customer, sub_id, self.CREDIT_METER, start, pe.replace(tzinfo=UTC), pct, cost,
                usable, False,
            )  # fmt: skip
            self.alerts_fired.inc()
            yield Row(
                alert_id=alert.alert_id,
                customer_id=customer,
                subscription_id=sub_id,
                meter=self.CREDIT_METER,
                period_start=ps,
                period_end=pe,
                threshold_pct=pct,
                quantity=str(cost),
                quota=str(usable),
                hard_cap=False,
                window_start=ws,
                payload=self.alert_codec.encode(alert, ws.replace(tzinfo=UTC)),
            )


class AlertCodec:
    """Alerts in the Confluent wire format, with the schema registered under the alerts
    subject (idempotent), so any Avro consumer with a registry client can read the topic."""

    def __init__(self, settings: Settings) -> None:
        import json

        import fastavro

        from connectors.registry import register_alert_schema
        from meterflow.settings import REPO_ROOT

        self.schema_id = register_alert_schema(settings)
        text = (REPO_ROOT / "schemas" / "alert" / "v1.avsc").read_text()
        self.schema = fastavro.parse_schema(json.loads(text))

    def encode(self, alert, window_start) -> bytes:
        import io

        import fastavro

        body = io.BytesIO()
        fastavro.schemaless_writer(
            body,
            self.schema,
            {
                "alert_id": alert.alert_id,
                "customer_id": alert.customer_id,
                "subscription_id": alert.subscription_id,
                "meter": alert.meter,
                "period_start": alert.period_start,
                "period_end": alert.period_end,
                "threshold_pct": alert.threshold_pct,
                "quantity": str(alert.quantity),
                "limit": str(alert.limit),
                "hard_cap": alert.hard_cap,
                "window_start": window_start,
            },
        )
        return confluent_frame(self.schema_id, body.getvalue())


def _q18(d) -> str:
    return str(d.quantize(Decimal("1e-18")))


def dec(text):
    return None if text is None or (not isinstance(text, str) and pd.isna(text)) else Decimal(text)
