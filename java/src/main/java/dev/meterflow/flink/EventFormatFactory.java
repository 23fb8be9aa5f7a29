package dev.meterflow.flink;

import java.util.HashSet;
import java.util.Set;
import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.configuration.ReadableConfig;
import org.apache.flink.table.connector.ChangelogMode;
import org.apache.flink.table.connector.format.DecodingFormat;
import org.apache.flink.table.connector.source.DynamicTableSource;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.factories.DeserializationFormatFactory;
import org.apache.flink.table.factories.DynamicTableFactory;
import org.apache.flink.table.factories.FactoryUtil;
import org.apache.flink.table.types.DataType;

/**
 * {@code 'value.format' = 'meterflow-avro'}: Kafka record values decoded by {@link
 * AvroEventDecoder} inside the source, so that the columns it produces can carry the watermark
 * (a computed column cannot call a function whose result another column uses). Never fails on
 * bad bytes: a record that does not decode is a row whose {@code decode_status} names why, with
 * its original bytes in {@code payload}. See {@link EventDeserializer} for the columns.
 */
public class EventFormatFactory implements DeserializationFormatFactory {
  public static final String IDENTIFIER = "meterflow-avro";

  static final ConfigOption<String> REGISTRY_URL =
      ConfigOptions.key("registry-url").stringType().noDefaultValue();
  static final ConfigOption<String> READER_SCHEMA =
      ConfigOptions.key("reader-schema").stringType().noDefaultValue();
  static final ConfigOption<Integer> MAX_RECORD_BYTES =
      ConfigOptions.key("max-record-bytes").intType().defaultValue(65536);
  static final ConfigOption<Double> REGISTRY_RETRY_SECONDS =
      ConfigOptions.key("registry-retry-seconds").doubleType().defaultValue(60.0);

  @Override
  public DecodingFormat<DeserializationSchema<RowData>> createDecodingFormat(
      DynamicTableFactory.Context context, ReadableConfig options) {
    FactoryUtil.validateFactoryOptions(this, options);
    String url = options.get(REGISTRY_URL);
    String reader = options.get(READER_SCHEMA);
    int max = options.get(MAX_RECORD_BYTES);
    long retryMs = (long) (options.get(REGISTRY_RETRY_SECONDS) * 1000);
    return new DecodingFormat<>() {
      @Override
      public DeserializationSchema<RowData> createRuntimeDecoder(
          DynamicTableSource.Context ctx, DataType physicalType) {
        return new EventDeserializer(
            url, reader, max, retryMs, physicalType, ctx.createTypeInformation(physicalType));
      }

      @Override
      public ChangelogMode getChangelogMode() {
        return ChangelogMode.insertOnly();
      }
    };
  }

  @Override
  public String factoryIdentifier() {
    return IDENTIFIER;
  }

  @Override
  public Set<ConfigOption<?>> requiredOptions() {
    Set<ConfigOption<?>> required = new HashSet<>();
    required.add(REGISTRY_URL);
    required.add(READER_SCHEMA);
    return required;
  }

  @Override
  public Set<ConfigOption<?>> optionalOptions() {
    Set<ConfigOption<?>> optional = new HashSet<>();
    optional.add(MAX_RECORD_BYTES);
    optional.add(REGISTRY_RETRY_SECONDS);
    return optional;
  }
}
