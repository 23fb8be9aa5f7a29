"""CPU and memory of process trees on this machine, for the benchmarks (Linux /proc)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from meterflow.settings import REPO_ROOT


def _tree(pid: int) -> list[int]:
    """A process and all its descendants (the job's JVM is a child of its Python process)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            for t in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (t / "children").read_text().split()]
    return out


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process tree."""
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process tree has used so far."""
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def stack_pids() -> dict[str, int]:
    """The local stack's broker and ClickHouse (infra/stack.sh's pid files)."""
    out = {}
    for name in ("kafka", "clickhouse"):
        f = REPO_ROOT / "var" / "run" / f"{name}.pid"
        with contextlib.suppress(FileNotFoundError, ValueError):
            out[name] = int(f.read_text())
    return out
