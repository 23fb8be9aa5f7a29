"""The Python reference decoder against the JVM one on fuzzed payloads.

    .venv/bin/python tests/fuzz/differential.py [--mutants N] [PATH ...]

PATHs are corpus directories or files of tests/fuzz/fuzz_decoding.py (default: its corpus under
build/fuzz/decoding and the crash/timeout files beside it); each input's record value is decoded
by both decoders with fuzz_decoding's schema lookup, and with `--mutants N`, N more payloads
made from them by random byte-level mutations. Both answers are compared as java/'s VectorsTest
compares a vector (status; for an accepted event every field, the value at scale 12, the
properties and their canonical JSON).

The JVM side is java/src's AvroEventDecoder, compiled here with tests/fuzz/DecodeDiff.java into
build/fuzz/java-diff (offline: the classpath comes from Maven's local repository, which `make
setup` fills). Disagreements are printed, grouped, and written to
build/fuzz/decoding/disagreements.jsonl as vector-shaped lines (name, payload_hex,
max_record_bytes, python, jvm; schema ids as in fuzz_decoding.SCHEMAS) to decide from the
contract which decoder is wrong. The known and documented differences (see `known`) are
counted apart. Exit status 1 when any other disagreement or a JVM exception is found.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.vectors.reference import python_decode  # noqa: E402

OUT = ROOT / "build" / "fuzz" / "java-diff"
FUZZ_DIR = ROOT / "build" / "fuzz" / "decoding"
READER = ROOT / "schemas" / "usage_event" / "v1.avsc"


def fuzz_module():
    """fuzz_decoding's schema table and input format, without starting a fuzzer."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fuzz_decoding

    return fuzz_decoding


def build_java() -> str:
    """Compiles the JVM decoder and DecodeDiff; returns the classpath to run them with."""
    OUT.mkdir(parents=True, exist_ok=True)
    cp_file = OUT / "cp.txt"
    if not cp_file.exists():
        subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-o",
                "-f",
                str(ROOT / "java" / "pom.xml"),
                "dependency:build-classpath",
                f"-Dmdep.outputFile={cp_file}",
            ],
            check=True,
        )
    cp = cp_file.read_text().strip()
    classes = OUT / "classes"
    sources = sorted(str(p) for p in (ROOT / "java" / "src" / "main" / "java").rglob("*.java"))
    sources.append(str(Path(__file__).resolve().parent / "DecodeDiff.java"))
    subprocess.run(
        ["javac", "-nowarn", "-encoding", "UTF-8", "-cp", cp, "-d", str(classes), *sources],
        check=True,
    )
    return f"{classes}:{cp}"


def mutate(rng: random.Random, data: bytes, pool: list[bytes], ids: list[int]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(i, len(b) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[min(i, len(b) - 1)] = rng.choice((0, 1, 2, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and b:
            del b[i : i + rng.randint(1, 8)]
        elif op == 4:  # an Avro varint: lengths, counts, union indexes, timestamps
            n = rng.choice(
                (-1, -2, 0, 1, 2, 63, 64, 2**31, 2**63 - 1, -(2**63), rng.randint(-9, 9))
            )
            u = ((n << 1) ^ (n >> 63)) & (2**64 - 1)
            out = bytearray()
            while True:
                low, u = u & 0x7F, u >> 7
                out.append(low | (0x80 if u else 0))
                if not u:
                    break
            b[i : i + rng.randint(0, 2)] = out
        elif op == 5 and pool:  # splice another input's tail
            other = rng.choice(pool)
            j = rng.randrange(len(other) + 1)
            b[i:] = other[j:]
        elif op == 6 and len(b) > 5:  # another known schema id
            b[1:5] = rng.choice(ids).to_bytes(4, "big")
    return bytes(b)


def same(py: dict[str, Any], jvm: dict[str, Any]) -> bool:
    if jvm.get("error") or py["status"] != jvm["status"]:
        return False
    if py["status"] != "OK":
        return True
    for k in ("schema_id", "event_id", "event_name", "customer_id", "ts_ms", "source"):
        if py[k] != jvm[k]:
            return False
    pv, jv = py["event_value"], jvm["event_value"]
    if (pv is None) != (jv is None):
        return False
    if pv is not None and (Decimal(pv) != Decimal(jv) or Decimal(jv).as_tuple().exponent != -12):
        return False
    return py["properties"] == jvm["properties"] and py["properties_json"] == jvm["properties_json"]


def known(py: dict[str, Any], jvm: dict[str, Any]) -> bool:
    """The documented difference (tests/vectors/decode.jsonl, `jvm` entries): an int beyond 32
    bits in a writer-only field (fastavro skips it unchecked); invalid Avro, refused by the JVM
    decoder. (A negative union branch index was one too, until the reference refused it.)"""
    detail = jvm.get("detail") or ""
    # whatever fastavro then made of the record (it may go on to find a blank id)
    return (
        py["status"] != "UNDECODABLE"
        and jvm["status"] == "UNDECODABLE"
        and "int out of range" in detail
    )


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", type=Path)
    ap.add_argument("--mutants", type=int, default=0, help="random mutations to add")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    fz = fuzz_module()
    found_files = sorted(FUZZ_DIR.glob("crash-*")) + sorted(FUZZ_DIR.glob("timeout-*"))
    paths = args.paths or [FUZZ_DIR / "corpus", *found_files]
    files = [f for p in paths for f in (sorted(p.iterdir()) if p.is_dir() else [p])]
    inputs = [(f.name, f.read_bytes()) for f in files]
    rng = random.Random(args.seed)
    pool = [d[fz.HEADER :] for _, d in inputs]
    ids = [*fz.SCHEMAS, 7]  # and one the registry does not know
    for n in range(args.mutants):
        _, data = rng.choice(inputs)
        inputs.append(
            (f"mutant-{n}", data[: fz.HEADER] + mutate(rng, data[fz.HEADER :], pool, ids))
        )
    cases = []
    for name, data in inputs:
        _, payload, limits = fz.decode_input(data)
        cases.append((name, payload, limits.max_record_bytes))
    cp = build_java()
    head = {"schemas": {str(k): v for k, v in fz.SCHEMAS.items()}, "reader": str(READER)}
    lines = [json.dumps(head)] + [
        json.dumps(
            {"name": n, "payload_hex": None if p is None else p.hex(), "max_record_bytes": m}
        )
        for n, p, m in cases
    ]
    run = subprocess.run(
        # without the flag, a hot exception loses its message ("Index -1 out of bounds")
        ["java", "-XX:-OmitStackTraceInFastThrow", "-cp", cp, "dev.meterflow.flink.DecodeDiff"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    answers = [json.loads(line) for line in run.stdout.split("\n") if line]
    assert len(answers) == len(cases), (len(answers), len(cases), run.stderr[-2000:])
    groups: Counter[tuple[str, str]] = Counter()
    found, n_known = [], 0
    for (name, payload, max_bytes), jvm in zip(cases, answers, strict=True):
        py = python_decode(payload, fz.SCHEMAS, max_bytes)
        if same(py, jvm):
            continue
        if known(py, jvm):
            n_known += 1
            continue
        groups[(py["status"], jvm.get("error") or jvm["status"])] += 1
        found.append(
            {
                "name": name,
                "payload_hex": None if payload is None else payload.hex(),
                "max_record_bytes": max_bytes,
                "python": py,
                "jvm": jvm,
            }
        )
    FUZZ_DIR.mkdir(parents=True, exist_ok=True)
    out = FUZZ_DIR / "disagreements.jsonl"
    out.write_text("".join(json.dumps(f, sort_keys=True) + "\n" for f in found))
    print(
        f"differential: {len(cases)} payloads, {len(found)} disagreements, "
        f"{n_known} known (writer-only int beyond 32 bits)"
    )
    for (p, j), n in groups.most_common():
        print(f"  python {p} / jvm {j}: {n}")
    if found:
        print(f"  written to {out}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
