package dev.meterflow.flink;

import java.math.BigDecimal;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.ScalarFunction;
import org.apache.flink.types.Row;

/**
 * One meter's quantity from one event: meterflow/meters.py {@code Meter.measure} (after the
 * source was chosen: {@code raw} is the property text, or the event value as text) and the
 * quantize in decoding.py {@code validate}, in the same order of checks. {@code reason} is null
 * when the quantity is good, else the dead-letter reason code.
 *
 * <p>{@code factor} is the multiplier looked up in SQL (null: the key is not in the table and
 * there is no default); it comes from the meters file, so a factor that is not a finite number
 * is a bug of the generated SQL and throws.
 */
public class MeasureQuantity extends ScalarFunction {
  private static final long serialVersionUID = 1L;

  @DataTypeHint("ROW<reason STRING, quantity DECIMAL(38, 12)>")
  public Row eval(String raw, Boolean allowNegative, Boolean hasMultiplier, String factor) {
    if (raw == null) {
      return Row.of("MISSING_QUANTITY", null);
    }
    PyDecimal q = PyDecimal.parse(raw);
    if (q == null) {
      return Row.of("NON_NUMERIC_QUANTITY", null);
    }
    if (q.kind == PyDecimal.Kind.NAN) {
      return Row.of("NAN_QUANTITY", null);
    }
    if (q.kind == PyDecimal.Kind.INFINITE) {
      return Row.of("INFINITE_QUANTITY", null);
    }
    if (q.lessThanZero() && !Boolean.TRUE.equals(allowNegative)) {
      return Row.of("NEGATIVE_QUANTITY", null);
    }
    if (Boolean.TRUE.equals(hasMultiplier)) {
      if (factor == null) {
        return Row.of("UNKNOWN_MULTIPLIER_KEY", null);
      }
      PyDecimal f = PyDecimal.parse(factor);
      if (f == null || f.kind != PyDecimal.Kind.FINITE) {
        throw new IllegalArgumentException("MeasureQuantity: factor " + factor + " is not a number");
      }
      // Python multiplies in an 80-digit context (meterflow.events.WIDE): rounded the same way
      q = q.multiply80(f);
    }
    if (q.absAtLeast1e26()) {
      return Row.of("QUANTITY_OUT_OF_RANGE", null);
    }
    BigDecimal out = q.quantize12();
    return Row.of(null, out);
  }

  @Override
  public boolean isDeterministic() {
    return true;
  }
}
