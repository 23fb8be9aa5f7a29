package dev.meterflow.flink;

import java.io.IOException;
import org.apache.flink.avro.registry.confluent.shaded.io.confluent.kafka.schemaregistry.client.rest.RestService;
import org.apache.flink.avro.registry.confluent.shaded.io.confluent.kafka.schemaregistry.client.rest.exceptions.RestClientException;

/**
 * Writer schemas from a Confluent-compatible registry (Apicurio's ccompat API).
 *
 * <p>Only a 404 carrying Confluent's "schema not found" code (40403) means the id does not exist.
 * Anything else (connection refused, timeouts, 5xx, a 404 without that code, i.e. a wrong base
 * URL) is retried with backoff for {@code retrySeconds}, then thrown: a good event must never be
 * dead-lettered because the registry is down or misconfigured; the job fails and Flink restarts
 * it from its last checkpoint.
 */
final class RegistrySchemaLookup implements SchemaLookup {
  private static final long serialVersionUID = 1L;
  static final int SCHEMA_NOT_FOUND = 40403;

  private final String url;
  private final long retryMillis;
  private transient RestService rest;

  RegistrySchemaLookup(String url, long retryMillis) {
    this.url = url;
    this.retryMillis = retryMillis;
  }

  @Override
  public String schemaText(int id) throws SchemaNotFoundException, IOException {
    if (rest == null) {
      rest = new RestService(url);
    }
    long deadline = System.nanoTime() + retryMillis * 1_000_000L;
    long backoff = 100;
    Exception last;
    while (true) {
      try {
        return rest.getId(id).getSchemaString();
      } catch (RestClientException e) {
        if (e.getStatus() == 404 && e.getErrorCode() == SCHEMA_NOT_FOUND) {
          throw new SchemaNotFoundException(id);
        }
        last = e;
      } catch (IOException | RuntimeException e) {
        last = e;
      }
      long left = (deadline - System.nanoTime()) / 1_000_000L;
      if (left <= 0) {
        throw new IOException(
            "schema registry " + url + " did not answer for schema id " + id + " within "
                + retryMillis + " ms", last);
      }
      try {
        Thread.sleep(Math.min(backoff, left));
      } catch (InterruptedException ie) {
        Thread.currentThread().interrupt();
        throw new IOException("interrupted while waiting for the schema registry", ie);
      }
      backoff = Math.min(backoff * 2, 5_000);
    }
  }
}
