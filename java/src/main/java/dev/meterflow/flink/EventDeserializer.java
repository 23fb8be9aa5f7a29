package dev.meterflow.flink;

import java.io.IOException;
import java.math.BigDecimal;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.table.data.DecimalData;
import org.apache.flink.table.data.GenericMapData;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.types.DataType;
import org.apache.flink.table.types.logical.RowType;
import org.apache.flink.types.Row;

/**
 * One Kafka record value to one row, by column name: {@code payload} (the original bytes),
 * {@code decode_status}, {@code decode_detail}, {@code schema_id}, {@code event_id}, {@code
 * event_name}, {@code customer_id}, {@code ts_ms}, {@code event_value} (DECIMAL(38, 12)), {@code
 * properties} (MAP of STRING), {@code source}. A table may declare any subset, in any order.
 */
final class EventDeserializer implements DeserializationSchema<RowData> {
  private static final long serialVersionUID = 1L;

  // AvroEventDecoder's Row, field by field (DecodeConfluentAvro.OUTPUT)
  private static final List<String> DECODED =
      List.of(
          "decode_status", "decode_detail", "schema_id", "event_id", "event_name", "customer_id",
          "ts_ms", "event_value", "properties", "source");

  private final String url;
  private final String reader;
  private final int maxRecordBytes;
  private final long retryMs;
  private final String[] columns;
  private final TypeInformation<RowData> producedType;
  private transient AvroEventDecoder decoder;

  EventDeserializer(
      String url,
      String reader,
      int maxRecordBytes,
      long retryMs,
      DataType physicalType,
      TypeInformation<RowData> producedType) {
    this.url = url;
    this.reader = reader;
    this.maxRecordBytes = maxRecordBytes;
    this.retryMs = retryMs;
    this.columns = ((RowType) physicalType.getLogicalType()).getFieldNames().toArray(new String[0]);
    for (String c : columns) {
      if (!c.equals("payload") && !DECODED.contains(c)) {
        throw new IllegalArgumentException(
            "format " + EventFormatFactory.IDENTIFIER + " has no column " + c + " (it has payload "
                + "and " + DECODED + ")");
      }
    }
    this.producedType = producedType;
  }

  @Override
  public void open(InitializationContext context) {
    decoder = new AvroEventDecoder(new RegistrySchemaLookup(url, retryMs), reader, maxRecordBytes);
  }

  @Override
  public RowData deserialize(byte[] message) throws IOException {
    Row decoded = decoder.decode(message);
    GenericRowData row = new GenericRowData(columns.length);
    for (int i = 0; i < columns.length; i++) {
      row.setField(i, internal(columns[i], message, decoded));
    }
    return row;
  }

  private static Object internal(String column, byte[] message, Row decoded) {
    if (column.equals("payload")) {
      return message;
    }
    Object v = decoded.getField(DECODED.indexOf(column));
    if (v == null) {
      return null;
    }
    if (v instanceof String s) {
      return StringData.fromString(s);
    }
    if (v instanceof BigDecimal d) {
      return DecimalData.fromBigDecimal(d, 38, 12);
    }
    if (v instanceof Map<?, ?> m) {
      Map<Object, Object> out = new HashMap<>();
      m.forEach((k, x) -> out.put(StringData.fromString((String) k), StringData.fromString((String) x)));
      return new GenericMapData(out);
    }
    return v; // Integer schema_id, Long ts_ms
  }

  @Override
  public boolean isEndOfStream(RowData next) {
    return false;
  }

  @Override
  public TypeInformation<RowData> getProducedType() {
    return producedType;
  }
}
