"""A reduced run of the fuzzers in tests/fuzz (make fuzz runs them for minutes): each harness
fuzzes for 20 s from its seeds, both at once, and must end without a crash. It runs the real
fuzzer (atheris, a dev dependency), so a missing atheris fails here rather than skipping."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
SECONDS = 20
# libFuzzer's last line: "Done 123456 runs in 20 second(s)"
DONE = re.compile(r"^Done (\d+) runs in (\d+) second", re.MULTILINE)


def test_both_fuzzers_run_without_a_crash(tmp_path: Path):
    runs = {}
    for name in ("fuzz_decoding", "fuzz_definitions"):
        work = tmp_path / name
        work.mkdir()
        cmd = [
            sys.executable,
            str(FUZZ / f"{name}.py"),
            f"-max_total_time={SECONDS}",
            "-timeout=30",
            "-seed=1",
            f"-artifact_prefix={work}/",
            str(work / "corpus"),
        ]
        runs[name] = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    for name, proc in runs.items():
        out, _ = proc.communicate(timeout=SECONDS + 60)
        tail = "\n".join(line for line in out.splitlines() if "Instrumenting" not in line)[-3000:]
        assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{tail}"
        done = DONE.search(out)
        assert done and int(done.group(1)) > 100, f"{name} did not fuzz:\n{tail}"
        assert not list((tmp_path / name).glob("crash-*")), tail
        # the fuzzer's own summary, shown with pytest -s / -rA
        stats = [line for line in out.splitlines() if "\tDONE " in line or line.startswith("Done ")]
        print(name, *stats, sep="\n  ")
