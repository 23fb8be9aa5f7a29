package dev.meterflow.flink;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.math.BigDecimal;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Stream;
import org.apache.flink.types.Row;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;

/** The JVM functions against every shared vector (tests/vectors, written from the Python code). */
class VectorsTest {
  private static final ObjectMapper JSON = new ObjectMapper();
  private static final Path VECTORS = Path.of(System.getProperty("meterflow.vectors"));
  private static final Path SCHEMAS = Path.of(System.getProperty("meterflow.schemas"));

  static List<JsonNode> read(String name) throws IOException {
    List<JsonNode> out = new ArrayList<>();
    for (String line : Files.readAllLines(VECTORS.resolve(name))) {
      if (!line.isBlank()) {
        out.add(JSON.readTree(line));
      }
    }
    assertTrue(out.size() > 5, name + " has too few vectors");
    return out;
  }

  static String text(JsonNode n) {
    return n == null || n.isNull() ? null : n.asText();
  }

  static String readerSchema() throws IOException {
    return Files.readString(SCHEMAS.resolve("v1.avsc"));
  }

  static SchemaLookup mapLookup(Map<Integer, String> schemas, AtomicInteger asked) {
    return id -> {
      asked.incrementAndGet();
      String s = schemas.get(id);
      if (s == null) {
        throw new SchemaLookup.SchemaNotFoundException(id);
      }
      return s;
    };
  }

  static void assertDecimal(String want, Object got, String what) {
    if (want == null) {
      assertNull(got, what);
      return;
    }
    BigDecimal g = (BigDecimal) got;
    assertEquals(0, new BigDecimal(want).compareTo(g), what + ": " + want + " vs " + g);
    assertEquals(12, g.scale(), what + ": scale");
  }

  @TestFactory
  Stream<DynamicTest> decode() throws IOException {
    String reader = readerSchema();
    List<DynamicTest> tests = new ArrayList<>();
    for (JsonNode v : read("decode.jsonl")) {
      tests.add(DynamicTest.dynamicTest(v.get("name").asText(), () -> checkDecode(v, reader)));
    }
    return tests.stream();
  }

  private static void checkDecode(JsonNode v, String reader) throws Exception {
    Map<Integer, String> schemas = new HashMap<>();
    v.get("schemas").fields().forEachRemaining(e -> schemas.put(Integer.parseInt(e.getKey()), e.getValue().asText()));
    AvroEventDecoder d =
        new AvroEventDecoder(mapLookup(schemas, new AtomicInteger()), reader, v.get("max_record_bytes").asInt());
    String hex = text(v.get("payload_hex"));
    Row row = d.decode(hex == null ? null : HexFormat.of().parseHex(hex));
    JsonNode exp = v.has("jvm") ? v.get("jvm") : v.get("expected");
    String name = v.get("name").asText();
    assertEquals(exp.get("status").asText(), row.getField(0), name + ": status (" + row.getField(1) + ")");
    if (!"OK".equals(row.getField(0))) {
      for (int i = 2; i < row.getArity(); i++) {
        assertNull(row.getField(i), name + ": field " + i + " of a dead letter");
      }
      return;
    }
    assertEquals(exp.get("schema_id").asInt(), row.getField(2), name);
    assertEquals(text(exp.get("event_id")), row.getField(3), name);
    assertEquals(text(exp.get("event_name")), row.getField(4), name);
    assertEquals(text(exp.get("customer_id")), row.getField(5), name);
    assertEquals(exp.get("ts_ms").asLong(), row.getField(6), name);
    assertDecimal(text(exp.get("event_value")), row.getField(7), name);
    Map<String, String> props = new HashMap<>();
    exp.get("properties").fields().forEachRemaining(e -> props.put(e.getKey(), e.getValue().asText()));
    @SuppressWarnings("unchecked")
    Map<String, String> got = (Map<String, String>) row.getField(8);
    assertEquals(props, got, name);
    assertEquals(exp.get("properties_json").asText(), JsonObject.write(got), name);
    assertEquals(text(exp.get("source")), row.getField(9), name);
  }

  @TestFactory
  Stream<DynamicTest> quantity() throws IOException {
    MeasureQuantity f = new MeasureQuantity();
    List<DynamicTest> tests = new ArrayList<>();
    for (JsonNode v : read("quantity.jsonl")) {
      String raw = text(v.get("raw"));
      String factor = text(v.get("factor"));
      String name = "raw=" + (raw == null ? "null" : raw.length() > 40 ? raw.substring(0, 40) + "..." : raw)
          + " neg=" + v.get("allow_negative") + " mult=" + v.get("has_multiplier") + " factor=" + factor;
      tests.add(DynamicTest.dynamicTest(name, () -> {
        JsonNode exp = v.has("jvm") ? v.get("jvm") : v.get("expected");
        Row row = f.eval(raw, v.get("allow_negative").asBoolean(), v.get("has_multiplier").asBoolean(), factor);
        assertEquals(text(exp.get("reason")), row.getField(0), name);
        assertDecimal(text(exp.get("quantity")), row.getField(1), name);
      }));
    }
    return tests.stream();
  }

  @TestFactory
  Stream<DynamicTest> jsonObject() throws IOException {
    JsonObject f = new JsonObject();
    List<DynamicTest> tests = new ArrayList<>();
    for (JsonNode v : read("json_object.jsonl")) {
      String want = v.get("json").asText();
      tests.add(DynamicTest.dynamicTest(want, () -> {
        if (v.has("map")) {
          Map<String, String> m = null;
          if (!v.get("map").isNull()) {
            m = new HashMap<>();
            Map<String, String> mm = m;
            v.get("map").fields().forEachRemaining(e -> mm.put(e.getKey(), e.getValue().asText()));
          }
          assertEquals(want, f.eval(m));
        } else {
          List<String> pairs = new ArrayList<>();
          v.get("pairs").forEach(p -> pairs.add(p.asText()));
          assertEquals(want, f.eval(pairs.toArray(new String[0])));
        }
      }));
    }
    return tests.stream();
  }

  @TestFactory
  Stream<DynamicTest> divide() throws IOException {
    DivideHalfEven f = new DivideHalfEven();
    List<DynamicTest> tests = new ArrayList<>();
    for (JsonNode v : read("divide.jsonl")) {
      String sum = v.get("sum").asText();
      long count = v.get("count").asLong();
      tests.add(DynamicTest.dynamicTest(sum + " / " + count, () ->
          assertDecimal(v.get("avg").asText(), f.eval(new BigDecimal(sum).setScale(12), count), sum)));
    }
    return tests.stream();
  }

  // ---- hand-written expectations, independent of the generated vectors

  @Test
  void handWrittenQuantities() {
    MeasureQuantity f = new MeasureQuantity();
    assertEquals(Row.of(null, new BigDecimal("1000.000000000000")), f.eval("1_000", false, false, null));
    assertEquals(Row.of(null, new BigDecimal("0E-12")), f.eval("0.0000000000005", false, false, null));
    assertEquals(Row.of(null, new BigDecimal("2E-12")), f.eval("0.0000000000015", false, false, null));
    assertEquals(Row.of(null, new BigDecimal("12.000000000000")), f.eval("\u0661\u0662", false, false, null));
    assertEquals("NAN_QUANTITY", f.eval("sNaN", false, false, null).getField(0));
    assertEquals("INFINITE_QUANTITY", f.eval("-inf", true, false, null).getField(0));
    assertEquals("QUANTITY_OUT_OF_RANGE", f.eval("99999999999999999999999999.995", false, false, null).getField(0));
    assertEquals("QUANTITY_OUT_OF_RANGE", f.eval("50000000000000000000000000", false, true, "2").getField(0));
    assertEquals("NEGATIVE_QUANTITY", f.eval("-1", null, null, null).getField(0));
    assertEquals(Row.of(null, new BigDecimal("0E-12")), f.eval("-0", false, false, null));
    assertEquals("MISSING_QUANTITY", f.eval(null, false, false, null).getField(0));
    assertThrows(IllegalArgumentException.class, () -> f.eval("1", false, true, "abc"));
  }

  @Test
  void handWrittenJson() {
    JsonObject f = new JsonObject();
    assertEquals("{}", f.eval((Map<String, String>) null));
    assertEquals("{\"a\":\"\\u00e9\",\"b\":\"\\n\"}", f.eval("b", "\n", "a", "\u00e9"));
    // U+FFFF sorts before U+1F600 by code point, after it by UTF-16 unit
    assertEquals("{\"\\uffff\":\"\",\"\\ud83d\\ude00\":\"\"}", f.eval("\ud83d\ude00", "", "\uffff", ""));
    assertThrows(IllegalArgumentException.class, () -> f.eval("odd"));
  }

  @Test
  void handWrittenDivide() {
    DivideHalfEven f = new DivideHalfEven();
    assertEquals(new BigDecimal("3.333333333333"), f.eval(new BigDecimal("10.000000000000"), 3L));
    assertEquals(new BigDecimal("0E-12"), f.eval(new BigDecimal("0.000000000001"), 2L));
    assertEquals(new BigDecimal("2E-12"), f.eval(new BigDecimal("0.000000000003"), 2L));
    assertNull(f.eval(null, 3L));
    assertNull(f.eval(BigDecimal.ONE, null));
    assertNull(f.eval(BigDecimal.ONE, 0L));
  }

  @Test
  void unknownSchemaIsAskedAgainAndFoundSchemasAreCached() throws Exception {
    Map<Integer, String> schemas = new HashMap<>();
    AtomicInteger asked = new AtomicInteger();
    AvroEventDecoder d = new AvroEventDecoder(mapLookup(schemas, asked), readerSchema(), 65536);
    byte[] payload = HexFormat.of().parseHex(firstValidPayloadHex());
    assertEquals("UNKNOWN_SCHEMA", d.decode(payload).getField(0));
    assertEquals("UNKNOWN_SCHEMA", d.decode(payload).getField(0));
    assertEquals(2, asked.get());
    schemas.put(1, readerSchema()); // registered later: a replay now decodes it
    assertEquals("OK", d.decode(payload).getField(0));
    assertEquals("OK", d.decode(payload).getField(0));
    assertEquals(3, asked.get());
  }

  @Test
  void unreachableRegistryThrowsAfterRetrying() throws Exception {
    AvroEventDecoder d =
        new AvroEventDecoder(new RegistrySchemaLookup("http://127.0.0.1:1", 300), readerSchema(), 65536);
    byte[] payload = HexFormat.of().parseHex(firstValidPayloadHex());
    long t0 = System.nanoTime();
    assertThrows(IOException.class, () -> d.decode(payload));
    assertTrue(System.nanoTime() - t0 >= 250_000_000L, "retried for the window");
  }

  private static String firstValidPayloadHex() throws IOException {
    return read("decode.jsonl").get(0).get("payload_hex").asText();
  }
}
