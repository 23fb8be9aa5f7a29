"""Per-operator state retention, set in the job's compiled plan.

Flink SQL has one job-wide state TTL (`table.exec.state.ttl`). Rating's period aggregation and
the alerts' running usage must keep their state for a whole billing period, so that is the
job-wide TTL (environment.LONG_STATE_TTL; the OVER aggregation takes no other); the dedup must
forget an id after the dedup horizon. The STATE_TTL hint is refused on this plan (the planner
fails on the UNNEST correlate), but the compiled plan (JSON) lists the dedup's state with its
TTL, so the job is compiled, the dedup's TTL is set there, and that plan is what runs. Compiled
plans also pin the operators' uids, so a restore maps state by plan node, not by the shape of
the generated graph.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

# node type (without its version suffix) -> TTL, in the plan's own duration syntax
DEDUPLICATE = "stream-exec-deduplicate"


def node_kind(node_type: str) -> str:
    return node_type.rsplit("_", 1)[0]


def with_state_ttls(plan_json: str, ttls: Mapping[str, str]) -> str:
    """The plan with the TTL of every state of each named operator kind replaced."""
    doc = json.loads(plan_json)
    for node in doc["nodes"]:
        ttl = ttls.get(node_kind(node["type"]))
        if ttl is not None:
            for state in node.get("state", []):
                state["ttl"] = ttl
    return json.dumps(doc)


def state_ttls(plan_json: str) -> list[tuple[str, str, str]]:
    """(operator kind, state name, TTL) of every state in the plan."""
    return [
        (node_kind(n["type"]), s.get("name", ""), s.get("ttl", ""))
        for n in json.loads(plan_json)["nodes"]
        for s in n.get("state", [])
    ]
