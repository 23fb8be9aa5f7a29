package dev.meterflow.flink;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.ScalarFunction;
import org.apache.flink.types.Row;

/**
 * A Kafka record value (Confluent-framed Avro) to the decoded event or a dead-letter status:
 * meterflow/decoding.py {@code decode} and the first checks of {@code validate}; see
 * {@link AvroEventDecoder}.
 *
 * <p>Job parameters: {@code meterflow.registry.url} (Confluent-compatible base URL),
 * {@code meterflow.reader-schema} (the reader schema JSON), {@code meterflow.max-record-bytes}
 * (default 65536), {@code meterflow.registry.retry-seconds} (default 60: how long an unreachable
 * or failing registry is retried before the job fails).
 */
public class DecodeConfluentAvro extends ScalarFunction {
  private static final long serialVersionUID = 1L;

  public static final String OUTPUT =
      "ROW<status STRING, detail STRING, schema_id INT, event_id STRING, event_name STRING,"
          + " customer_id STRING, ts_ms BIGINT, event_value DECIMAL(38, 12),"
          + " properties MAP<STRING, STRING>, source STRING>";

  private transient AvroEventDecoder decoder;

  public DecodeConfluentAvro() {}

  /** For tests: a decoder with its schema lookup supplied, no job parameters needed. */
  DecodeConfluentAvro(AvroEventDecoder decoder) {
    this.decoder = decoder;
  }

  @Override
  public void open(FunctionContext context) throws Exception {
    String url = context.getJobParameter("meterflow.registry.url", null);
    String reader = context.getJobParameter("meterflow.reader-schema", null);
    if (url == null || reader == null) {
      throw new IllegalStateException(
          "DecodeConfluentAvro needs the job parameters meterflow.registry.url and"
              + " meterflow.reader-schema");
    }
    int max = Integer.parseInt(context.getJobParameter("meterflow.max-record-bytes", "65536"));
    double retry =
        Double.parseDouble(context.getJobParameter("meterflow.registry.retry-seconds", "60"));
    decoder =
        new AvroEventDecoder(new RegistrySchemaLookup(url, (long) (retry * 1000)), reader, max);
  }

  @DataTypeHint(OUTPUT)
  public Row eval(byte[] payload) throws Exception {
    return decoder.decode(payload);
  }

  @Override
  public boolean isDeterministic() {
    return true;
  }
}
