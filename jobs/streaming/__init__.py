"""The streaming metering job on the JVM: Python composes it, Flink SQL and a few small Java
functions run every per-event step.

    Kafka records (raw bytes + topic/partition/offset/timestamp)        source.py
      -> decode Confluent Avro (Java, never fails on bad bytes)
      -> validate: time bounds, every selecting meter's quantity         validation.py
         (13 dead-letter reasons, first one wins, as meterflow.decoding)
      -> watermark on validated event time; dedup by event_id;           dedup.py
         lateness split against the watermark
      -> per meter: one row per (event, meter) it selects, tumbling      windows.py
         windows per size, re-fired for late-but-allowed events
      -> Kafka, exactly-once transactions: accepted events, late events,  sinks.py
         usage windows (changelog), dead letters, the late topic
    `meterflow load` moves the output topics into ClickHouse (connectors/loader.py).

`pipeline.build` reads top to bottom; each stage module holds its SQL builders, which are tested
as strings (tests/unit/test_streaming_sql.py). Real-time rating is not part of this path yet.
"""
