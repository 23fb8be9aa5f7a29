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


def _cpu_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(fields[11]) + int(fields[12])  # utime, stime


class TreeCpu:
    """CPU seconds a process tree has used, counting processes that have exited since (at their
    last sample: call `seconds` often, it under-counts an exited process by at most one
    interval). A bounded job's JVM exits while the loader is still storing its output."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.last: dict[int, int] = {}

    def seconds(self) -> float:
        for p in _tree(self.pid):
            t = _cpu_ticks(p)
            if t is not None:
                self.last[p] = t
        return sum(self.last.values()) / _TICK


def stack_pids() -> dict[str, int]:
    """The local stack's broker and ClickHouse (infra/stack.sh's pid files)."""
    out = {}
    for name in ("kafka", "clickhouse"):
        f = REPO_ROOT / "var" / "run" / f"{name}.pid"
        with contextlib.suppress(FileNotFoundError, ValueError):
            out[name] = int(f.read_text())
    return out
