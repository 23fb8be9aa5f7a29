"""Keep the JVM metering job running on a standalone Flink cluster.

Flink restarts the job itself after a TaskManager, broker or registry failure (the restart
strategy never gives up, decision 0015). What it cannot survive without high availability is
the JobManager's own death: a JobManager started again knows no jobs. This supervisor watches the
cluster's REST API and, whenever the cluster is up but does not run the job (by its name,
`meterflow-streaming[<group id>]`), submits it again with `flink run -d`, restoring the newest
retained checkpoint under --checkpoint-dir (fresh when there is none yet). It does not start
Flink daemons: restarting a crashed JobManager process is the process manager's job (systemd,
Kubernetes, or in the fault harness the harness). docs/decisions/0017-jobmanager-recovery.md.

    python -m jobs.supervise --checkpoint-dir DIR --group-id G [--rest URL] -- JOB ARGS...

A job that FINISHED (a bounded run) ends the supervisor with status 0; a CANCELED one (an
operator's decision) with status 3, without resubmitting.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyflink

from jobs.job_args import latest_checkpoint
from meterflow.settings import REPO_ROOT

FLINK_HOME = Path(pyflink.__file__).resolve().parent
DRIVER = REPO_ROOT / "jobs" / "streaming" / "__main__.py"
# states in which the cluster is running the job, or about to
ALIVE = {"INITIALIZING", "CREATED", "RUNNING", "RESTARTING", "RECONCILING", "FAILING", "CANCELLING"}
log = logging.getLogger("supervise")


def job_name(group_id: str) -> str:
    return f"meterflow-streaming[{group_id}]"


def submit_cmd(rest: str, job_args: list[str], detached: bool, driver: Path = DRIVER) -> list[str]:
    """`flink run` of a job's driver (the JVM job's by default) against the cluster at `rest`
    (host:port or URL)."""
    address = rest.removeprefix("http://").removeprefix("https://")
    return [
        str(FLINK_HOME / "bin" / "flink"),
        "run",
        *(["-d"] if detached else []),
        "-m",
        address,
        # the client's driver and the TaskManagers' workers: the venv the repo is installed in
        "-pyclientexec",
        sys.executable,
        "-pyexec",
        sys.executable,
        "-py",
        str(driver),
        "--",
        *job_args,
    ]


def submit_env(log_dir: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The Flink client's environment: the repo's cluster configuration, on top of `base`
    (this process's environment by default)."""
    return {
        **(os.environ if base is None else base),
        "FLINK_CONF_DIR": str(REPO_ROOT / "infra" / "flink"),
        "FLINK_LOG_DIR": str(log_dir),
        "FLINK_IDENT_STRING": "meterflow",  # the client log's name, as the daemons' logs
    }


def job_states(rest: str, name: str) -> list[str] | None:
    """The states of the cluster's jobs called `name`; None when the REST API does not answer."""
    try:
        with urllib.request.urlopen(f"{rest}/jobs/overview", timeout=5) as r:
            jobs = json.loads(r.read())["jobs"]
    except (OSError, ValueError, KeyError):  # URLError is an OSError
        return None
    return [j["state"] for j in jobs if j["name"] == name]


def supervise(
    rest: str, group_id: str, checkpoint_dir: Path, job_args: list[str], interval_s: float
) -> int:
    name = job_name(group_id)
    args = [
        "--group-id", group_id, "--checkpoint-dir", str(checkpoint_dir), "--detached", *job_args
    ]  # fmt: skip
    log_dir = Path(os.environ.get("METERFLOW_VAR", REPO_ROOT / "var")) / "log" / "flink"
    submissions = 0
    while True:
        states = job_states(rest, name)
        if states is None or ALIVE & set(states):
            time.sleep(interval_s)
            continue
        if "FINISHED" in states:
            log.info("%s finished", name)
            return 0
        if "CANCELED" in states:
            log.info("%s was cancelled: not resubmitting", name)
            return 3
        # the job keeps its checkpoints under <checkpoint dir>/<group id>/<Flink job id>/
        restore = ["--restore", "latest"] if latest_checkpoint(checkpoint_dir / group_id) else []
        submissions += 1
        log.info("submitting %s (%s, submission %d)", name, restore or "fresh", submissions)
        started = time.monotonic()
        done = subprocess.run(
            submit_cmd(rest, [*args, *restore], detached=True),
            cwd=REPO_ROOT,
            env=submit_env(log_dir),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            # the cluster went away mid-submission, or the restore failed: look again shortly
            log.warning("submission failed (%d): %s", done.returncode, done.stderr[-2000:])
        else:
            log.info("submitted in %.1f s", time.monotonic() - started)
        time.sleep(interval_s)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rest", default="http://127.0.0.1:8081", help="the cluster's REST API")
    p.add_argument("--group-id", required=True)
    p.add_argument("--checkpoint-dir", type=Path, required=True)
    p.add_argument("--interval", type=float, default=2.0, help="seconds between looks")
    p.add_argument("job_args", nargs=argparse.REMAINDER, help="after --: the job's own options")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[supervise] %(asctime)s %(message)s")
    job_args = a.job_args[1:] if a.job_args[:1] == ["--"] else a.job_args
    return supervise(a.rest, a.group_id, a.checkpoint_dir.resolve(), job_args, a.interval)


if __name__ == "__main__":
    raise SystemExit(main())
