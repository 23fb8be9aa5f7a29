"""The metering job submitted with the Flink CLI to a real standalone cluster (one JobManager, one
TaskManager with 2 slots, started by infra/flink-cluster.sh), not the client's mini-cluster.
Both jobs: the Python job (its Python workers run under the TaskManager, with only what the
client pickled into the UDFs — the scratch topic and database — to go on) and the JVM job (the
client compiles the plan; the cluster runs it with the jars the client ships; `meterflow load`
stores its Kafka outputs). Results are checked against the scenario's ground truth."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.producer import produce_raw
from jobs.supervise import submit_cmd, submit_env
from meterflow.settings import REPO_ROOT
from meterflow.testing.scenario import ScenarioConfig, generate
from tests.integration.conftest import Scratch, make_scratch
from tests.integration.expected import WINDOWS_SQL, actual_windows, expected_windows

CLUSTER_SCRIPT = REPO_ROOT / "infra" / "flink-cluster.sh"
FLINK_LOG_DIR = Path(os.environ.get("METERFLOW_VAR", REPO_ROOT / "var")) / "log" / "flink"
REST_PORT = int(os.environ.get("FLINK_REST_PORT", "8081"))
REST = f"http://127.0.0.1:{REST_PORT}"
# Absolute: whatever a job opens by path is opened again by the cluster's Python workers.
METERS = REPO_ROOT / "schemas" / "meters" / "scenario.yaml"
SUBMIT_TIMEOUT_S = 240


def _rest(path: str) -> dict:
    with urllib.request.urlopen(f"{REST}{path}", timeout=5) as resp:
        return json.loads(resp.read())


def _cluster(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), command],
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def cluster():
    try:
        started = _cluster("start")
        assert started.returncode == 0, f"cluster did not start:\n{started.stderr[-3000:]}"
        overview = _rest("/overview")
        assert (overview["taskmanagers"], overview["slots-total"]) == (1, 2), overview
        yield REST
    finally:
        stopped = _cluster("stop")
        assert stopped.returncode == 0, f"cluster did not stop:\n{stopped.stderr[-3000:]}"
        assert _cluster("status").returncode != 0, "cluster still answers after stop"


def _start() -> datetime:
    # recent (the broker refuses record times far from now) and hour-aligned
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)


# engine -> (the driver script `flink run -py` runs, the job's name)
JOBS = {
    "python": (REPO_ROOT / "jobs" / "metering.py", "meterflow-metering"),
    "jvm": (REPO_ROOT / "jobs" / "streaming" / "__main__.py", "meterflow-streaming"),
}


@pytest.fixture(scope="module", params=sorted(JOBS))
def run(request, cluster, base_settings, tmp_path_factory):
    script, name = JOBS[request.param]
    with make_scratch(base_settings, tmp_path_factory.mktemp("scratch")) as scratch:
        yield _submit(scratch, script, request.param), name


def _submit(scratch: Scratch, script: Path, engine: str):
    sc = generate(ScenarioConfig(seed=5, start=_start(), events=600, malformed_per_kind=1))
    produce_raw(scratch.settings, [(r.key, r.value, r.timestamp_ms) for r in sc.records])
    group_id = f"meterflow-metering-cluster-{scratch.run_id}"
    cmd = submit_cmd(
        f"127.0.0.1:{REST_PORT}",
        ["--bounded", "--meters", str(METERS), "--prices", "none", "--group-id", group_id,
         "--checkpoint-dir", str(scratch.checkpoints)],
        detached=False,
        driver=script,
    )  # fmt: skip
    # METERFLOW_EVENTS_TOPIC / METERFLOW_DB for the client's Settings()
    env = submit_env(FLINK_LOG_DIR, scratch.env())
    submit = subprocess.run(
        cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=SUBMIT_TIMEOUT_S
    )
    if engine == "jvm" and submit.returncode == 0:
        load = subprocess.run(
            [sys.executable, "-m", "meterflow.cli", "load", "--once", "--metrics-port", "0",
             "--group-id", f"meterflow-loader-cluster-{scratch.run_id}"],
            cwd=REPO_ROOT, env=scratch.env(), capture_output=True, text=True,
            timeout=SUBMIT_TIMEOUT_S,
        )  # fmt: skip
        assert load.returncode == 0, load.stderr[-4000:]
    return scratch, sc, group_id, submit


def test_cli_submission_runs_the_bounded_job_to_finished_on_the_cluster(run):
    (_, _, group_id, submit), name = run
    output = submit.stdout + submit.stderr
    assert submit.returncode == 0, (
        f"flink run failed ({submit.returncode}); cluster logs in {FLINK_LOG_DIR}:\n"
        f"{output[-4000:]}"
    )
    found = re.search(r"Job has been submitted with JobID ([0-9a-f]{32})", output)
    assert found, output[-2000:]
    job = _rest(f"/jobs/{found.group(1)}")
    assert (job["name"], job["state"]) == (f"{name}[{group_id}]", "FINISHED")
    listed = {j["jid"]: j["state"] for j in _rest("/jobs/overview")["jobs"]}
    assert listed[found.group(1)] == "FINISHED"


def test_every_meter_window_matches_ground_truth(run):
    (scratch, sc, _, submit), _name = run
    assert submit.returncode == 0, "the job did not run (see the submission test)"
    assert actual_windows(scratch.query(WINDOWS_SQL)) == expected_windows(sc.accepted)


def test_each_accepted_event_is_stored_exactly_once(run):
    (scratch, sc, _, submit), _name = run
    assert submit.returncode == 0, "the job did not run (see the submission test)"
    ids = [r[0] for r in scratch.query("SELECT event_id FROM {db}.events FINAL")]
    assert len(ids) == len(set(ids))
    assert set(ids) == {e.event_id for e in sc.accepted}
