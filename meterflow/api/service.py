"""`meterflow serve`: the app wired to ClickHouse (as the `reader` role: the API writes nothing
there) and Kafka (as the `producer` principal), served by uvicorn on 127.0.0.1."""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from clickhouse_driver import Client
from clickhouse_driver.errors import Error as ClickHouseError
from clickhouse_driver.errors import NetworkError

from connectors import api_keys as key_table
from connectors import ledger
from connectors.clickhouse import has_events, read_windows
from meterflow.api.app import ApiConfig, Unavailable, create_app
from meterflow.api_keys import ApiKey
from meterflow.catalog import Catalog
from meterflow.invoicing import Line
from meterflow.meters import Meter
from meterflow.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_PORT = 8088


def api_port() -> int:
    return int(os.environ.get("METERFLOW_API_PORT", str(DEFAULT_PORT)))


def _guarded(fn: Callable[..., T]) -> Callable[..., T]:
    """A ClickHouse that cannot be reached is a 503 (Unavailable), not a 500; the connection is
    dropped so the next call reconnects."""

    @functools.wraps(fn)
    def wrapper(self: ClickHouseStore, *args: Any) -> T:
        try:
            return fn(self, *args)
        except (NetworkError, EOFError, OSError) as exc:
            self._reset()
            raise Unavailable(f"clickhouse: {exc}") from exc
        except ClickHouseError as exc:
            # e.g. a migration not applied (no api_keys table): an operator's problem, logged
            log.error("clickhouse query failed: %s", exc)
            self._reset()
            raise Unavailable(f"clickhouse: {exc}") from exc

    return wrapper


class ClickHouseStore:
    """The reads of the API, one clickhouse_driver client per thread (a client is not
    thread-safe and FastAPI runs handlers in a threadpool)."""

    def __init__(self, settings: Settings, meters: Sequence[Meter]) -> None:
        self._settings = settings
        self._db = settings.clickhouse_database
        self._meters = meters
        self._local = threading.local()

    @property
    def _ch(self) -> Client:
        from connectors.clickhouse import connect

        ch = getattr(self._local, "ch", None)
        if ch is None:
            ch = self._local.ch = connect(self._settings, self._db, role="reader")
        return ch

    def _reset(self) -> None:
        ch = getattr(self._local, "ch", None)
        self._local.ch = None
        if ch is not None:
            ch.disconnect()

    @_guarded
    def key(self, key_id: str) -> ApiKey | None:
        return key_table.key_by_id(self._ch, self._db, key_id)

    @_guarded
    def has_events(self, customer_id: str) -> bool:
        return has_events(self._ch, self._db, customer_id)

    @_guarded
    def windows(
        self,
        customer_id: str,
        meter: str | None,
        dimensions: dict[str, str],
        window_s: int | None,
        start: datetime | None,
        end: datetime | None,
        limit: int,
    ) -> list[Any]:
        return read_windows(
            self._ch, self._db, customer_id, meter, start, end, dimensions,
            window_s=window_s, limit=limit,
        )  # fmt: skip

    @_guarded
    def period_costs(self, customer_id: str, period_start: datetime) -> list[Any]:
        return ledger.period_costs(self._ch, self._db, customer_id, period_start)

    @_guarded
    def invoices(self, customer_id: str) -> list[Any]:
        return ledger.final_invoices(self._ch, self._db, customer_id)

    @_guarded
    def invoice(self, customer_id: str, invoice_id: str) -> Any | None:
        return ledger.final_invoice(self._ch, self._db, customer_id, invoice_id)

    @_guarded
    def lines(self, invoice_id: str) -> list[tuple[int, Line]]:
        return [(no, ln) for _, no, ln in ledger.lines(self._ch, self._db, invoice_id=invoice_id)]

    def explain(self, header: Any, lines: list[tuple[int, Line]]) -> str:
        from meterflow.cli.reports import InvoiceView, explain_view

        return explain_view(InvoiceView(header, lines), self._db, self._meters)


def build_app(settings: Settings, catalog: Catalog, ack_timeout_s: float = 10.0):
    from connectors.ingest import KafkaPublisher

    config = ApiConfig(catalog.subscriptions, catalog.book, catalog.meters)
    publisher = KafkaPublisher(settings, ack_timeout_s)
    app = create_app(config, ClickHouseStore(settings, catalog.meters), publisher)
    app.router.on_shutdown.append(publisher.close)
    return app


def serve(settings: Settings, catalog: Catalog, port: int, ack_timeout_s: float) -> None:
    import uvicorn

    # loopback only: the keys guard the data, but the stack's other services are loopback too
    # and a deployment puts a TLS-terminating proxy in front (docs/decisions/0020)
    uvicorn.run(
        build_app(settings, catalog, ack_timeout_s),
        host="127.0.0.1",
        port=port,
        log_level="info",
        access_log=True,
    )
