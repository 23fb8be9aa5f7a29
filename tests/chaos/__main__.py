"""make chaos: several harness runs, each injecting every fault kind once in a random order;
prints each run's outcome and the fault table (Markdown) at the end.

    python -m tests.chaos [--runs 5] [--faults kafka,loader] [--rate 2400]
        [--clickhouse-unreachable 600] [--registry-down 60] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

from meterflow.settings import Settings
from meterflow.testing.clickhouse_users import use_scratch_users
from tests.chaos.harness import FAULTS, Plan, run, table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--faults", default=",".join(FAULTS), help="comma-separated fault kinds")
    p.add_argument("--rate", type=float, default=2400.0, help="events/s asked, all clients")
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--clickhouse-unreachable", type=float, default=600.0, help="seconds")
    p.add_argument("--registry-down", type=float, default=60.0, help="seconds")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", type=Path, default=None, help="keep each run's logs under DIR")
    a = p.parse_args(argv)
    use_scratch_users()  # the pipeline runs in a database of each run
    kinds = [k for k in a.faults.split(",") if k]
    unknown = set(kinds) - set(FAULTS)
    if unknown:
        p.error(f"unknown faults {sorted(unknown)} (known: {', '.join(FAULTS)})")
    outcomes = []
    for r in range(a.runs):
        seed = a.seed * 100 + r
        order = random.Random(seed).sample(kinds, len(kinds))
        plan = Plan(
            faults=order, clients=a.clients, rate=a.rate, seed=seed,
            clickhouse_unreachable_s=a.clickhouse_unreachable, registry_down_s=a.registry_down,
        )  # fmt: skip
        print(f"run {r + 1}/{a.runs}: {', '.join(order)}", flush=True)
        with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
            work = a.keep / f"run-{r + 1}" if a.keep else Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            o = run(Settings(), work, plan, say=lambda m: print(m, flush=True))
        outcomes.append(o)
        print(
            f"run {r + 1}: accepted {o.accepted} ids ({o.sent_rate:.0f}/s), stored {o.stored}, "
            f"lost {o.lost}, unexpected {o.unexpected}, double-counted {o.double_counted}, "
            f"late {o.late}; windows {'equal' if not o.window_diff else 'DIFFER'}, period cost "
            f"{o.period_cost_ok}, alerts {o.alerts_ok}, dead letters {o.dead_letters_ok}, "
            f"{o.invoices} invoices of the close {'equal' if o.invoices_ok else 'DIFFER'}",
            flush=True,
        )
        for problem in o.problems:
            print(f"  PROBLEM: {problem}", flush=True)
    print(table(outcomes))
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
