"""What a run of the streaming job is told: its options and the command line that sets them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from jobs.job_args import DEFAULT_CHECKPOINTS, add_job_args, replay_range
from meterflow.decoding import Limits
from meterflow.meters import DEFAULT_METERS_FILE
from meterflow.price_book import DEFAULT_PRICES_FILE
from meterflow.subscriptions import DEFAULT_SUBSCRIPTIONS_FILE


@dataclass(frozen=True)
class JobOptions:
    bounded: bool = False  # read up to the offsets present at start, close every window, stop
    # 1 on this 2-core machine: every exchange serializes rows whatever the parallelism, and a
    # second subtask of each stage competes with the broker and the loader for the same cores
    # (measured, 1M events bounded to Kafka: 59.6 s at 1 vs 75.0 s at 2). More on a cluster.
    parallelism: int = 1
    out_of_orderness_s: int = 5
    allowed_lateness_s: int = 300
    idle_timeout_s: int = 5
    dedup_horizon_s: int = 3600
    checkpoint_interval_s: int = 10
    checkpoint_dir: Path = DEFAULT_CHECKPOINTS
    restore_from: str | None = None  # a checkpoint path, or "latest"
    detached: bool = False  # submitted with `flink run -d`: do not wait for the job's end
    group_id: str = "meterflow-metering"
    meters_file: Path = DEFAULT_METERS_FILE
    # real-time rating (period cost per customer, meter and period); off when either is None
    prices_file: Path | None = DEFAULT_PRICES_FILE
    subscriptions_file: Path | None = DEFAULT_SUBSCRIPTIONS_FILE
    limits: Limits = field(default_factory=Limits)
    replay: tuple[int, int] | None = None  # Kafka record time range [from, to) in ms


def parse_args(argv: list[str] | None, description: str) -> JobOptions:
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawTextHelpFormatter
    )
    add_job_args(p, JobOptions)
    p.add_argument(
        "--detached",
        action="store_true",
        help="return once the job is submitted (with `flink run -d`; jobs.supervise uses it)",
    )
    a = p.parse_args(argv)
    return JobOptions(
        bounded=a.bounded,
        parallelism=a.parallelism,
        out_of_orderness_s=a.out_of_orderness,
        allowed_lateness_s=a.allowed_lateness,
        dedup_horizon_s=a.dedup_horizon,
        checkpoint_interval_s=a.checkpoint_interval,
        checkpoint_dir=a.checkpoint_dir / a.group_id,
        restore_from=a.restore,
        group_id=a.group_id,
        meters_file=a.meters.resolve(),
        prices_file=a.prices,
        subscriptions_file=a.subscriptions,
        replay=replay_range(p, a),
        detached=a.detached,
    )
