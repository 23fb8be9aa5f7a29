"""The command line both metering jobs share (jobs/metering.py and jobs/streaming)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from meterflow.meters import DEFAULT_METERS_FILE
from meterflow.price_book import DEFAULT_PRICES_FILE
from meterflow.settings import REPO_ROOT
from meterflow.subscriptions import DEFAULT_SUBSCRIPTIONS_FILE
from meterflow.utc import parse_utc

DEFAULT_CHECKPOINTS = REPO_ROOT / "var" / "checkpoints"

# How both jobs restart after a failure (docs/decisions/0015-restarts.md): from the last
# checkpoint, after 1 s, 2 s, 4 s ... at most 2 min apart (±10 % jitter), never giving up; the
# delay falls back to 1 s once the job has run for 10 min without failing. A broker, registry
# or ClickHouse outage of any length is waited out; a failure that repeats shows as restarts
# (flink_jobmanager_job_numRestarts, alert MeteringJobRestarting), not as a stopped job.
RESTART_STRATEGY = {
    "restart-strategy.type": "exponential-delay",
    "restart-strategy.exponential-delay.initial-backoff": "1 s",
    "restart-strategy.exponential-delay.max-backoff": "2 min",
    "restart-strategy.exponential-delay.backoff-multiplier": "2.0",
    "restart-strategy.exponential-delay.jitter-factor": "0.1",
    "restart-strategy.exponential-delay.reset-backoff-threshold": "10 min",
    "restart-strategy.exponential-delay.attempts-before-reset-backoff": str(2**31 - 1),
}


def optional_path(text: str) -> Path | None:
    """A file argument, or 'none'; absolute, since a cluster's workers may run elsewhere."""
    return None if text.lower() == "none" else Path(text).resolve()


def iso_to_ms(text: str) -> int:
    return int(parse_utc(text).timestamp() * 1000)


def add_job_args(p: argparse.ArgumentParser, defaults: Any) -> None:
    """The options of both jobs; `defaults` is the job's options class (its field defaults)."""
    p.add_argument("--bounded", action="store_true", help="stop after the offsets present at start")
    p.add_argument("--parallelism", type=int, default=defaults.parallelism)
    p.add_argument("--out-of-orderness", type=int, default=defaults.out_of_orderness_s)
    p.add_argument("--allowed-lateness", type=int, default=defaults.allowed_lateness_s)
    p.add_argument("--dedup-horizon", type=int, default=defaults.dedup_horizon_s)
    p.add_argument("--checkpoint-interval", type=int, default=defaults.checkpoint_interval_s)
    p.add_argument("--checkpoint-dir", type=Path, default=DEFAULT_CHECKPOINTS)
    p.add_argument("--restore", default=None, help="checkpoint path to restore, or 'latest'")
    p.add_argument("--group-id", default=defaults.group_id)
    p.add_argument("--meters", type=Path, default=DEFAULT_METERS_FILE)
    p.add_argument(
        "--prices",
        type=optional_path,
        default=DEFAULT_PRICES_FILE,
        help="price book for real-time rating ('none': meter without rating)",
    )
    p.add_argument("--subscriptions", type=optional_path, default=DEFAULT_SUBSCRIPTIONS_FILE)
    p.add_argument(
        "--replay",
        nargs=2,
        metavar=("FROM", "TO"),
        default=None,
        help="re-meter the records with Kafka timestamps in [FROM, TO) (UTC ISO times), stop",
    )


def replay_range(p: argparse.ArgumentParser, a: argparse.Namespace) -> tuple[int, int] | None:
    """--replay as [from, to) in ms; an empty range is a usage error."""
    if a.replay is None:
        return None
    lo, hi = (iso_to_ms(t) for t in a.replay)
    if hi <= lo:
        p.error(f"--replay: {a.replay[1]} is not after {a.replay[0]}")
    return lo, hi


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest completed checkpoint of any run under a job's checkpoint directory."""
    found = sorted(checkpoint_dir.glob("*/chk-*/_metadata"), key=lambda p: p.stat().st_mtime)
    return found[-1].parent if found else None


def resolve_checkpoint(restore_from: str, checkpoint_dir: Path) -> str:
    """--restore's checkpoint: the path given, or for 'latest' the newest completed one."""
    if restore_from != "latest":
        return str(restore_from)
    found = latest_checkpoint(checkpoint_dir)
    if found is None:
        raise SystemExit(f"--restore latest: no completed checkpoint under {checkpoint_dir}")
    return found.as_uri()
