"""Every test process (and what it starts) works in databases of its own: see
meterflow.testing.clickhouse_users for the ClickHouse users that allows."""

from meterflow.testing.clickhouse_users import use_scratch_users

use_scratch_users()
