package dev.meterflow.flink;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.Map;
import org.apache.flink.types.Row;

/**
 * The JVM decoder (AvroEventDecoder) over many payloads, for tests/fuzz/differential.py: stdin
 * is JSON lines, the first {"schemas": {id: text}, "reader": path}, then one {"name",
 * "payload_hex", "max_record_bytes"} per payload; stdout is one JSON line per payload with the
 * decoder's row as VectorsTest reads it, or {"error"} when decode threw. Not part of the job:
 * compiled with the sources under java/src by differential.py, in a directory of its own.
 */
public final class DecodeDiff {
  private DecodeDiff() {}

  public static void main(String[] args) throws Exception {
    ObjectMapper json = new ObjectMapper();
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    PrintStream out = new PrintStream(System.out, false, StandardCharsets.UTF_8);
    JsonNode head = json.readTree(in.readLine());
    Map<Integer, String> schemas = new HashMap<>();
    head.get("schemas").fields().forEachRemaining(e -> schemas.put(Integer.parseInt(e.getKey()), e.getValue().asText()));
    String reader = Files.readString(Path.of(head.get("reader").asText()));
    SchemaLookup lookup = id -> {
      String s = schemas.get(id);
      if (s == null) {
        throw new SchemaLookup.SchemaNotFoundException(id);
      }
      return s;
    };
    Map<Integer, AvroEventDecoder> decoders = new HashMap<>();
    String line;
    while ((line = in.readLine()) != null) {
      if (line.isBlank()) {
        continue;
      }
      JsonNode v = json.readTree(line);
      int max = v.get("max_record_bytes").asInt();
      AvroEventDecoder d = decoders.computeIfAbsent(max, m -> new AvroEventDecoder(lookup, reader, m));
      ObjectNode o = json.createObjectNode();
      o.put("name", v.get("name").asText());
      JsonNode hex = v.get("payload_hex");
      try {
        Row row = d.decode(hex == null || hex.isNull() ? null : HexFormat.of().parseHex(hex.asText()));
        o.put("status", (String) row.getField(0));
        o.put("detail", (String) row.getField(1));
        if ("OK".equals(row.getField(0))) {
          o.put("schema_id", (Integer) row.getField(2));
          o.put("event_id", (String) row.getField(3));
          o.put("event_name", (String) row.getField(4));
          o.put("customer_id", (String) row.getField(5));
          o.put("ts_ms", (Long) row.getField(6));
          BigDecimal value = (BigDecimal) row.getField(7);
          o.put("event_value", value == null ? null : value.toString());
          @SuppressWarnings("unchecked")
          Map<String, String> props = (Map<String, String>) row.getField(8);
          ObjectNode p = o.putObject("properties");
          props.forEach(p::put);
          o.put("properties_json", JsonObject.write(props));
          o.put("source", (String) row.getField(9));
        } else {
          for (int i = 2; i < row.getArity(); i++) {
            if (row.getField(i) != null) {
              o.put("error", "field " + i + " of a dead letter is set");
            }
          }
        }
      } catch (Throwable e) { // the decoder must not throw on bytes: reported, not hidden
        o.put("error", e.toString());
      }
      out.println(json.writeValueAsString(o));
    }
    out.flush();
  }
}
