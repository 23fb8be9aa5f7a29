"""What a run of the streaming job is told: its options and the command line that sets them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from meterflow.decoding import Limits
from meterflow.meters import DEFAULT_METERS_FILE
from meterflow.price_book import DEFAULT_PRICES_FILE
from meterflow.settings import REPO_ROOT
from meterflow.subscriptions import DEFAULT_SUBSCRIPTIONS_FILE
from meterflow.utc import parse_utc

DEFAULT_CHECKPOINTS = REPO_ROOT / "var" / "checkpoints"


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
    group_id: str = "meterflow-metering"
    meters_file: Path = DEFAULT_METERS_FILE
    # real-time rating (period cost per customer, meter and period); off when either is None
    prices_file: Path | None = DEFAULT_PRICES_FILE
    subscriptions_file: Path | None = DEFAULT_SUBSCRIPTIONS_FILE
    limits: Limits = field(default_factory=Limits)
    replay: tuple[int, int] | None = None  # Kafka record time range [from, to) in ms


def _optional_path(text: str) -> Path | None:
    return None if text.lower() == "none" else Path(text).resolve()


def _iso_to_ms(text: str) -> int:
    return int(parse_utc(text).timestamp() * 1000)


def parse_args(argv: list[str] | None, description: str) -> JobOptions:
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--bounded", action="store_true", help="stop after the offsets present at start")
    p.add_argument("--parallelism", type=int, default=JobOptions.parallelism)
    p.add_argument("--out-of-orderness", type=int, default=JobOptions.out_of_orderness_s)
    p.add_argument("--allowed-lateness", type=int, default=JobOptions.allowed_lateness_s)
    p.add_argument("--dedup-horizon", type=int, default=JobOptions.dedup_horizon_s)
    p.add_argument("--checkpoint-interval", type=int, default=JobOptions.checkpoint_interval_s)
    p.add_argument("--checkpoint-dir", type=Path, default=DEFAULT_CHECKPOINTS)
    p.add_argument("--restore", default=None, help="checkpoint path to restore, or 'latest'")
    p.add_argument("--group-id", default=JobOptions.group_id)
    p.add_argument("--meters", type=Path, default=DEFAULT_METERS_FILE)
    p.add_argument(
        "--prices",
        type=_optional_path,
        default=DEFAULT_PRICES_FILE,
        help="price book for real-time rating ('none': meter without rating)",
    )
    p.add_argument("--subscriptions", type=_optional_path, default=DEFAULT_SUBSCRIPTIONS_FILE)
    p.add_argument(
        "--replay",
        nargs=2,
        metavar=("FROM", "TO"),
        default=None,
        help="re-meter the records with Kafka timestamps in [FROM, TO) (UTC ISO times), stop",
    )
    a = p.parse_args(argv)
    replay = None
    if a.replay is not None:
        lo, hi = (_iso_to_ms(t) for t in a.replay)
        if hi <= lo:
            p.error(f"--replay: {a.replay[1]} is not after {a.replay[0]}")
        replay = (lo, hi)
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
        replay=replay,
    )
