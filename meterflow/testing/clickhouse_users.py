"""The ClickHouse users of tests and benchmarks, which run the pipeline in databases of their own.

The stack's meterflow_loader / _close / _reader / _dashboards may use the database the stack
serves only (users.xml's allow_databases, which takes names, not patterns). A test database
(it_<id>, bench_..., made per run) cannot be listed in advance, so processes working in one act
as meterflow_scratch_writer (the loader's profile: INSERT/SELECT, no DDL) or
meterflow_scratch_reader (readonly), which may use any database: the suite still runs every
process with the profile of its role, only the database limit is left out (and is tested on
its own in tests/integration/test_clickhouse_privileges.py). Fixtures that create, seed and
drop those databases connect as `migrate`.
"""

from __future__ import annotations

import os

# role -> (user, principal) in the local stack (infra/clickhouse/users.xml.in)
SCRATCH_USERS = {
    "loader": ("meterflow_scratch_writer", "clickhouse-scratch-writer"),
    "close": ("meterflow_scratch_writer", "clickhouse-scratch-writer"),
    "reader": ("meterflow_scratch_reader", "clickhouse-scratch-reader"),
    "dashboards": ("meterflow_scratch_reader", "clickhouse-scratch-reader"),
    "keys": ("meterflow_scratch_writer", "clickhouse-scratch-writer"),
}


def scratch_users_env() -> dict[str, str]:
    """The variables (meterflow.settings: clickhouse_credentials) that map each role to them."""
    env = {}
    for role, (user, principal) in SCRATCH_USERS.items():
        env[f"METERFLOW_CLICKHOUSE_{role.upper()}_USER"] = user
        env[f"METERFLOW_CLICKHOUSE_{role.upper()}_PRINCIPAL"] = principal
    return env


def use_scratch_users() -> None:
    """Map the roles for this process and the processes it starts; variables already set (by
    a person pointing a role elsewhere) are kept."""
    for var, value in scratch_users_env().items():
        os.environ.setdefault(var, value)
