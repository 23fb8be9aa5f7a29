package dev.meterflow.flink;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * MF_PERIOD(table, customer, at_ms): the billing period of a customer at an instant, with the plan,
 * price version and currency that price it; null when none does. A lookup only: the periods are
 * computed by meterflow/rating.py {@code priced_periods} (the reference) and written by the job's
 * builder into the table file named by the first argument, one period per line, tab-separated:
 * customer, start ms, end ms, subscription, plan, price version, currency (backslash escapes
 * \t \n \r \\). Periods of one customer do not overlap. Each file is read once per JVM.
 *
 * <p>The generated SQL reads several fields of one lookup (each a call), so the last answer is
 * kept and returned again while the customer and the instant's period are the same, as Flink's
 * internal row (no conversion per call).
 */
public class PeriodLookup extends ScalarFunction {
  private static final long serialVersionUID = 1L;
  private static final Map<String, Map<String, Periods>> TABLES = new ConcurrentHashMap<>();

  /** One customer's periods, sorted by start. */
  record Periods(long[] starts, long[] ends, RowData[] rows) {}

  private transient String lastTable;
  private transient String lastCustomer;
  private transient long lastStart;
  private transient long lastEnd;
  private transient RowData lastRow;

  @DataTypeHint(
      value =
          "ROW<subscription_id STRING, period_start_ms BIGINT, period_end_ms BIGINT, plan STRING, "
              + "price_version INT, currency STRING>",
      bridgedTo = RowData.class)
  public RowData eval(String table, String customer, Long atMs) {
    if (table == null || customer == null || atMs == null) {
      return null;
    }
    if (lastRow != null
        && atMs >= lastStart
        && atMs < lastEnd
        && customer.equals(lastCustomer)
        && table.equals(lastTable)) {
      return lastRow;
    }
    Periods p = TABLES.computeIfAbsent(table, PeriodLookup::load).get(customer);
    if (p == null) {
      return null;
    }
    int i = Arrays.binarySearch(p.starts, atMs);
    if (i < 0) {
      i = -i - 2; // the last period starting before atMs
    }
    if (i < 0 || atMs >= p.ends[i]) {
      return null;
    }
    lastTable = table;
    lastCustomer = customer;
    lastStart = p.starts[i];
    lastEnd = p.ends[i];
    lastRow = p.rows[i];
    return lastRow;
  }

  static Map<String, Periods> load(String path) {
    List<String> lines;
    try {
      lines = Files.readAllLines(Path.of(path), StandardCharsets.UTF_8);
    } catch (IOException e) {
      throw new UncheckedIOException("MF_PERIOD: cannot read the period table " + path, e);
    }
    Map<String, List<String[]>> byCustomer = new HashMap<>();
    int n = 0;
    for (String line : lines) {
      n++;
      if (line.isEmpty()) {
        continue;
      }
      String[] f = line.split("\t", -1);
      if (f.length != 7) {
        throw new IllegalArgumentException(
            "MF_PERIOD: " + path + " line " + n + ": expected 7 fields, got " + f.length);
      }
      for (int k = 0; k < f.length; k++) {
        f[k] = unescape(f[k]);
      }
      byCustomer.computeIfAbsent(f[0], c -> new ArrayList<>()).add(f);
    }
    Map<String, Periods> out = new HashMap<>();
    for (Map.Entry<String, List<String[]>> e : byCustomer.entrySet()) {
      List<String[]> ps = e.getValue();
      ps.sort((a, b) -> Long.compare(Long.parseLong(a[1]), Long.parseLong(b[1])));
      long[] starts = new long[ps.size()];
      long[] ends = new long[ps.size()];
      RowData[] rows = new RowData[ps.size()];
      for (int k = 0; k < ps.size(); k++) {
        String[] f = ps.get(k);
        starts[k] = Long.parseLong(f[1]);
        ends[k] = Long.parseLong(f[2]);
        if (k > 0 && starts[k] < ends[k - 1]) {
          throw new IllegalArgumentException(
              "MF_PERIOD: " + path + ": periods of customer " + e.getKey() + " overlap");
        }
        rows[k] =
            GenericRowData.of(
                StringData.fromString(f[3]),
                starts[k],
                ends[k],
                StringData.fromString(f[4]),
                Integer.parseInt(f[5]),
                StringData.fromString(f[6]));
      }
      out.put(e.getKey(), new Periods(starts, ends, rows));
    }
    return out;
  }

  static String unescape(String s) {
    if (s.indexOf('\\') < 0) {
      return s;
    }
    StringBuilder b = new StringBuilder(s.length());
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      if (c != '\\' || i + 1 == s.length()) {
        b.append(c);
        continue;
      }
      char e = s.charAt(++i);
      switch (e) {
        case 't' -> b.append('\t');
        case 'n' -> b.append('\n');
        case 'r' -> b.append('\r');
        default -> b.append(e);
      }
    }
    return b.toString();
  }

  @Override
  public boolean isDeterministic() {
    return true;
  }
}
