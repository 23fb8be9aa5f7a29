package dev.meterflow.flink;

import java.io.IOException;
import java.io.Serializable;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.math.MathContext;
import java.math.RoundingMode;
import java.nio.ByteBuffer;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.flink.avro.shaded.org.apache.avro.LogicalType;
import org.apache.flink.avro.shaded.org.apache.avro.LogicalTypes;
import org.apache.flink.avro.shaded.org.apache.avro.Schema;
import org.apache.flink.avro.shaded.org.apache.avro.generic.GenericDatumReader;
import org.apache.flink.avro.shaded.org.apache.avro.generic.GenericRecord;
import org.apache.flink.types.Row;

/**
 * meterflow/decoding.py {@code decode} plus the first checks of {@code validate} (required
 * strings, timestamp present), in the same order, for one Kafka record value. The time-bound
 * checks and the meters come after, in SQL. Never throws on bad bytes; throws only when the
 * registry cannot answer (see {@link RegistrySchemaLookup}).
 */
final class AvroEventDecoder implements Serializable {
  private static final long serialVersionUID = 1L;

  static final String OK = "OK";
  static final String UNDECODABLE = "UNDECODABLE";
  static final String UNKNOWN_SCHEMA = "UNKNOWN_SCHEMA";
  static final String OVERSIZED = "OVERSIZED";
  static final String MISSING_FIELD = "MISSING_FIELD";
  static final String[] REQUIRED_STRINGS = {"event_id", "event_name", "customer_id"};

  // Python's datetime range (years 1..9999): fastavro fails on event times outside it.
  static final long MIN_TS_MS = -62135596800000L;
  static final long MAX_TS_MS = 253402300799999L;
  // the same years as days since the epoch (date)
  static final long MIN_DAY = -719162L;
  static final long MAX_DAY = 2932896L;

  private final SchemaLookup lookup;
  private final String readerText;
  private final int maxRecordBytes;
  private transient Schema reader;
  private transient Map<Integer, Writer> writers;

  AvroEventDecoder(SchemaLookup lookup, String readerSchemaText, int maxRecordBytes) {
    this.lookup = lookup;
    this.readerText = readerSchemaText;
    this.maxRecordBytes = maxRecordBytes;
  }

  /** A writer schema and what of it the Python reference's result depends on. */
  private static final class Writer {
    final Schema schema;
    final GenericDatumReader<GenericRecord> datumReader;
    final LogicalType timestampType; // null: a plain long, which fastavro returns as an int
    final LogicalType valueType; // the decimal's precision and scale come from the writer
    final boolean sameRecordName;

    Writer(Schema schema, Schema reader) {
      this.schema = schema;
      this.datumReader = new GenericDatumReader<>(schema, reader);
      this.sameRecordName =
          schema.getType() == Schema.Type.RECORD && schema.getName().equals(reader.getName());
      LogicalType tt = null;
      Schema ts = fieldType(schema, "timestamp");
      if (ts != null) {
        // a union writer resolves branch by branch; only a long/int branch can be read
        for (Schema branch : branches(ts)) {
          if (branch.getType() == Schema.Type.LONG || branch.getType() == Schema.Type.INT) {
            tt = branch.getLogicalType();
            break;
          }
        }
      }
      this.timestampType = tt;
      Schema value = fieldType(schema, "value");
      LogicalType vt = null;
      if (value != null) {
        for (Schema branch : branches(value)) {
          if (branch.getLogicalType() instanceof LogicalTypes.Decimal) {
            vt = branch.getLogicalType();
          }
        }
      }
      this.valueType = vt;
    }

    private static java.util.List<Schema> branches(Schema s) {
      return s.getType() == Schema.Type.UNION ? s.getTypes() : java.util.List.of(s);
    }

    private static Schema fieldType(Schema record, String name) {
      if (record.getType() != Schema.Type.RECORD) {
        return null;
      }
      Schema.Field f = record.getField(name);
      return f == null ? null : f.schema();
    }
  }

  static Row dead(String status, String detail) {
    return Row.of(status, detail, null, null, null, null, null, null, null, null);
  }

  Row decode(byte[] payload) throws IOException {
    if (payload == null) {
      return dead(UNDECODABLE, "record has no value (tombstone)");
    }
    if (payload.length > maxRecordBytes) {
      return dead(OVERSIZED, payload.length + " bytes > " + maxRecordBytes);
    }
    if (payload.length < 5 || payload[0] != 0) {
      return dead(UNDECODABLE, "not Confluent wire format (magic byte 0 + schema id)");
    }
    long id = ByteBuffer.wrap(payload, 1, 4).getInt() & 0xffffffffL;
    if (id > Integer.MAX_VALUE) {
      // Registry ids are 32-bit signed (the Confluent API); the registry answers 404 for these.
      return dead(UNKNOWN_SCHEMA, "schema id " + id + " is not in the registry");
    }
    Writer writer;
    try {
      writer = writer((int) id);
    } catch (SchemaLookup.SchemaNotFoundException e) {
      return dead(UNKNOWN_SCHEMA, e.getMessage());
    }
    if (!writer.sameRecordName) {
      // fastavro matches records by unqualified name (namespace and aliases ignored); Avro
      // resolves the top-level record whatever its name
      return dead(UNDECODABLE, "writer schema " + id + " is not a record named " + reader.getName());
    }
    GenericRecord rec;
    try {
      rec = writer.datumReader.read(null, new FastavroDecoder(payload, 5, payload.length - 5));
    } catch (Exception e) { // Avro throws many types for corrupt input, like fastavro
      return dead(UNDECODABLE, truncate("avro decode with schema " + id + ": " + e));
    }
    // What fastavro converts while reading (its failures are UNDECODABLE, before validation).
    Object ts = rec.get("timestamp");
    Long tsMs = null;
    boolean localTs = false;
    if (ts instanceof Long || ts instanceof Integer) {
      long t = ((Number) ts).longValue();
      LogicalType lt = writer.timestampType;
      if (lt instanceof LogicalTypes.TimestampMillis) {
        if (t < MIN_TS_MS || t > MAX_TS_MS) {
          return dead(UNDECODABLE, "timestamp " + t + " ms is outside years 1..9999");
        }
        tsMs = t;
      } else if (lt instanceof LogicalTypes.TimestampMicros) {
        if (t < MIN_TS_MS * 1000 || t > MAX_TS_MS * 1000 + 999) {
          return dead(UNDECODABLE, "timestamp " + t + " us is outside years 1..9999");
        }
        tsMs = Math.floorDiv(t, 1000L);
      } else if (lt instanceof LogicalTypes.LocalTimestampMillis) {
        if (t < MIN_TS_MS || t > MAX_TS_MS) {
          return dead(UNDECODABLE, "local timestamp " + t + " ms is outside years 1..9999");
        }
        localTs = true;
      } else if (lt instanceof LogicalTypes.LocalTimestampMicros) {
        if (t < MIN_TS_MS * 1000 || t > MAX_TS_MS * 1000 + 999) {
          return dead(UNDECODABLE, "local timestamp " + t + " us is outside years 1..9999");
        }
        localTs = true;
      } else if (lt instanceof LogicalTypes.Date) {
        if (t < MIN_DAY || t > MAX_DAY) {
          return dead(UNDECODABLE, "date " + t + " is outside years 1..9999");
        }
      } else if (lt instanceof LogicalTypes.TimeMillis || lt instanceof LogicalTypes.TimeMicros) {
        // fastavro fails on a time of day of 24 h or more, of either sign
        long day = lt instanceof LogicalTypes.TimeMillis ? 86_400_000L : 86_400_000_000L;
        if (t <= -day || t >= day) {
          return dead(UNDECODABLE, "time " + t + " is not within a day");
        }
      }
      // any other (no logical type), and date and time in range: fastavro returns no datetime
    }
    // validate: the first checks
    String[] strings = new String[REQUIRED_STRINGS.length];
    for (int i = 0; i < REQUIRED_STRINGS.length; i++) {
      Object v = rec.get(REQUIRED_STRINGS[i]);
      strings[i] = v == null ? null : v.toString();
      if (PyText.isBlank(strings[i])) {
        return dead(MISSING_FIELD, REQUIRED_STRINGS[i] + " is missing or empty");
      }
    }
    if (localTs) {
      // fastavro gives a naive datetime, which the Python reference fails to subtract from UTC
      return dead(UNDECODABLE, "timestamp is a local timestamp in schema " + id);
    }
    if (tsMs == null) {
      return dead(MISSING_FIELD, "timestamp is missing");
    }
    // Records the Python job cannot output (it fails on them): dead letters here.
    BigDecimal value = null;
    Object rawValue = rec.get("value");
    if (rawValue != null) {
      if (!(writer.valueType instanceof LogicalTypes.Decimal)) {
        return dead(UNDECODABLE, "value is not an Avro decimal in schema " + id);
      }
      LogicalTypes.Decimal d = (LogicalTypes.Decimal) writer.valueType;
      byte[] bytes = bytesOf(rawValue);
      BigInteger unscaled = bytes.length == 0 ? BigInteger.ZERO : new BigInteger(bytes);
      // fastavro: the unscaled integer in a context of the writer's precision (half-even)
      value =
          new BigDecimal(unscaled)
              .round(new MathContext(d.getPrecision(), RoundingMode.HALF_EVEN))
              .scaleByPowerOfTen(-d.getScale());
      try {
        value = value.setScale(12, RoundingMode.UNNECESSARY);
      } catch (ArithmeticException e) {
        value = null;
      }
      if (value == null || value.precision() > 38) {
        // Not representable as DECIMAL(38, 12): the Python job fails on it (Arrow refuses the
        // rescale) and restarts forever; here it is a dead letter, as it breaks the contract.
        return dead(UNDECODABLE, "value does not fit decimal(38, 12) in schema " + id);
      }
    }
    Map<String, String> props = new HashMap<>();
    Object rawProps = rec.get("properties");
    if (rawProps instanceof Map) {
      for (Map.Entry<?, ?> e : ((Map<?, ?>) rawProps).entrySet()) {
        props.put(String.valueOf(e.getKey()), e.getValue() == null ? null : e.getValue().toString());
      }
    }
    Object source = rec.get("source");
    return Row.of(
        OK,
        null,
        (int) id,
        strings[0],
        strings[1],
        strings[2],
        tsMs,
        value,
        props,
        source == null ? null : source.toString());
  }

  private Writer writer(int id) throws SchemaLookup.SchemaNotFoundException, IOException {
    if (writers == null) {
      writers = new ConcurrentHashMap<>();
      reader = new Schema.Parser().parse(readerText);
    }
    Writer w = writers.get(id);
    if (w == null) {
      // Only found schemas are cached: an id the registry does not know yet is asked again on
      // the next record, as the Python reference does, so a replay classifies the same way.
      String text = lookup.schemaText(id);
      w = new Writer(new Schema.Parser().parse(text), reader);
      writers.put(id, w);
    }
    return w;
  }

  private static byte[] bytesOf(Object v) {
    if (v instanceof ByteBuffer) {
      ByteBuffer b = ((ByteBuffer) v).duplicate();
      byte[] out = new byte[b.remaining()];
      b.get(out);
      return out;
    }
    if (v instanceof org.apache.flink.avro.shaded.org.apache.avro.generic.GenericFixed) {
      return ((org.apache.flink.avro.shaded.org.apache.avro.generic.GenericFixed) v).bytes();
    }
    throw new IllegalStateException("unexpected value type " + v.getClass());
  }

  private static String truncate(String s) {
    return s.length() > 500 ? s.substring(0, 500) : s;
  }
}
