"""The Flink environment the job runs in: mini-cluster or cluster, checkpoints, state, jars."""

from __future__ import annotations

import os

from pyflink.common import Configuration
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.table import StreamTableEnvironment

from jobs.job_args import RESTART_STRATEGY, resolve_checkpoint
from jobs.streaming.options import JobOptions
from meterflow.settings import REPO_ROOT, Settings

JARS_DIR = REPO_ROOT / "build" / "flink-jars"


# The local mini-cluster's endpoints stay on loopback (used by the tests' mini-clusters too).
LOOPBACK = {
    "rest.address": "127.0.0.1",
    "rest.bind-address": "127.0.0.1",
    "jobmanager.rpc.address": "127.0.0.1",
    "jobmanager.bind-host": "127.0.0.1",
    "taskmanager.host": "127.0.0.1",
    "taskmanager.bind-host": "127.0.0.1",
}


# longer than any billing period (12 months) plus the allowed lateness, in Flink's duration syntax
LONG_STATE_TTL = "400 d"


def flink_settings(opts: JobOptions) -> dict[str, str]:
    return {
        # the job's name in the Flink UI, REST API and metrics
        "pipeline.name": f"meterflow-streaming[{opts.group_id}]",
        "parallelism.default": str(opts.parallelism),
        "table.local-time-zone": "UTC",
        # The Kafka connector's admin client logs while a bounded job shuts down, after Flink
        # closed the user-code classloader; the leak check turns that into an error trace.
        "classloader.check-leaked-classloader": "false",
        # A silent partition must not hold back the watermark of the others.
        "table.exec.source.idle-timeout": f"{opts.idle_timeout_s}s",
        # The job-wide state TTL is the longest any state must live: a billing period's running
        # usage and cost (rating, alerts). The dedup's own horizon, shorter, is set on its
        # operator in the compiled plan (state_ttl.py).
        "table.exec.state.ttl": LONG_STATE_TTL,
        # Windows stay open for allowed lateness after they fire; each late-but-allowed event
        # re-fires its window at once (a higher revision).
        "table.exec.emit.allow-lateness": f"{opts.allowed_lateness_s}s",
        "table.exec.emit.late-fire.enabled": "true",
        "table.exec.emit.late-fire.delay": "0s",
        # Exactly-once results: offsets and operator state in checkpoints, kept after a crash.
        "execution.checkpointing.interval": f"{opts.checkpoint_interval_s}s",
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.dir": opts.checkpoint_dir.resolve().as_uri(),
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "3",
        # Chained operators hand rows on without a defensive copy each (the SQL runtime does
        # not mutate its inputs).
        "pipeline.object-reuse": "true",
        **LOOPBACK,
        **RESTART_STRATEGY,
        "metrics.reporter.prom.factory.class": (
            "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
        ),
        "metrics.reporter.prom.port": os.environ.get("FLINK_PROM_PORTS", "9250-9260"),
    }


def table_env(
    settings: Settings, opts: JobOptions, extra: dict[str, str] | None = None
) -> tuple[StreamExecutionEnvironment, StreamTableEnvironment]:
    """The job's environment; `extra` Flink settings on top (benchmarks)."""
    jars = sorted(JARS_DIR.glob("*.jar"))
    if not any(j.name.startswith("meterflow-flink-functions") for j in jars):
        raise SystemExit(f"the job's Java functions are missing in {JARS_DIR}: run 'make setup'")
    conf = Configuration()
    values = {**flink_settings(opts), **(extra or {})}
    if opts.restore_from:
        values["execution.state-recovery.path"] = resolve_checkpoint(
            opts.restore_from, opts.checkpoint_dir
        )
    if os.environ.get("METERFLOW_FLINK_REST_PORT"):
        # the mini-cluster's REST API (per-operator busy time, back pressure) for profiling
        values["rest.port"] = os.environ["METERFLOW_FLINK_REST_PORT"]
    for k, v in values.items():
        conf.set_string(k, v)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    # Appended, not set as pipeline.jars: under `flink run` that setting would replace the jars
    # the CLI ships.
    env.add_jars(*(j.as_uri() for j in jars))
    t_env = StreamTableEnvironment.create(env)
    for k, v in values.items():
        if k.startswith("table."):
            t_env.get_config().set(k, v)
    return env, t_env
