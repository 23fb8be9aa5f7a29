"""The package layout holds: the domain modules (every module directly in `meterflow/`) are pure.

Pure means importable without Flink, Kafka or ClickHouse clients, and never reaching into the
adapters (`connectors`), the jobs, the operator tooling (`meterflow.cli`) or the SDK: those
depend on the domain, not the other way round (docs/decisions/0008-package-layout.md).
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys

import pytest

import meterflow
from meterflow.settings import REPO_ROOT

DOMAIN = sorted(
    f"meterflow.{m.name}" for m in pkgutil.iter_modules(meterflow.__path__) if not m.ispkg
)
SERVICE_CLIENTS = ("pyflink", "confluent_kafka", "clickhouse_driver")
OUTER_LAYERS = ("connectors", "jobs", "meterflow.cli", "meterflow.sdk")


def test_the_domain_is_what_the_layout_says():
    # a guard against an empty list making the checks below pass vacuously
    for expected in ("meterflow.pricing", "meterflow.price_book", "meterflow.catalog"):
        assert expected in DOMAIN
    assert not {"meterflow.cli", "meterflow.sdk", "meterflow.testing"} & set(DOMAIN)


def test_importing_every_domain_module_loads_no_service_client():
    code = (
        "import importlib, json, sys\n"
        f"for name in {DOMAIN!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    loaded = json.loads(out.stdout)
    offending = [m for m in loaded if m.split(".")[0] in SERVICE_CLIENTS]
    assert offending == []


def _imported_modules(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):  # function-level (lazy) imports count too
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("module", DOMAIN)
def test_domain_modules_never_import_the_outer_layers(module: str):
    path = REPO_ROOT / (module.replace(".", "/") + ".py")
    imported = _imported_modules(ast.parse(path.read_text(), str(path)))
    outer = sorted(
        m for m in imported if any(m == o or m.startswith(o + ".") for o in OUTER_LAYERS)
    )
    assert outer == []
