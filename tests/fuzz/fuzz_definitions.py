"""Coverage-guided fuzzing of the definition loaders (meters, price books, subscriptions, credit
grants) with atheris.

    .venv/bin/python tests/fuzz/fuzz_definitions.py [libFuzzer flags] [CORPUS_DIR ...]

(`make fuzz` runs it for a bounded time.) One input is one definition file: byte 0 picks the
loader (its value modulo 4: meters, price book, subscriptions, credits), the rest are the file's
bytes, written to a file (input.yaml beside the corpus directory) that the loader reads as it
reads any other, so the text decoding in `read_yaml` is fuzzed too. The seeds (written into the
first corpus directory, default build/fuzz/definitions/corpus) are the repo's files under
schemas/, each for its loader.

The contract checked for every input: the loader returns, or raises its own error type
(MeterConfigError, PriceConfigError, SubscriptionConfigError, CreditConfigError, each a
ValueError) with a message that starts with the file's path, on one line unless it is
PyYAML's; any other exception (TypeError, KeyError, RecursionError, decimal.InvalidOperation, a
plain ValueError, ...) escapes and is a crash.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import atheris

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

with atheris.instrument_imports(include=["meterflow", "yaml"]):
    import yaml  # noqa: F401  (instrumented: the pure-Python SafeLoader is fuzzed with us)

    from meterflow.credits import CreditConfigError, load_grants
    from meterflow.meters import MeterConfigError, load_meters
    from meterflow.price_book import PriceConfigError, load_price_book
    from meterflow.subscriptions import SubscriptionConfigError, load_subscriptions

DEFAULT_CORPUS = ROOT / "build" / "fuzz" / "definitions" / "corpus"
SCHEMAS = ROOT / "schemas"

# selector byte -> (name, loader, the one error type it may raise, seed files)
LOADERS: list[tuple[str, Callable[[Path], Any], type[ValueError], list[Path]]] = [
    ("meters", load_meters, MeterConfigError, sorted((SCHEMAS / "meters").glob("*.yaml"))),
    ("prices", load_price_book, PriceConfigError, sorted((SCHEMAS / "prices").glob("*.yaml"))),
    (
        "subscriptions",
        load_subscriptions,
        SubscriptionConfigError,
        [SCHEMAS / "customers" / "default.yaml", SCHEMAS / "customers" / "scenario.yaml"],
    ),
    ("credits", load_grants, CreditConfigError, [SCHEMAS / "customers" / "credits.yaml"]),
]

# the file each input is written to, beside the corpus directory (set by main)
FILE = Path("definitions.yaml")


def seeds() -> list[bytes]:
    out = []
    for i, (_, _, _, files) in enumerate(LOADERS):
        for f in files:
            out.append(bytes([i]) + f.read_bytes())
    return out


def write_seeds(corpus: Path) -> int:
    corpus.mkdir(parents=True, exist_ok=True)
    for s in seeds():
        (corpus / f"seed-{hashlib.sha1(s).hexdigest()}").write_bytes(s)
    return len(list(corpus.iterdir()))


# ----------------------------------------------------------------------- outcome features
# As in fuzz_decoding: one instrumented branch per kind of outcome (loader x loaded or the
# field an error names, hashed into buckets), so inputs reaching a new error stay in the corpus.


def _ladder(name: str, n: int) -> Callable[[int], int]:
    lines = [f"def {name}(k):"]
    for i in range(n):
        lines += [f"    if k == {i}:", f"        return {i}"]
    lines.append("    return -1")
    namespace: dict[str, Any] = {}
    exec("\n".join(lines), namespace)  # generated code: one branch per key
    return atheris.instrument_func(namespace[name])


_BUCKETS = 256
_by_outcome = _ladder("by_outcome", _BUCKETS)


def outcome(loader: int, message: str | None) -> None:
    if message is None:
        key = f"{loader} loaded"
    else:
        # the field named and the first words of why: "field 'tiers[0].up_to'" -> "tiers[N].up_to"
        fld = message.partition("field '")[2].partition("'")[0]
        fld = "".join("N" if c.isdigit() else c for c in fld)
        why = message.rpartition("': ")[2][:12] if fld else message.partition(": ")[2][:16]
        key = f"{loader} {fld} {why}"
    _by_outcome(int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest()) % _BUCKETS)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    choice = data[0] % len(LOADERS)
    _, load, error_type, _ = LOADERS[choice]
    FILE.write_bytes(data[1:])
    try:
        load(FILE)
    except error_type as exc:
        message = str(exc)
        assert message.startswith(f"{FILE}: "), message
        # PyYAML's own messages span lines (they show where in the file); ours are one line
        yaml_error = message.startswith(f"{FILE}: not valid YAML: ")
        assert yaml_error or "\n" not in message, message
        outcome(choice, message)
        return
    outcome(choice, None)


def main(argv: list[str]) -> None:
    dirs = [a for a in argv[1:] if not a.startswith("-")]
    flags = [a for a in argv[1:] if a.startswith("-")]
    if not dirs:
        dirs = [str(DEFAULT_CORPUS)]
    global FILE
    FILE = Path(dirs[0]).resolve().parent / "input.yaml"
    n = write_seeds(Path(dirs[0]))
    print(f"fuzz_definitions: {n} inputs in {dirs[0]}", flush=True)
    sys.setrecursionlimit(1000)  # the default: a loader must not need more
    atheris.Setup([argv[0], *flags, *dirs], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
