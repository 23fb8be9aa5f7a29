"""Prometheus config and rules are valid, and every alert is unit-tested (promtool, no server).

promtool comes with Debian's `prometheus` package, which `make setup` installs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from meterflow.settings import REPO_ROOT

PROM_DIR = REPO_ROOT / "infra" / "prometheus"
RULES = PROM_DIR / "rules.yml"
RULES_TEST = PROM_DIR / "rules_test.yml"


def _promtool() -> str:
    found = shutil.which("promtool") or "/usr/bin/promtool"
    assert Path(found).exists(), "promtool missing: run `make setup` (Debian package prometheus)"
    return found


def _run(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [_promtool(), *args], cwd=PROM_DIR, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"promtool {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _ports() -> dict[str, str]:
    """Defaults of infra/ports.env (`NAME=${NAME:-default}`)."""
    text = (REPO_ROOT / "infra" / "ports.env").read_text()
    return dict(re.findall(r"^(\w+)=\$\{\w+:-([^}]*)\}", text, re.MULTILINE))


def render_config(out_dir: Path) -> Path:
    """infra/prometheus/prometheus.yml.in rendered as infra/stack.sh renders it."""
    ports = _ports()
    lo, hi = (int(p) for p in ports["FLINK_PROM_PORTS"].split("-"))
    values = {
        "RULES_FILE": str(RULES),
        "FLINK_TARGETS": ", ".join(f'"127.0.0.1:{p}"' for p in range(lo, hi + 1)),
        "PROMETHEUS_PORT": ports["PROMETHEUS_PORT"],
        "METERFLOW_EXPORTER_PORT": ports["METERFLOW_EXPORTER_PORT"],
        "METERFLOW_LOADER_PORT": ports["METERFLOW_LOADER_PORT"],
    }
    text = (PROM_DIR / "prometheus.yml.in").read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    out = out_dir / "prometheus.yml"
    out.write_text(text)
    return out


def _alerts() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r["alert"] for g in groups for r in g["rules"] if "alert" in r]


def test_config_renders_and_passes_promtool(tmp_path):
    config = render_config(tmp_path)
    assert "@" not in re.sub(r"#.*", "", config.read_text()), "an unfilled @PLACEHOLDER@"
    parsed = yaml.safe_load(config.read_text())
    jobs = {c["job_name"]: c for c in parsed["scrape_configs"]}
    assert set(jobs) == {"flink", "meterflow", "meterflow-loader", "prometheus"}
    targets = [
        t for c in parsed["scrape_configs"] for s in c["static_configs"] for t in s["targets"]
    ]
    assert all(t.startswith("127.0.0.1:") for t in targets)
    assert len(jobs["flink"]["static_configs"][0]["targets"]) == 11
    assert parsed["global"]["scrape_interval"] == "5s"
    out = _run("check", "config", str(config))
    assert "SUCCESS" in out.stdout + out.stderr


def test_rules_pass_promtool_check():
    out = _run("check", "rules", str(RULES))
    assert re.search(r"SUCCESS: \d+ rules found", out.stdout + out.stderr)


def test_rule_unit_tests_pass():
    out = _run("test", "rules", str(RULES_TEST))
    assert "SUCCESS" in out.stdout + out.stderr


def test_required_alerts_exist():
    assert {
        "MeterflowIngestionStalled",
        "MeterflowEventTimeLagHigh",
        "MeterflowDeadLetterRateHigh",
        "MeterflowReconciliationGapUnexplained",
    } <= set(_alerts())


@pytest.mark.parametrize("alert", _alerts())
def test_every_alert_is_tested_firing_and_silent(alert):
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    cases = [c for t in tests for c in t.get("alert_rule_test", []) if c["alertname"] == alert]
    assert any(c["exp_alerts"] for c in cases), f"{alert}: no test case where it fires"
    assert any(not c["exp_alerts"] for c in cases), f"{alert}: no test case where it is silent"
    assert all(
        a["exp_labels"].get("severity") in {"warning", "critical"}
        for c in cases
        for a in c["exp_alerts"]
    )
