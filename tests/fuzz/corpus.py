"""What both fuzz harnesses do with their command line and their seed corpus."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def split_args(argv: list[str], default_corpus: Path) -> tuple[list[str], list[str]]:
    """libFuzzer's command line as (corpus directories, flags); the default corpus when none."""
    dirs = [a for a in argv[1:] if not a.startswith("-")]
    flags = [a for a in argv[1:] if a.startswith("-")]
    return dirs or [str(default_corpus)], flags


def write_seeds(corpus: Path, seeds: Iterable[bytes]) -> int:
    """Add the seeds to `corpus` (named by content, so rewriting is a no-op); inputs in it."""
    corpus.mkdir(parents=True, exist_ok=True)
    for s in seeds:
        (corpus / f"seed-{hashlib.sha1(s).hexdigest()}").write_bytes(s)
    return len(list(corpus.iterdir()))
