package dev.meterflow.flink;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * A string map as Python's {@code json.dumps(d, sort_keys=True, separators=(",", ":"))} writes
 * it (ensure_ascii): the canonical JSON of the {@code properties} and {@code dimensions} columns,
 * which are compared and keyed byte for byte downstream.
 *
 * <p>Keys sort by code point, as Python sorts str. Every char outside ' '..'~' is escaped as
 * {@code \\uXXXX} of its UTF-16 unit (lower-case hex; astral chars become surrogate pairs),
 * except the short escapes {@code \\" \\\\ \\n \\r \\t \\b \\f}. A null map is {@code {}}; a null
 * value is JSON {@code null} (as Python writes None). The varargs form takes key, value, key,
 * value, ...: an odd count, or a null key, is a bug of the generated SQL and throws; null values
 * are not expected there (dimensions default to "").
 */
public class JsonObject extends ScalarFunction {
  private static final long serialVersionUID = 1L;

  public String eval(@DataTypeHint("MAP<STRING, STRING>") Map<String, String> map) {
    return write(map);
  }

  public String eval(String... keysAndValues) {
    if (keysAndValues == null) {
      return "{}";
    }
    if (keysAndValues.length % 2 != 0) {
      throw new IllegalArgumentException("JsonObject: keys and values must come in pairs");
    }
    Map<String, String> map = new HashMap<>();
    for (int i = 0; i < keysAndValues.length; i += 2) {
      if (keysAndValues[i] == null) {
        throw new IllegalArgumentException("JsonObject: null key");
      }
      map.put(keysAndValues[i], keysAndValues[i + 1]); // a repeated key: the last wins, as dict()
    }
    return write(map);
  }

  static String write(Map<String, String> map) {
    if (map == null || map.isEmpty()) {
      return "{}";
    }
    List<String> keys = new ArrayList<>(map.keySet());
    keys.sort(PyText::compareCodePoints);
    StringBuilder out = new StringBuilder("{");
    for (String k : keys) {
      if (out.length() > 1) {
        out.append(',');
      }
      quote(out, k == null ? "null" : k);
      out.append(':');
      String v = map.get(k);
      if (v == null) {
        out.append("null");
      } else {
        quote(out, v);
      }
    }
    return out.append('}').toString();
  }

  private static final char[] HEX = "0123456789abcdef".toCharArray();

  static void quote(StringBuilder out, String s) {
    out.append('"');
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      switch (c) {
        case '"': out.append("\\\""); break;
        case '\\': out.append("\\\\"); break;
        case '\n': out.append("\\n"); break;
        case '\r': out.append("\\r"); break;
        case '\t': out.append("\\t"); break;
        case '\b': out.append("\\b"); break;
        case '\f': out.append("\\f"); break;
        default:
          if (c >= ' ' && c <= '~') {
            out.append(c);
          } else {
            out.append("\\u")
                .append(HEX[(c >> 12) & 0xf])
                .append(HEX[(c >> 8) & 0xf])
                .append(HEX[(c >> 4) & 0xf])
                .append(HEX[c & 0xf]);
          }
      }
    }
    out.append('"');
  }

  @Override
  public boolean isDeterministic() {
    return true;
  }
}
