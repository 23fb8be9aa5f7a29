package dev.meterflow.flink;

import java.util.HashMap;
import java.util.Map;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * MF_TALLY(name): counts the rows it is called for in the operator metric {@code
 * meterflow_<name>} and returns TRUE, so a filter {@code WHERE MF_TALLY('accepted')} counts what
 * passes it. Not deterministic on purpose: the planner must neither fold the constant call away
 * nor copy it into several consumers.
 */
public class Tally extends ScalarFunction {
  private static final long serialVersionUID = 1L;
  private transient MetricGroup group;
  private transient Map<String, Counter> counters;

  @Override
  public void open(FunctionContext context) {
    group = context.getMetricGroup();
    counters = new HashMap<>();
  }

  public Boolean eval(String name) {
    Counter c = counters.get(name);
    if (c == null) {
      c = group.counter("meterflow_" + name);
      counters.put(name, c);
    }
    c.inc();
    return Boolean.TRUE;
  }

  @Override
  public boolean isDeterministic() {
    return false;
  }
}
