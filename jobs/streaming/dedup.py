"""Stage 3: event time, deduplication and the lateness split.

The watermark is put on the *validated* event time (pipeline.with_watermark), so a record with
a bogus timestamp, dead-lettered in stage 2, never moves the watermark. Deduplication keeps
the first copy of each event_id (processing order) within the horizon (state TTL). An event is
late when its event time is older than the watermark minus the allowed lateness.
"""

from __future__ import annotations

from jobs.streaming.sql import interval


def unique_sql(source: str) -> str:
    """The first copy of each valid event_id; later copies within the horizon are dropped."""
    return (
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY pt ASC) AS rn "
        f"FROM {source} WHERE status = 'OK') WHERE rn = 1"
    )


def classified_sql(source: str, allowed_lateness_s: int) -> str:
    """`is_late` and, for late rows, the watermark (ms) that judged them."""
    late = f"ts < CURRENT_WATERMARK(ts) - {interval(allowed_lateness_s)}"
    wm_ms = (
        "CAST(TIMESTAMPDIFF(MINUTE, TO_TIMESTAMP_LTZ(0, 3), CURRENT_WATERMARK(ts)) AS BIGINT) "
        "* 60000 + EXTRACT(SECOND FROM CURRENT_WATERMARK(ts)) * 1000 "
        "+ EXTRACT(MILLISECOND FROM CURRENT_WATERMARK(ts))"
    )
    return (
        f"SELECT *, COALESCE({late}, FALSE) AS is_late, "
        f"CASE WHEN {late} THEN {wm_ms} END AS watermark_ms FROM {source}"
    )
