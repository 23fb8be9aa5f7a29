"""Coverage-guided fuzzing of the definition loaders (meters, price books, subscriptions, credit
grants) with atheris.

    .venv/bin/python tests/fuzz/fuzz_definitions.py [libFuzzer flags] [CORPUS_DIR ...]

(`make fuzz` runs it for a bounded time.) One input is one definition file: byte 0 picks the
loader (its value modulo 4: meters, price book, subscriptions, credits). With its top bit set
(structured mode) the rest of the input chooses up to four edits (replace, drop, add,
duplicate, rename) of a parsed seed file, with values from a pool of wrong types and extremes,
written back as YAML; otherwise the rest are the file's raw bytes. The file is written beside
the corpus directory (input.yaml) and read by the loader as any other, so the text decoding in
`read_yaml` is fuzzed too. The seeds (written into the first corpus directory, default
build/fuzz/definitions/corpus) are the repo's files under schemas/, each for its loader, and a
few structured-mode inputs per loader.

The contract checked for every input: the loader returns, or raises its own error type
(MeterConfigError, PriceConfigError, SubscriptionConfigError, CreditConfigError, each a
ValueError) with a message that starts with the file's path, on one line unless it is
PyYAML's; any other exception (TypeError, KeyError, RecursionError, decimal.InvalidOperation, a
plain ValueError, ...) escapes and is a crash.
"""

from __future__ import annotations

import copy
import hashlib
import sys
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import atheris

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

with atheris.instrument_imports(include=["meterflow", "yaml"]):
    import yaml

    from meterflow.credits import CreditConfigError, load_grants
    from meterflow.meters import MeterConfigError, load_meters
    from meterflow.price_book import PriceConfigError, load_price_book
    from meterflow.subscriptions import SubscriptionConfigError, load_subscriptions

from tests.fuzz.corpus import split_args, write_seeds  # noqa: E402

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


STRUCTURED = 0x80  # selector bit: the rest drives edits of a parsed seed file, not raw bytes

# Values a structured edit puts in place of a field, item or key: wrong types, unhashables,
# extremes of numbers and times, near-miss names.
_UTC1 = timezone(timedelta(hours=1))
POOL: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    3,
    12,
    2**31,
    2**63,
    -(2**63),
    10**30,
    1.5,
    -0.0,
    float("nan"),
    float("inf"),
    "",
    " ",
    "x",
    "\u00a0",
    "\x00",
    "m",
    "p",
    "e",
    "c",
    "q",
    "1",
    "0",
    "-1",
    "-0",
    "0.001",
    "1e3",
    "1_000",
    "\u0661\u0662",
    "NaN",
    "sNaN",
    "-Infinity",
    "1e999999",
    "-1e9999999999",
    "1e-999999",
    "9" * 120,
    "0." + "0" * 120 + "1",
    "99999999999999999999999999.999999999999",
    [],
    [1],
    ["a", "b"],
    ["a", "a"],
    [[1]],
    {},
    {"a": 1},
    {"in": []},
    {"in": ["x"]},
    {"not_in": ["x"]},
    {"exists": True},
    {"exists": "yes"},
    {"up_to": "10", "unit_price": "1"},
    {"unit_price": "1"},
    {"limit": "10"},
    {"model": "per_unit", "unit_price": "1"},
    {"plan": "p", "requested_at": "2026-02-01"},
    date(1, 1, 1),
    date(9999, 12, 31),
    date(2026, 2, 28),
    datetime(2026, 1, 31, 23, 59),
    datetime(1, 1, 1, tzinfo=_UTC1),
    datetime(9999, 12, 31, 23, 59, tzinfo=timezone(-timedelta(hours=1))),
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "2026-02-30",
    "2026-01-01T00:00",
    "2026-01-01 00:00:00Z",
    "calendar",
    "anniversary",
    "ANNIVERSARY",
    "per_unit",
    "graduated",
    "volume",
    "package",
    "flat_fee",
    "percentage",
    "USD",
    "JPY",
    "BHD",
    "usd",
    "XXX",
    "SUM",
    "COUNT",
    "MAX",
    "UNIQUE_COUNT",
    "LATEST",
    "avg",
    "minute",
    "hour",
    "day",
    "week",
    "value",
    "property",
    "Model.x-1",
    "bad name",
    "a" * 200,
    b"\x00\xff",
    frozenset({"a"}),
]
FIELDS = sorted(
    {
        "id",
        "version",
        "event_name",
        "aggregation",
        "window",
        "quantity",
        "from",
        "property",
        "allow_negative",
        "multiply_by",
        "table",
        "default",
        "unique_property",
        "filters",
        "group_by",
        "plans",
        "currency",
        "versions",
        "effective_from",
        "minimum",
        "charges",
        "quotas",
        "model",
        "unit_price",
        "tiers",
        "up_to",
        "flat_fee",
        "package_size",
        "package_price",
        "fee",
        "included_units",
        "overage_unit_price",
        "rate",
        "per_event_min",
        "per_event_max",
        "free_units",
        "limit",
        "hard_cap",
        "subscriptions",
        "customer_id",
        "plan",
        "start",
        "anchor",
        "period_months",
        "end",
        "plan_changes",
        "requested_at",
        "grants",
        "amount",
        "effective_at",
        "expires_at",
        "priority",
        "meters",
    }
)
SEED_DOCS = [[yaml.safe_load(f.read_bytes()) for f in files] for _, _, _, files in LOADERS]


def _slots(node: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key or index) of a parsed document, depth first."""
    if isinstance(node, dict):
        for k in list(node):
            out.append((node, k))
            _slots(node[k], out)
    elif isinstance(node, list):
        for i in range(len(node)):
            out.append((node, i))
            _slots(node[i], out)
    return out


def structured(choice: int, data: bytes) -> bytes:
    """A seed file of this loader with a few edits the fuzzer's bytes choose, as YAML."""
    fdp = atheris.FuzzedDataProvider(data)
    docs = SEED_DOCS[choice]
    doc = copy.deepcopy(docs[fdp.ConsumeIntInRange(0, len(docs) - 1)])
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        slots = _slots(doc, [])
        if not slots:
            break
        node, key = slots[fdp.ConsumeIntInRange(0, len(slots) - 1)]
        op = fdp.ConsumeIntInRange(0, 4)
        value = copy.deepcopy(POOL[fdp.ConsumeIntInRange(0, len(POOL) - 1)])
        if op <= 1:
            node[key] = value  # replace
        elif op == 2:
            del node[key]  # drop a field or an item
        elif op == 3 and isinstance(node, dict):
            node[FIELDS[fdp.ConsumeIntInRange(0, len(FIELDS) - 1)]] = value  # add or overwrite
        elif op == 3:
            node.insert(key, copy.deepcopy(node[key]))  # duplicate an item
        elif isinstance(node, dict) and isinstance(value, str | int):
            node[value] = node.pop(key)  # rename a key
    try:
        return yaml.safe_dump(doc, allow_unicode=True).encode()
    except yaml.YAMLError:  # a value safe_dump cannot write (none of POOL so far)
        return b""


def seeds() -> list[bytes]:
    out = []
    for i, (_, _, _, files) in enumerate(LOADERS):
        for f in files:
            out.append(bytes([i]) + f.read_bytes())
        for n in range(8):  # structured mode: a few edits' worth of bytes each
            out.append(bytes([i | STRUCTURED]) + hashlib.sha256(bytes([i, n])).digest())
    return out


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
    FILE.write_bytes(structured(choice, data[1:]) if data[0] & STRUCTURED else data[1:])
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
    dirs, flags = split_args(argv, DEFAULT_CORPUS)
    global FILE
    FILE = Path(dirs[0]).resolve().parent / "input.yaml"
    n = write_seeds(Path(dirs[0]), seeds())
    print(f"fuzz_definitions: {n} inputs in {dirs[0]}", flush=True)
    sys.setrecursionlimit(1000)  # the default: a loader must not need more
    atheris.Setup([argv[0], *flags, *dirs], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
