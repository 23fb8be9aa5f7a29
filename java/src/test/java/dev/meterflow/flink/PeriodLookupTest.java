package dev.meterflow.flink;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** MF_PERIOD on a hand-written table (the format jobs/streaming/rating.py writes). */
class PeriodLookupTest {
  @TempDir Path dir;

  Path table(String text) throws IOException {
    Path p = dir.resolve("periods-" + Math.abs(text.hashCode()) + ".tsv");
    Files.writeString(p, text);
    return p;
  }

  static RowData row(String sub, long start, long end, String plan, int version, String cur) {
    return GenericRowData.of(
        StringData.fromString(sub), start, end, StringData.fromString(plan), version,
        StringData.fromString(cur));
  }

  @Test
  void findsThePeriodContainingAnInstant() throws IOException {
    String t = table(
            "c1\t2000\t3000\ts1\tpro\t2\tEUR\n"
                + "c1\t1000\t2000\ts1\tbasic\t1\tEUR\n"
                + "c1\t5000\t6000\ts2\tbasic\t1\tEUR\n"
                + "a\\tb\\\\c\t0\t10\ts3\tbasic\t1\tUSD\n")
        .toString();
    PeriodLookup f = new PeriodLookup();
    assertEquals(row("s1", 1000L, 2000L, "basic", 1, "EUR"), f.eval(t, "c1", 1000L));
    assertEquals(row("s1", 1000L, 2000L, "basic", 1, "EUR"), f.eval(t, "c1", 1999L));
    assertEquals(row("s1", 2000L, 3000L, "pro", 2, "EUR"), f.eval(t, "c1", 2000L));
    assertNull(f.eval(t, "c1", 999L)); // before the first period
    assertNull(f.eval(t, "c1", 3000L)); // a gap between subscriptions
    assertNull(f.eval(t, "c1", 6000L)); // after the last
    assertNull(f.eval(t, "c2", 1500L)); // no such customer
    assertEquals(row("s3", 0L, 10L, "basic", 1, "USD"), f.eval(t, "a\tb\\c", 5L));
    assertNull(f.eval(t, null, 5L));
    assertNull(f.eval(t, "c1", null));
    // the kept answer is not given for another customer or outside its period
    assertEquals(row("s1", 2000L, 3000L, "pro", 2, "EUR"), f.eval(t, "c1", 2500L));
    assertNull(f.eval(t, "c2", 2500L));
    assertEquals(row("s1", 1000L, 2000L, "basic", 1, "EUR"), f.eval(t, "c1", 1500L));
    assertNull(f.eval(t, "c1", 3500L));
  }

  @Test
  void refusesABrokenTable() throws IOException {
    PeriodLookup f = new PeriodLookup();
    String shortLine = table("c1\t0\t10\ts1\tbasic\t1\n").toString();
    assertThrows(IllegalArgumentException.class, () -> f.eval(shortLine, "c1", 5L));
    String overlap = table("c1\t0\t10\ts1\tb\t1\tEUR\nc1\t5\t20\ts2\tb\t1\tEUR\n").toString();
    assertThrows(IllegalArgumentException.class, () -> f.eval(overlap, "c1", 5L));
    String missing = dir.resolve("absent.tsv").toString();
    assertThrows(RuntimeException.class, () -> f.eval(missing, "c1", 5L));
  }
}
