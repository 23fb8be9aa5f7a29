"""The Java functions the job calls (java/, built by `make setup` into build/flink-jars/); each
mirrors one piece of the Python reference, checked by the shared vectors in tests/vectors/
(decision 0009). The decode itself is a format of the source (source.py)."""

from __future__ import annotations

# SQL name -> Java class
FUNCTIONS = {
    "MF_MEASURE": "dev.meterflow.flink.MeasureQuantity",
    "MF_JSON": "dev.meterflow.flink.JsonObject",
    "MF_DIV": "dev.meterflow.flink.DivideHalfEven",
    "MF_PERIOD": "dev.meterflow.flink.PeriodLookup",
    "MF_TALLY": "dev.meterflow.flink.Tally",
}


def register_sql() -> list[str]:
    return [
        f"CREATE TEMPORARY SYSTEM FUNCTION IF NOT EXISTS {name} AS '{cls}' LANGUAGE JAVA"
        for name, cls in FUNCTIONS.items()
    ]
