"""A dependency-free progress bar for long operator commands, on stderr.

On a terminal it redraws one line; otherwise (logs, CI) it prints a line per 10 %, so
progress stays readable in a log file."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label, self.total = label, max(total, 1)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1

    def __call__(self, done: int, total: int | None = None) -> None:
        if total is not None:
            self.total = max(total, 1)
        frac = min(done / self.total, 1.0)
        now = time.monotonic()
        if self.tty:
            if now - self._last_draw < 0.2 and done < self.total:
                return
            self._last_draw = now
            bar = "#" * int(30 * frac)
            self.stream.write(
                f"\r{self.label} [{bar:<30}] {frac:6.1%} {done:,}/{self.total:,} "
                f"{now - self.t0:5.1f}s"
            )
            if done >= self.total:
                self.stream.write("\n")
        else:
            decile = int(frac * 10)
            if decile == self._last_decile:
                return
            self._last_decile = decile
            self.stream.write(f"{self.label}: {frac:.0%} ({done:,}/{self.total:,})\n")
        self.stream.flush()
