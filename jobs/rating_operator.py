"""The metering job's rating operator: window firings in, rated rows out (side output).

Its own module so that PyFlink pickles it by reference when the job runs as `__main__`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

import pandas as pd
from pyflink.common import Row, Types
from pyflink.datastream import KeyedProcessFunction, OutputTag, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from meterflow.meters import Aggregation, load_meters

WINDOW_FIELDS = (
    ("meter", Types.STRING()),
    ("meter_version", Types.INT()),
    ("customer_id", Types.STRING()),
    ("dims", Types.STRING()),
    ("ws", Types.SQL_TIMESTAMP()),
    ("we", Types.SQL_TIMESTAMP()),
    ("n", Types.LONG()),
    ("s", Types.STRING()),
    ("mn", Types.STRING()),
    ("mx", Types.STRING()),
    ("uc", Types.LONG()),
    ("lk", Types.STRING()),
)
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


RATED = OutputTag("rated", row_type(RATED_FIELDS))


class RateWindows(KeyedProcessFunction):
    """Passes every window firing on and, when the customer's plan charges for the meter, emits
    a rated row (side output) with the window's telescoping amount. Keyed by (customer, meter,
    meter version): a charge prices the meter's total over its dimensions. The key's open
    periods live in checkpointed state."""

    def __init__(self, meters_file: str, subscriptions_file: str, prices_file: str) -> None:
        self.files = (meters_file, subscriptions_file, prices_file)

    def open(self, runtime_context: RuntimeContext) -> None:
        from meterflow.pricing import load_price_book
        from meterflow.rating import Rater
        from meterflow.subscriptions import load_subscriptions

        meters_file, subs_file, prices_file = self.files
        self.aggregations = {m.id: m.aggregation for m in load_meters(meters_file)}
        self.rater = Rater(load_subscriptions(subs_file), load_price_book(prices_file))
        self.state = runtime_context.get_state(
            ValueStateDescriptor("line", Types.PICKLED_BYTE_ARRAY())
        )
        metrics = runtime_context.get_metrics_group()
        self.rated = metrics.counter("windows_rated")
        self.unrated = metrics.counter("windows_unrated")

    def process_element(self, row: Row, ctx: KeyedProcessFunction.Context):
        import decimal

        from meterflow.rating import LineState, WindowPartials, period_price, rateable

        yield row
        meter, version, customer, dims, ws, we, n, s, mn, mx, _, lk = row
        ws_utc = ws.replace(tzinfo=UTC)
        aggregation = self.aggregations[meter]
        rc = self.rater.context(customer, meter, ws_utc)
        if rc is None or not rateable(aggregation, rc.model):
            self.unrated.inc()
            return
        with decimal.localcontext() as dc:
            dc.prec = 80  # quantities have up to 38 digits; amounts must not round here
            state = self.state.value() or LineState()
            period_s = int(rc.period.start.timestamp())
            amount, pq = state.fire(
                period_s,
                (int(ws_utc.timestamp()), dims),
                WindowPartials(n, dec(s), dec(mn), dec(mx), lk),
                aggregation,
                rc.model,
            )
            windows = state.periods[period_s]
            # Older periods can no longer change: allowed lateness is minutes, not months.
            state.forget_before(period_s - 100 * 86400)
            self.state.update(state)
            quantity = window_quantity_of(aggregation, n, dec(s), dec(mn), dec(mx), row[10], lk)
            yield RATED, Row(
                customer, rc.subscription.id,
                rc.period.start.replace(tzinfo=None), rc.period.end.replace(tzinfo=None),
                meter, version, dims, ws, we, rc.plan, rc.price_version, rc.currency,
                str(quantity), str(pq), _q18(amount), _q18(period_price(rc.model, pq)), n,
                sum(w.n for w in windows.values()),
            )  # fmt: skip
        self.rated.inc()


def _q18(d) -> str:
    from decimal import Decimal

    return str(d.quantize(Decimal("1e-18")))


def dec(text):
    from decimal import Decimal

    return None if text is None or (not isinstance(text, str) and pd.isna(text)) else Decimal(text)


def window_quantity_of(aggregation: Aggregation, n, s, mn, mx, uc, lk):
    from meterflow.aggregation import Partials, window_quantity

    return window_quantity(aggregation, Partials(int(n), s, mn, mx, uc, lk))
