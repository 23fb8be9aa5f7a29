"""The fault harness: the whole pipeline under continuous load while its parts are killed.

SDK client apps (tests/integration/sdk_client_proc.py, several processes) track scenario-shaped
events continuously, with retries of the same ids; a raw producer adds malformed records; the
JVM metering job runs on the local standalone Flink cluster (1 JobManager, 2 TaskManagers)
under `jobs.supervise`; `meterflow load` stores its outputs. Faults are injected one at a time
at random moments; after each, the time until an event accepted after the fault ended is
queryable in ClickHouse is its recovery time.

At the end the clients stop, a flush event per customer moves the watermark past everything,
and the stored results are held to what was sent — computed here from the clients' own records
of what they tracked, never from what the pipeline wrote:
- every event id a client accepted is in ClickHouse exactly once (events or late_events); ids a
  killed client had handed to track() but not yet seen accepted may be stored, nothing else;
- every usage window, every streamed period cost and every quota alert equals the hand-written
  expectation of tests/integration/expected.py over those events;
- the dead-letter topic holds exactly the malformed records sent, with their bytes.

python -m tests.chaos --help (make chaos); a reduced run is tests/integration/test_chaos.py.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from connectors import ledger
from connectors.producer import produce_raw
from connectors.registry import register_event_schema
from jobs.close import close
from meterflow.catalog import Catalog
from meterflow.events import UsageEvent, schema_text
from meterflow.meters import load_meters
from meterflow.price_book import load_price_book
from meterflow.settings import REPO_ROOT, Settings
from meterflow.subscriptions import load_subscriptions
from meterflow.testing.scenario import encode
from tests.integration.conftest import Scratch, kill_job, make_scratch
from tests.integration.expected import (
    SCENARIO_MINIMUMS,
    WINDOWS_SQL,
    actual_windows,
    expected_windows,
    scenario_invoice_lines,
    scenario_months,
    scenario_period_amounts,
    scenario_quota_alert_ids,
    window_diff,
)

VAR = Path(os.environ.get("METERFLOW_VAR", REPO_ROOT / "var"))
RUN = VAR / "run"
FLINK_PIDS = RUN / "flink"
STACK = ["bash", str(REPO_ROOT / "infra" / "stack.sh")]
CLUSTER = ["bash", str(REPO_ROOT / "infra" / "flink-cluster.sh")]
REST = f"http://127.0.0.1:{os.environ.get('FLINK_REST_PORT', '8081')}"
SCHEMAS = REPO_ROOT / "schemas"
JOB_ARGS = [
    "--meters", str(SCHEMAS / "meters" / "scenario.yaml"),
    "--prices", str(SCHEMAS / "prices" / "scenario.yaml"),
    "--subscriptions", str(SCHEMAS / "customers" / "scenario.yaml"),
]  # fmt: skip
CUSTOMERS = 4
TIME_OFFSET_S = 2 * 3600  # event times two hours back, so a flush at "now" closes every window
FAULTS = (
    "taskmanager",
    "jobmanager",
    "kafka",
    "clickhouse",
    "loader",
    "sdk_client",
    "registry_down",
    "clickhouse_unreachable",
)


@dataclass
class Plan:
    faults: list[str]  # in injection order
    clients: int = 2
    rate: float = 2400.0  # events/s asked of all clients together (they reach ~2,000 here)
    gap_s: tuple[float, float] = (10.0, 25.0)  # random wait before each fault
    registry_down_s: float = 60.0
    clickhouse_unreachable_s: float = 600.0
    recovery_timeout_s: float = 900.0
    seed: int = 1


@dataclass
class Injected:
    kind: str
    injected_at: float  # wall clock
    restored_at: float  # the component is back (or the outage is over)
    recovered_s: float | None = None  # restored -> a later accepted event is queryable
    lost: int = 0  # ids accepted from 10 s before the fault to its recovery, missing at the end


@dataclass
class Outcome:
    injected: list[Injected]
    accepted: int  # distinct ids the clients accepted
    sent_rate: float  # events/s the clients accepted, first to last track()
    stored: int
    lost: int  # accepted, not in ClickHouse
    unexpected: int  # in ClickHouse, never tracked
    double_counted: int  # events counted more than once, summed over the windows
    late: int
    window_diff: str  # empty when every window equals its expectation
    period_cost_ok: bool
    alerts_ok: bool
    dead_letters_ok: bool
    invoices: int  # final invoices the close wrote, each compared with its expectation
    invoices_ok: bool
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# ----------------------------------------------------------------------------- processes


def _pid(name: str) -> int:
    return int((RUN / f"{name}.pid").read_text().split()[0])


def _flink_pids(daemon: str) -> list[int]:
    path = FLINK_PIDS / f"flink-meterflow-{daemon}.pid"
    out = []
    for line in path.read_text().split() if path.exists() else []:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line), 0)
            out.append(int(line))
    return out


def _kill9(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(100):  # until the kernel has reaped it (or it is a zombie of ours)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def _sh(cmd: list[str], timeout: float = 300) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr[-2000:]}")


class Client:
    """One SDK client app with its evidence files; restartable after a kill."""

    def __init__(self, scratch: Scratch, k: int, rate: float, seed: int) -> None:
        self.dir = scratch.checkpoints / f"client-{k}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.scratch, self.rate, self.seed = scratch, rate, seed * 100 + k
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        f = self.dir
        log = (f / f"client-{time.time_ns()}.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.sdk_client_proc",
             "--spool", str(f / "spool"), "--accepted", str(f / "accepted.txt"),
             "--tracking", str(f / "tracking.txt"), "--stats", str(f / "stats.json"),
             "--events-file", str(f / "events.jsonl"), "--rate", str(self.rate),
             "--threads", "2", "--scenario-seed", str(self.seed),
             "--customers", str(CUSTOMERS), "--time-offset", str(TIME_OFFSET_S),
             "--duplicate-rate", "0.03", "--max-in-flight", "20000",
             "--delivery-timeout", "30"],
            cwd=REPO_ROOT, env=self.scratch.env(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def kill(self) -> None:
        assert self.proc is not None
        kill_job(self.proc)

    def stop(self) -> int:
        """SIGTERM: stop tracking, deliver the spool, exit; its status (0: all delivered)."""
        assert self.proc is not None
        self.proc.terminate()
        try:
            return self.proc.wait(180)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def events(self, tail_bytes: int | None = None) -> list[dict]:
        """Every event handed to track() (written just before the call); complete lines."""
        return [json.loads(line) for line in _lines(self.dir / "events.jsonl", tail_bytes)]

    def accepted_ids(self, tail_bytes: int | None = None) -> set[str]:
        return set(_lines(self.dir / "accepted.txt", tail_bytes))


def _lines(path: Path, tail_bytes: int | None) -> list[str]:
    """The complete lines of a file a process appends to (the last `tail_bytes` of it)."""
    if not path.exists():
        return []
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        start = max(0, size - tail_bytes) if tail_bytes else 0
        f.seek(start)
        data = f.read(size - start).decode()
    if start:
        data = data[data.find("\n") + 1 :]  # a partial first line
    return [line for line in data[: data.rfind("\n") + 1].split("\n") if line]


class Pipeline:
    """The cluster, the supervised job, the loader and the clients of one harness run."""

    def __init__(self, scratch: Scratch, plan: Plan) -> None:
        self.s = scratch
        self.plan = plan
        self.group = f"meterflow-metering-chaos-{scratch.run_id}"
        self.supervisor: subprocess.Popen | None = None
        self.loader: subprocess.Popen | None = None
        self.clients = [
            Client(scratch, k, plan.rate / plan.clients, plan.seed) for k in range(plan.clients)
        ]
        self.bad: list[bytes] = []  # malformed records sent

    def _popen(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = (self.s.checkpoints / f"{name}-{time.time_ns()}.log").open("w")
        return subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=self.s.env(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def start_supervisor(self) -> None:
        self.supervisor = self._popen(
            "supervise",
            [sys.executable, "-m", "jobs.supervise", "--rest", REST, "--group-id", self.group,
             "--checkpoint-dir", str(self.s.checkpoints / "flink"), "--", *JOB_ARGS],
        )  # fmt: skip

    def start_loader(self) -> None:
        self.loader = self._popen(
            "loader",
            [sys.executable, "-m", "meterflow.cli", "load", "--group-id",
             self.group.replace("metering", "loader"),
             "--metrics-port", "0"],
        )  # fmt: skip

    def send_bad(self, n: int, seed: int) -> None:
        """`n` malformed records (random bytes and framed garbage) straight to the topic."""
        rng = random.Random(seed)
        values = [rng.randbytes(rng.randrange(1, 200)) for _ in range(n)]
        for attempt in range(60):  # the broker may be the component just restarted
            try:
                produce_raw(self.s.settings, [(b"bad", v, int(time.time() * 1000)) for v in values])
                self.bad += values
                return
            except Exception:
                if attempt == 59:
                    raise
                time.sleep(2)

    # -- faults: each returns when the component is back (or the outage is over)

    def fault(self, kind: str) -> None:
        rng = random.Random(f"{self.plan.seed}-{kind}-{time.time_ns()}")
        match kind:
            case "taskmanager":
                _kill9(rng.choice(_flink_pids("taskexecutor")))
                time.sleep(2)
                _sh([*CLUSTER, "start-taskmanager"])
            case "jobmanager":
                for pid in _flink_pids("standalonesession"):
                    _kill9(pid)
                time.sleep(2)
                _sh([*CLUSTER, "start-jobmanager"])
            case "kafka" | "clickhouse":
                _kill9(_pid(kind))
                time.sleep(2)
                _sh([*STACK, "start", kind])
            case "loader":
                assert self.loader is not None
                kill_job(self.loader)
                self.start_loader()
            case "sdk_client":
                c = rng.choice(self.clients)
                c.kill()
                time.sleep(1)
                c.start()
            case "registry_down":
                _sh([*STACK, "stop", "registry"])
                time.sleep(self.plan.registry_down_s)
                _sh([*STACK, "start", "registry"])
            case "clickhouse_unreachable":
                # stopped, not dead: connections open and hang, as behind a lost network
                pid = _pid("clickhouse")
                os.kill(pid, signal.SIGSTOP)
                try:
                    time.sleep(self.plan.clickhouse_unreachable_s)
                finally:
                    os.kill(pid, signal.SIGCONT)
            case _:
                raise ValueError(f"unknown fault {kind!r} (known: {', '.join(FAULTS)})")

    def first_accepted_after(self, t: float, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            later = []
            for c in self.clients:
                ok = c.accepted_ids(1 << 20)
                later += [
                    (e["at"], e["event_id"])
                    for e in c.events(4 << 20)
                    if e["at"] > t and not e["retry"] and e["event_id"] in ok
                ]
            if later:
                return min(later)[1]
            time.sleep(0.5)
        raise TimeoutError(f"no event accepted in {timeout_s}s after the fault")

    def stored(self, event_id: str) -> bool:
        sql = (
            "SELECT (SELECT count() FROM {db}.events WHERE event_id = %(i)s) + "
            "(SELECT count() FROM {db}.late_events WHERE event_id = %(i)s)"
        )
        try:
            return self.s.query(sql, {"i": event_id})[0][0] > 0
        except Exception:  # ClickHouse may be the component still coming back
            return False

    def wait(self, what: str, check: Callable[[], bool], timeout_s: float) -> float:
        started = time.monotonic()
        while not check():
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"{what}: not within {timeout_s}s")
            for name, proc in (("supervisor", self.supervisor), ("loader", self.loader)):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"the {name} exited ({proc.returncode})")
            time.sleep(1)
        return time.monotonic() - started


@contextlib.contextmanager
def pipeline(settings: Settings, workdir: Path, plan: Plan) -> Iterator[Pipeline]:
    """A scratch topic and database, the cluster with 2 TaskManagers, the supervised job, the
    loader and the clients; everything stopped (and every service running again) at the end."""
    env = {**os.environ, "FLINK_TASKMANAGERS": "2"}
    with make_scratch(settings, workdir) as scratch:
        p = Pipeline(scratch, plan)
        (scratch.checkpoints / "flink").mkdir(parents=True, exist_ok=True)
        subprocess.run([*CLUSTER, "start"], env=env, check=True, capture_output=True)
        try:
            p.start_supervisor()
            p.start_loader()
            for c in p.clients:
                c.start()
            yield p
        finally:
            for c in p.clients:
                if c.proc is not None and c.proc.poll() is None:
                    c.kill()
            for proc in (p.supervisor, p.loader):
                if proc is not None:
                    kill_job(proc)
            with contextlib.suppress(Exception):
                os.kill(_pid("clickhouse"), signal.SIGCONT)
            for svc in ("kafka", "clickhouse", "registry"):
                _sh([*STACK, "start", svc])
            subprocess.run([*CLUSTER, "stop"], capture_output=True)


# ----------------------------------------------------------------------------- a run


def _usage_event(e: dict) -> UsageEvent:
    return UsageEvent(
        event_id=e["event_id"],
        event_name=e["event_name"],
        customer_id=e["customer_id"],
        timestamp=datetime.fromisoformat(e["timestamp"]),
        value=None if e["value"] is None else Decimal(e["value"]),
        properties=e["properties"],
        source=e.get("source"),
    )


def run(
    settings: Settings, workdir: Path, plan: Plan, say: Callable[[str], None] = print
) -> Outcome:
    rng = random.Random(plan.seed)
    t0 = time.time()
    injected: list[Injected] = []
    with pipeline(settings, workdir, plan) as p:
        p.send_bad(5, seed=plan.seed)
        first = p.first_accepted_after(t0, 120)
        took = p.wait("the first event queryable", lambda: p.stored(first), 600)
        say(f"pipeline up: first event queryable {took:.0f} s after the start")
        for i, kind in enumerate(plan.faults):
            time.sleep(rng.uniform(*plan.gap_s))
            at = time.time()
            say(f"fault {i + 1}/{len(plan.faults)}: {kind}")
            p.fault(kind)
            f = Injected(kind, at, time.time())
            probe = p.first_accepted_after(f.restored_at, 300)
            p.wait(
                f"recovery from {kind}", lambda probe=probe: p.stored(probe),
                plan.recovery_timeout_s,
            )  # fmt: skip
            f.recovered_s = time.time() - f.restored_at
            say(f"  {f.restored_at - at:.1f} s down, queryable again {f.recovered_s:.1f} s after")
            injected.append(f)
            p.send_bad(3, seed=plan.seed * 1000 + i)
        return _finish(p, injected)


def _finish(p: Pipeline, injected: list[Injected]) -> Outcome:
    statuses = [c.stop() for c in p.clients]
    problems = [f"client {k} exited {s} (spool not delivered)" for k, s in enumerate(statuses) if s]
    tracked: dict[str, dict] = {}
    for c in p.clients:
        for e in c.events():
            tracked.setdefault(e["event_id"], e)
    accepted = set().union(*(c.accepted_ids() for c in p.clients))
    times = [e["at"] for e in tracked.values()]
    rate = len(accepted) / max(1.0, max(times) - min(times)) if times else 0.0
    # one flush event per customer (every partition): the watermark passes every window
    now = datetime.now(UTC)
    flush = [
        UsageEvent(f"flush-{p.s.run_id}-{k}", "flush", f"cust-{k}", now, None, {}, "chaos")
        for k in range(CUSTOMERS)
    ]
    schema_id = register_event_schema(p.s.settings, schema_text(1))  # the id it already has
    produce_raw(
        p.s.settings,
        [(e.customer_id.encode(), encode(asdict(e), schema_id), int(now.timestamp() * 1000))
         for e in flush],
    )  # fmt: skip
    want_ids = accepted | {e.event_id for e in flush}

    def stored_ids() -> tuple[set[str], set[str]]:
        ev = {r[0] for r in p.s.query("SELECT event_id FROM {db}.events FINAL")}
        late = {r[0] for r in p.s.query("SELECT event_id FROM {db}.late_events FINAL")}
        return ev, late

    def all_stored() -> bool:
        # the counts first: fetching every stored id each second is the expensive part
        n = p.s.query(
            "SELECT (SELECT count() FROM {db}.events FINAL) + "
            "(SELECT count() FROM {db}.late_events FINAL)"
        )[0][0]
        return n >= len(want_ids) and want_ids <= set().union(*stored_ids())

    with contextlib.suppress(TimeoutError):
        p.wait("every accepted id stored", all_stored, 600)
    time.sleep(15)  # windows fired by the flush: two checkpoints, then the loader
    ev, late = stored_ids()
    stored = ev | late
    lost_ids = want_ids - stored
    unexpected = stored - want_ids - set(tracked)
    # events a killed client had tracked but not seen accepted: stored or not, by chance
    maybe = {i for i in stored & set(tracked) if i not in accepted}
    counted = [_usage_event(tracked[i]) for i in (accepted | maybe) - late]
    want = expected_windows(counted)
    got = actual_windows(p.s.query(WINDOWS_SQL))
    diff = window_diff(got, want) if got != want else ""
    double = sum(max(0, got[k][0] - n) for k, (n, _) in want.items() if k in got)
    months = scenario_months(counted)
    period_rows = p.s.query(
        "SELECT customer_id, period_start, meter, period_amount, revision "
        "FROM {db}.period_cost FINAL"
    )
    period_got = {(c, ps, m): (a, r) for c, ps, m, a, r in period_rows}
    period_ok = period_got == scenario_period_amounts(months)
    alerts = {r[0] for r in p.s.query("SELECT alert_id FROM {db}.alerts FINAL")}
    alerts_ok = alerts == scenario_quota_alert_ids(months)
    dlq = [base64.b64decode(json.loads(m.value())["payload"])
           for m in p.s.topic_records(p.s.settings.dlq_topic)]  # fmt: skip
    dead_ok = sorted(dlq) == sorted(p.bad)
    # the close bills every stored event, the late ones too
    billable = counted + [_usage_event(tracked[i]) for i in late if i in tracked]
    invoices, invoice_problems = _close_and_check(p.s, billable)
    for f in injected:
        end = f.restored_at + (f.recovered_s or 0)
        window = {i for i, e in tracked.items() if f.injected_at - 10 <= e["at"] <= end}
        f.lost = len((window & accepted) - stored)
    if lost_ids:
        problems.append(f"{len(lost_ids)} accepted ids not stored, e.g. {sorted(lost_ids)[:3]}")
    if unexpected:
        problems.append(f"{len(unexpected)} stored ids never tracked")
    if diff:
        problems.append(f"windows differ:\n{diff}")
    if not period_ok:
        problems.append("streamed period cost differs from the expectation")
    if not alerts_ok:
        problems.append(f"alerts differ: {len(alerts)} stored")
    if not dead_ok:
        problems.append(f"dead letters: {len(dlq)} stored, {len(p.bad)} sent")
    problems += invoice_problems
    return Outcome(
        injected=injected,
        accepted=len(accepted),
        sent_rate=rate,
        stored=len(stored),
        lost=len(lost_ids),
        unexpected=len(unexpected),
        double_counted=double,
        late=len(late),
        window_diff=diff,
        period_cost_ok=period_ok,
        alerts_ok=alerts_ok,
        dead_letters_ok=dead_ok,
        invoices=invoices,
        invoices_ok=not invoice_problems,
        problems=problems,
    )


GRACE = timedelta(hours=24)


def _close_and_check(s: Scratch, billable: list[UsageEvent]) -> tuple[int, list[str]]:
    """Close every period of the run (as of a day after the month of its newest event ended)
    and hold each final invoice to the lines computed from what was sent."""
    cat = Catalog(
        load_subscriptions(SCHEMAS / "customers" / "scenario.yaml"),
        load_price_book(SCHEMAS / "prices" / "scenario.yaml"),
        load_meters(SCHEMAS / "meters" / "scenario.yaml"),
        [],
    )
    newest = max(e.timestamp for e in billable)
    next_month = (newest.replace(day=28) + timedelta(days=4)).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    close(s.settings, cat, next_month + GRACE + timedelta(hours=1), GRACE)
    months = scenario_months(billable)
    db = s.settings.clickhouse_database
    ch = s.ch()
    headers = ledger.final_invoices(ch, db)
    problems = []
    billed_months = set()
    for h in headers:
        key = (h.customer_id, h.period_start.replace(tzinfo=None))
        billed_months.add(key)
        want = scenario_invoice_lines(months.get(key, []), SCENARIO_MINIMUMS[h.plan], h.plan)
        got = [
            (ln.kind, ln.meter, ln.quantity, ln.amount, ln.event_count)
            for _, _, ln in ledger.lines(ch, db, invoice_id=h.invoice_id)
        ]
        if got != want:
            problems.append(f"invoice {h.invoice_id}: {got} != expected {want}")
    unbilled = set(months) - billed_months
    if unbilled:
        problems.append(f"periods with usage and no final invoice: {sorted(unbilled)[:3]}")
    return len(headers), problems


def table(outcomes: list[Outcome]) -> str:
    """fault x runs x events lost x double-counted x recovery time (p50 / max), as Markdown."""
    rows = ["| fault | runs | events lost | double-counted | recovery p50 / max (s) |",
            "| --- | --- | --- | --- | --- |"]  # fmt: skip
    kinds = sorted({f.kind for o in outcomes for f in o.injected}, key=FAULTS.index)
    for kind in kinds:
        fs = [f for o in outcomes for f in o.injected if f.kind == kind]
        rec = [f.recovered_s for f in fs if f.recovered_s is not None]
        double = sum(o.double_counted for o in outcomes if any(f.kind == kind for f in o.injected))
        rows.append(
            f"| {kind} | {len(fs)} | {sum(f.lost for f in fs)} | {double} | "
            f"{statistics.median(rec):.1f} / {max(rec):.1f} |"
        )
    return "\n".join(rows)
