package dev.meterflow.flink;

import java.math.BigDecimal;
import java.math.RoundingMode;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * AVG as meterflow/aggregation.py {@code window_quantity} computes it: sum / count rounded once,
 * half-even, to 12 places. (Python divides in an 80-digit context first; for a sum of 38 digits
 * and a count below 1e41 that intermediate cannot create a tie, so one exact rounding agrees.)
 * Null when either input is null or the count is not positive.
 */
public class DivideHalfEven extends ScalarFunction {
  private static final long serialVersionUID = 1L;

  @DataTypeHint("DECIMAL(38, 12)")
  public BigDecimal eval(@DataTypeHint("DECIMAL(38, 12)") BigDecimal sum, Long count) {
    if (sum == null || count == null || count <= 0) {
      return null;
    }
    return sum.divide(BigDecimal.valueOf(count), 12, RoundingMode.HALF_EVEN);
  }

  @Override
  public boolean isDeterministic() {
    return true;
  }
}
