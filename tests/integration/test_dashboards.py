"""Every query of the Grafana dashboards runs and returns data (Grafana itself is not installed).

- ClickHouse panels (customer-usage.json) and its template-variable queries: Grafana's variables
  are substituted as Grafana would ($__from/$__to/$__interval_ms in ms, ${customer:singlequote},
  ${meter:singlequote}, and ${database}: the dashboards name every table `${database}.<table>`,
  a hidden textbox variable defaulting to `meterflow`, which this test sets to the scratch
  database). Each query runs on the 18.16 server against seeded rows and must return rows of the
  expected column types, and on the modern engine (chdb) against the same schema.
- Prometheus panels (pipeline-health.json): a real metering job (rating on) and the ledger
  exporter run against a scratch topic and database while the stack's Prometheus (started by
  `infra/stack.sh up`) scrapes them; every expression, with $job set to this job, must return a
  non-empty instant vector and range matrix. Alert expressions must evaluate too.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import yaml

from connectors.clickhouse import connect, migrations
from connectors.kafka_admin import delete_topics
from connectors.loader import routes
from connectors.producer import produce_raw
from meterflow.settings import REPO_ROOT
from meterflow.testing.scenario import Scenario, ScenarioConfig, flush_phase, generate
from tests.integration.conftest import Scratch, kill_job

DASHBOARDS = REPO_ROOT / "infra" / "grafana" / "dashboards"
RULES = REPO_ROOT / "infra" / "prometheus" / "rules.yml"
PROMETHEUS = f"http://127.0.0.1:{os.environ.get('PROMETHEUS_PORT', '9090')}"
EXPORTER_PORT = int(os.environ.get("METERFLOW_EXPORTER_PORT", "9464"))
LOADER_PORT = int(os.environ.get("METERFLOW_LOADER_PORT", "9465"))
CH_TYPE = "grafana-clickhouse-datasource"

# Column types each ClickHouse query returns (panel title, or "variable <name>").
EXPECTED_TYPES: dict[str, str] = {
    "Cost so far this period": "String Float64",
    "This period per meter (usage vs plan)": (
        "String UInt32 String UInt32 String Float64 Float64 DateTime"
    ),
    "Usage alerts this period": "String UInt8 Float64 Float64 UInt8 DateTime",
    "Usage per window by meter and dimensions": "DateTime String Float64",
    "Events per window by meter": "DateTime String UInt64",
    "Rated cost per window by meter": "DateTime String Float64",
    "Usage in range by meter and dimensions": (
        "String UInt32 String UInt64 UInt64 Float64 DateTime DateTime"
    ),
    "Raw events stored (accepted and late)": "DateTime String UInt64",
    "Invoices": (
        "String DateTime DateTime String UInt32 String Float64 Float64 Float64 UInt32 DateTime"
    ),
    "Invoice lines": "String UInt32 String String UInt32 String Float64 Float64 UInt64 String",
    "Prepaid credits consumed": "String String UInt64 Float64 DateTime",
    "variable customer": "String",
    "variable meter": "String",
}


def load(name: str) -> dict:
    return json.loads((DASHBOARDS / name).read_text())


def clickhouse_queries(dash: dict) -> list[tuple[str, str]]:
    out = [
        (f"variable {v['name']}", v["query"])
        for v in dash["templating"]["list"]
        if v.get("datasource", {}).get("type") == CH_TYPE
    ]
    for p in dash["panels"]:
        for t in p["targets"]:
            if t["datasource"]["type"] == CH_TYPE:
                assert t["editorType"] == "sql" and t["format"] in (0, 1), p["title"]
                out.append((p["title"], t["rawSql"]))
    return out


def prometheus_exprs(dash: dict) -> list[tuple[str, str]]:
    return [
        (f"{p['title']} [{t['refId']}]", t["expr"])
        for p in dash["panels"]
        for t in p["targets"]
        if t["datasource"]["type"] == "prometheus"
    ]


def ch_substitute(
    sql: str, db: str, customer: str, meters: list[str], start: datetime, end: datetime
) -> str:
    def quote(v: str) -> str:
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"

    values = {
        "${database}": db,
        "${customer:singlequote}": quote(customer),
        "${meter:singlequote}": ", ".join(quote(m) for m in meters),
        "$__from": str(int(start.timestamp() * 1000)),
        "$__to": str(int(end.timestamp() * 1000)),
        "$__interval_ms": "60000",
    }
    for key, value in values.items():
        sql = sql.replace(key, value)
    assert "$" not in sql, f"a Grafana variable the test does not substitute:\n{sql}"
    return sql


# ----------------------------------------------------------------------------- seeded data

CUSTOMER, OTHER = "cust-grafana", "cust-other"
METERS = ["api_calls", "llm_tokens"]


def _month(t: datetime) -> datetime:
    return t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _insert(scratch: Scratch, table: str, rows: list[dict]) -> None:
    db = scratch.settings.clickhouse_database
    scratch.ch().execute(
        f"INSERT INTO {db}.{table} ({', '.join(rows[0])}) VALUES", [tuple(r.values()) for r in rows]
    )


def _event(cust: str, event_id: str, ms: int, offset: int, now: datetime) -> dict:
    return {
        "customer_id": cust,
        "event_id": event_id,
        "event_name": "api_call",
        "timestamp_ms": ms,
        "value": None,
        "properties": '{"region":"eu"}',
        "source": "test",
        "schema_id": 1,
        "kafka_topic": "usage-events",
        "kafka_partition": 0,
        "kafka_offset": offset,
        "ingested_at": now,
    }


def _line(invoice: str, no: int, kind: str, amount: str, period: tuple[datetime, datetime]):
    usage = kind == "usage"
    return {
        "invoice_id": invoice,
        "line_no": no,
        "customer_id": CUSTOMER,
        "kind": kind,
        "period_start": period[0],
        "period_end": period[1],
        "meter": "llm_tokens" if usage else "",
        "meter_version": 2 if usage else 0,
        "dimensions": "{}" if usage else "",
        "plan": "growth",
        "price_version": 1,
        "pricing": "per_unit 0.000002" if usage else "",
        "quantity": Decimal(1_500_000) if usage else Decimal(0),
        "amount": Decimal(amount),
        "event_count": 300 if usage else 0,
        "events_digest": "sha256:ab" if usage else "",
        "refers_to": "",
        "detail": "" if usage else kind,
        "closed_at": period[1] + timedelta(days=2),
    }


def seed(scratch: Scratch, now: datetime) -> Decimal:
    """Rows shaped as the metering and close jobs write them, for two customers over the last
    40 minutes (this period) and a closed invoice for last month. Returns CUSTOMER's cost so
    far this period."""
    naive = now.replace(tzinfo=None, microsecond=0)
    period = (_month(naive), _month(_month(naive) + timedelta(days=32)))
    last_period = (_month(period[0] - timedelta(days=1)), period[0])
    windows, rated, events, late = [], [], [], []
    cost = Decimal(0)
    for i in range(30):
        ws = naive.replace(second=0) - timedelta(minutes=40 - i)
        we = ws + timedelta(minutes=1)
        ms = int(ws.replace(tzinfo=UTC).timestamp() * 1000)
        for cust in (CUSTOMER, OTHER):
            base = {"customer_id": cust, "window_start": ws, "window_end": we}
            for region in ("eu", "us"):
                n = 3 + i % 4
                windows.append(
                    {
                        **base,
                        "meter": "api_calls",
                        "meter_version": 1,
                        "dimensions": json.dumps({"region": region}),
                        "event_count": n,
                        "quantity": Decimal(n),
                        "revision": n,
                        "written_at": naive,
                    }
                )
            q = Decimal(1000 + 17 * i)
            dims = json.dumps({"model": "small"})
            windows.append(
                {
                    **base,
                    "meter": "llm_tokens",
                    "meter_version": 2,
                    "dimensions": dims,
                    "event_count": 5,
                    "quantity": q,
                    "revision": 5,
                    "written_at": naive,
                }
            )
            amount = (q * Decimal("0.000002")).quantize(Decimal("1e-18"))
            rated.append(
                {
                    **base,
                    "subscription_id": f"sub-{cust}",
                    "period_start": period[0],
                    "period_end": period[1],
                    "meter": "llm_tokens",
                    "meter_version": 2,
                    "dimensions": dims,
                    "plan": "growth",
                    "price_version": 1,
                    "currency": "USD",
                    "quantity": q,
                    "period_quantity": q * (i + 1),
                    "amount": amount,
                    "period_amount": amount * (i + 1),
                    "revision": 5,
                    "period_revision": 5 * (i + 1),
                    "written_at": naive,
                }
            )
            cost += amount if cust == CUSTOMER else 0
            events += [_event(cust, f"{cust}-{i}-{k}", ms + k, 3 * i + k, naive) for k in range(3)]
            if i % 10 == 0:
                late.append({**_event(cust, f"{cust}-late-{i}", ms, i, naive), "watermark_ms": 0})
    alerts = [
        {
            "alert_id": f"{CUSTOMER}/llm_tokens/{period[0]:%Y-%m-%d}/{pct}",
            "customer_id": CUSTOMER,
            "subscription_id": f"sub-{CUSTOMER}",
            "meter": "llm_tokens",
            "period_start": period[0],
            "period_end": period[1],
            "threshold_pct": pct,
            "quantity": Decimal(40_000 * pct // 100 + 10),
            "quota": Decimal(40_000),
            "hard_cap": 0,
            "window_start": naive.replace(second=0) - timedelta(minutes=20 - pct // 10),
            "written_at": naive,
        }
        for pct in (75, 90)
    ]
    invoice = f"inv-{CUSTOMER}-{last_period[0]:%Y%m}"
    _insert(scratch, "alerts", alerts)
    _insert(scratch, "usage_windows", windows)
    _insert(scratch, "rated_usage", rated)
    _insert(scratch, "events", events)
    _insert(scratch, "late_events", late)
    lines = [
        _line(invoice, 1, "usage", "3.00", last_period),
        _line(invoice, 2, "minimum", "7.00", last_period),
        _line(invoice, 3, "credit", "-10.00", last_period),
    ]
    _insert(scratch, "invoice_lines", lines)
    closed = lines[0]["closed_at"]
    _insert(
        scratch,
        "credit_applications",
        [
            {
                "grant_id": "grant-welcome",
                "invoice_id": invoice,
                "customer_id": CUSTOMER,
                "currency": "USD",
                "amount": Decimal("10.00"),
                "applied_at": closed,
            }
        ],
    )
    _insert(
        scratch,
        "invoices",
        [
            {
                "invoice_id": invoice,
                "customer_id": CUSTOMER,
                "subscription_id": f"sub-{CUSTOMER}",
                "plan": "growth",
                "price_version": 1,
                "currency": "USD",
                "period_start": last_period[0],
                "period_end": last_period[1],
                "subtotal": Decimal("10.00"),
                "credits": Decimal("10.00"),
                "total": Decimal("0.00"),
                "line_count": 3,
                "closed_at": closed,
            }
        ],
    )
    return cost


# ----------------------------------------------------------------------------- ClickHouse


def test_customer_usage_queries_return_typed_rows_on_clickhouse_18(scratch):
    now = datetime.now(UTC)
    cost = seed(scratch, now)
    queries = clickhouse_queries(load("customer-usage.json"))
    assert {title for title, _ in queries} == set(EXPECTED_TYPES), "panels without expectations"
    db = scratch.settings.clickhouse_database
    ch = connect(scratch.settings, db, role="dashboards")  # as Grafana: readonly
    results = {}
    for title, sql in queries:
        rows, columns = ch.execute(
            ch_substitute(sql, db, CUSTOMER, METERS, now - timedelta(days=40), now),
            with_column_types=True,
        )
        assert rows, f"{title}: no rows"
        assert [typ for _, typ in columns] == EXPECTED_TYPES[title].split(), title
        results[title] = rows
    # the numbers are the seeded customer's, not the other customer's
    assert results["Cost so far this period"] == [("USD", pytest.approx(float(cost), rel=1e-12))]
    assert sorted(r[0] for r in results["variable customer"]) == sorted([CUSTOMER, OTHER])
    ((meter, pct, quota, quantity, *_),) = results["Usage alerts this period"]
    assert (meter, pct, quota, quantity) == ("llm_tokens", 90, 40_000.0, 36_010.0)
    assert [r[0] for r in results["variable meter"]] == METERS
    in_range = {(r[0], r[2]): r for r in results["Usage in range by meter and dimensions"]}
    assert sorted(in_range) == [
        ("api_calls", '{"region": "eu"}'),
        ("api_calls", '{"region": "us"}'),
        ("llm_tokens", '{"model": "small"}'),
    ]
    assert all(r[3] == 30 for r in in_range.values())  # 30 one-minute windows each
    assert in_range[("llm_tokens", '{"model": "small"}')][5] == sum(
        1000 + 17 * i for i in range(30)
    )
    stored = {r[1]: 0 for r in results["Raw events stored (accepted and late)"]}
    for _, kind, n in results["Raw events stored (accepted and late)"]:
        stored[kind] += n
    assert stored == {"accepted": 90, "late": 3}
    (invoice,) = results["Invoices"]
    assert invoice[0].startswith(f"inv-{CUSTOMER}-") and invoice[8] == 0.0
    assert [r[2] for r in results["Invoice lines"]] == ["usage", "minimum", "credit"]
    assert results["Prepaid credits consumed"] == [
        ("grant-welcome", "USD", 1, 10.0, results["Invoices"][0][10])
    ]


def test_customer_usage_queries_run_on_modern_engine(tmp_path):
    from chdb import session

    s = session.Session(str(tmp_path / "chdb"))
    try:
        s.query("CREATE DATABASE IF NOT EXISTS mf")
        for mig in migrations():
            for stmt in mig.statements("mf"):
                s.query(stmt)
        now = datetime.now(UTC)
        for title, sql in clickhouse_queries(load("customer-usage.json")):
            sql = ch_substitute(sql, "mf", CUSTOMER, METERS, now - timedelta(days=40), now)
            meta = json.loads(s.query(sql, "JSONCompact").bytes())["meta"]
            assert [c["type"] for c in meta] == EXPECTED_TYPES[title].split(), title
    finally:
        s.close()


# ----------------------------------------------------------------------------- Prometheus

JOB_ARGS = (
    "--meters",
    str(REPO_ROOT / "schemas" / "meters" / "scenario.yaml"),
    "--prices",
    str(REPO_ROOT / "schemas" / "prices" / "scenario.yaml"),
    "--subscriptions",
    str(REPO_ROOT / "schemas" / "customers" / "scenario.yaml"),
    "--checkpoint-interval",
    "2",
)


def _get(path: str, **params: str) -> dict:
    url = f"{PROMETHEUS}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=15) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # Prometheus explains a bad query in the body
        raise AssertionError(f"{url}: {exc.code} {exc.read().decode()}") from exc
    assert body["status"] == "success", body
    return body["data"]


def query(expr: str) -> dict:
    return _get("/api/v1/query", query=expr)


def query_range(expr: str, seconds: int = 60) -> dict:
    end = time.time()
    return _get("/api/v1/query_range", query=expr, start=str(end - seconds), end=str(end), step="5")


@pytest.fixture(scope="module")
def prometheus() -> str:
    try:
        urllib.request.urlopen(f"{PROMETHEUS}/-/ready", timeout=5).close()
    except OSError as exc:
        pytest.fail(f"Prometheus at {PROMETHEUS} is not up (run `make up`): {exc}")
    loaded = {
        r["name"]
        for g in _get("/api/v1/rules")["groups"]
        for r in g["rules"]
        if r["type"] == "alerting"
    }
    groups = yaml.safe_load(RULES.read_text())["groups"]
    wanted = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    assert wanted <= loaded, (
        f"the running Prometheus lacks {sorted(wanted - loaded)}: "
        "`bash infra/stack.sh up` reloads changed rules"
    )
    return PROMETHEUS


def _port_taken(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_exporter(scratch: Scratch) -> subprocess.Popen:
    if _port_taken(EXPORTER_PORT):
        pytest.fail(
            f"127.0.0.1:{EXPORTER_PORT} is taken (an exporter already running?): this test runs "
            "its own exporter there, on its scratch database, for Prometheus to scrape"
        )
    log = open(scratch.checkpoints / "exporter.log", "w")  # noqa: SIM115
    cmd = [sys.executable, "-m", "meterflow.cli.exporter", "--port", str(EXPORTER_PORT)]
    return subprocess.Popen(
        [*cmd, "--interval", "2", "--reconcile-interval", "10"],
        cwd=REPO_ROOT,
        env=scratch.env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def start_loader(scratch: Scratch) -> subprocess.Popen:
    """`meterflow load` on the scratch topic and database, where Prometheus scrapes it."""
    if _port_taken(LOADER_PORT):
        pytest.fail(f"127.0.0.1:{LOADER_PORT} is taken (a loader already running?)")
    log = open(scratch.checkpoints / "loader.log", "w")  # noqa: SIM115
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meterflow.cli",
            "load",
            "--group-id",
            f"meterflow-loader-it-{scratch.run_id}",
        ],
        cwd=REPO_ROOT,
        env={**scratch.env(), "METERFLOW_LOADER_PORT": str(LOADER_PORT)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def _count(scratch: Scratch, table: str) -> int:
    return scratch.query(f"SELECT count() FROM {{db}}.{table} FINAL")[0][0]


def _label_values(definition: str) -> list[str]:
    """Grafana's `label_values(selector, label)` through Prometheus' label values API."""
    m = re.fullmatch(r"label_values\((.*), *(\w+)\)", definition)
    assert m, definition
    return _get(f"/api/v1/label/{m.group(2)}/values", **{"match[]": m.group(1)})


@pytest.fixture
def running(scratch: Scratch) -> Iterator[tuple[Scratch, str, Scenario]]:
    """A metering job (rating on) over a scenario with duplicates, dead letters and late
    events, and the exporter on the same scratch database; yields the job's `job_name`."""
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    cfg = ScenarioConfig(seed=11, start=start, events=600, malformed_per_kind=1, late=3)
    sc = generate(cfg)
    # appended to sc.phases: one event per customer 2 hours on (at most now) closes the windows
    head = max(e.timestamp for e in sc.accepted)
    flush_phase(sc, cfg, at=min(head + timedelta(hours=2), datetime.now(UTC)))
    phase1, *rest = sc.phases

    def produce(records: list) -> None:
        produce_raw(scratch.settings, [(r.key, r.value, r.timestamp_ms) for r in records])

    job = scratch.start_job(*JOB_ARGS)
    exporter = start_exporter(scratch)
    loader = start_loader(scratch)
    try:
        produce(phase1)
        # Phase 2's late events are late once the watermark is near phase 1's newest event:
        # the last whole minute before it has fired its windows.
        fence = head.replace(tzinfo=None, second=0, microsecond=0) - timedelta(minutes=1)
        scratch.wait_for(
            "phase 1 windows",
            lambda: (
                scratch.query(
                    "SELECT count() FROM {db}.usage_windows WHERE window_end >= %(t)s", {"t": fence}
                )[0][0]
                > 0
            ),
            job=job,
        )
        produce([r for phase in rest for r in phase])  # the late events, then the flush
        scratch.wait_for("rated windows", lambda: _count(scratch, "rated_usage") > 0, job=job)
        scratch.wait_for("late events", lambda: _count(scratch, "late_events") == 3, job=job)
        assert exporter.poll() is None, "the exporter exited"
        assert loader.poll() is None, "the loader exited"
        # the job is named meterflow-metering[<group id>], as Prometheus labels spell it
        yield scratch, f"meterflow_metering_meterflow_metering_it_{scratch.run_id}_", sc
    finally:
        _stop(loader)
        _stop(exporter)
        kill_job(job)
        delete_topics(  # the loader's topics (the scratch fixture deletes its own)
            scratch.settings, [t for r in routes(scratch.settings) for t in (r.topic, r.dlq_topic)]
        )


def test_pipeline_health_queries_on_live_prometheus(prometheus, running):
    scratch, job_name, sc = running
    dash = load("pipeline-health.json")
    (job_var,) = dash["templating"]["list"]
    exprs = [(title, e.replace("$job", job_name)) for title, e in prometheus_exprs(dash)]
    assert all("$" not in e for _, e in exprs), "a Grafana variable the test does not substitute"

    def targets_up() -> bool:
        up = query(f'flink_jobmanager_job_uptime{{job_name="{job_name}"}}')["result"]
        exp = query(f'up{{job="meterflow",instance="127.0.0.1:{EXPORTER_PORT}"}} == 1')["result"]
        load = query(f'up{{job="meterflow-loader",instance="127.0.0.1:{LOADER_PORT}"}} == 1')
        return bool(up and exp and load["result"])

    scratch.wait_for("Prometheus to scrape the job, exporter and loader", targets_up, timeout=120)
    assert job_name in _label_values(job_var["definition"])

    def empty() -> list[str]:
        return [title for title, e in exprs if not query(e)["result"]]

    # recording rules need a few scrapes (5 s apart) of every counter before they have samples
    scratch.wait_for("every panel expression", lambda: not empty(), timeout=120, describe=empty)
    for title, expr in exprs:
        instant = query(expr)
        assert instant["resultType"] == "vector" and instant["result"], title
        ranged = query_range(expr)
        assert ranged["resultType"] == "matrix" and ranged["result"], title

    # the job's own counters are behind them: every record accounted for as the scenario says
    def scraped(expr: str) -> float:
        result = query(expr)["result"]
        return float(result[0]["value"][1]) if result else -1.0

    op, sel = "flink_taskmanager_job_task_operator", f'job_name="{job_name}"'
    dedup = f'{sel},operator_name=~"Deduplicate.*"'
    counters = {
        f'sum({op}_sink_rows{{{sel},table="events"}})': lambda: _count(scratch, "events"),
        f'sum({op}_sink_rows{{{sel},table="late_events"}})': lambda: len(sc.late),
        f"sum({op}_records_dead_lettered{{{sel}}})": lambda: sum(sc.dead_letters.values()),
        f"sum({op}_numRecordsIn{{{dedup}}}) - sum({op}_numRecordsOut{{{dedup}}})": (
            lambda: sc.duplicates
        ),
    }

    def mismatches() -> list[str]:
        return [
            f"{e}: {scraped(e)} != {want()}" for e, want in counters.items() if scraped(e) != want()
        ]

    scratch.wait_for(
        "the job's counters", lambda: not mismatches(), timeout=30, describe=mismatches
    )


def test_alert_expressions_evaluate_on_live_prometheus(prometheus):
    groups = yaml.safe_load(RULES.read_text())["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        data = query(rule["expr"])
        assert data["resultType"] == "vector", rule.get("alert") or rule["record"]
