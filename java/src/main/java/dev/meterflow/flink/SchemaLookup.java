package dev.meterflow.flink;

import java.io.IOException;
import java.io.Serializable;

/** The writer schema text of a registry id: the registry in the job, a map in tests. */
public interface SchemaLookup extends Serializable {
  /**
   * @throws SchemaNotFoundException the registry answered that the id does not exist
   * @throws IOException the registry could not answer (the caller fails the job)
   */
  String schemaText(int id) throws SchemaNotFoundException, IOException;

  /** The registry said this id does not exist: the record is dead-lettered, not retried. */
  final class SchemaNotFoundException extends Exception {
    private static final long serialVersionUID = 1L;

    public SchemaNotFoundException(int id) {
      super("schema id " + id + " is not in the registry");
    }
  }
}
