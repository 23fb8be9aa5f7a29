package dev.meterflow.flink;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import org.apache.flink.avro.shaded.org.apache.avro.io.Decoder;
import org.apache.flink.avro.shaded.org.apache.avro.util.Utf8;

/**
 * Avro binary primitives read the way fastavro 1.13 (the Python reference's reader) reads them,
 * under Avro's own schema resolution (ResolvingDecoder). Avro's BinaryDecoder differs on bytes
 * no real writer produces, and those differences would change a record's dead-letter verdict:
 *
 * <ul>
 *   <li>varints: fastavro accepts any number of continuation bytes and keeps the low 64 bits
 *       (shifts wrap modulo 64 as on x86); BinaryDecoder refuses ints over 5 and longs over 10
 *       bytes and reads ints as 32-bit;
 *   <li>strings that are read must be valid UTF-8 (Python's strict decode, surrogates refused);
 *       BinaryDecoder substitutes U+FFFD. Skipped strings (writer-only fields) are not checked,
 *       as fastavro does not decode them;
 *   <li>a negative or too long length is an error, and a block count larger than the bytes left
 *       fails at once (it could never be satisfied) instead of allocating that many entries;
 *   <li>a block with a byte size (a negative count) in a skipped field is skipped by that size,
 *       not item by item; a count of -2^63 reads as an empty block, as fastavro's int64 does.
 * </ul>
 *
 * Known remaining difference: fastavro indexes a union with a negative branch index from the
 * end (Python list semantics); Avro refuses it. Such bytes are not valid Avro; we stay strict.
 */
final class FastavroDecoder extends Decoder {
  private final byte[] buf;
  private int pos;
  private final int end;

  FastavroDecoder(byte[] buf, int offset, int length) {
    this.buf = buf;
    this.pos = offset;
    this.end = offset + length;
  }

  private int readByte() throws IOException {
    if (pos >= end) {
      throw new EOFException();
    }
    return buf[pos++] & 0xff;
  }

  private long varint() throws IOException {
    int b = readByte();
    long n = b & 0x7f;
    int shift = 7;
    while ((b & 0x80) != 0) {
      b = readByte();
      n |= ((long) (b & 0x7f)) << shift; // Java masks the shift to 6 bits, like x86
      shift += 7;
    }
    return (n >>> 1) ^ -(n & 1);
  }

  private int length() throws IOException {
    long n = varint();
    if (n < 0 || n > end - pos) {
      throw new EOFException("length " + n + " with " + (end - pos) + " bytes left");
    }
    return (int) n;
  }

  private long blockCount() throws IOException {
    long n = varint();
    while (n < 0) {
      varint(); // block size in bytes, unused (fastavro reads and ignores it)
      if (n != Long.MIN_VALUE) {
        n = -n;
        break;
      }
      // -2^63 is its own negation: fastavro (an int64 in C) reads no item, then the next block
      n = varint();
    }
    return items(n);
  }

  /**
   * A block of a skipped (writer-only) array or map: one with a byte size is skipped whole, as
   * fastavro and Avro's BinaryDecoder skip it; the count of one without is returned.
   */
  private long skipBlocks() throws IOException {
    long n = varint();
    while (n < 0) {
      long size = varint();
      if (size < 0 || size > end - pos) {
        throw new EOFException("block of " + size + " bytes with " + (end - pos) + " bytes left");
      }
      pos += (int) size;
      n = varint();
    }
    return items(n);
  }

  private long items(long n) throws EOFException {
    // every item takes at least one byte unless its type is null; a count no remaining bytes
    // could hold is refused at once rather than allocated (a map of nulls is not in our schemas)
    if (n > end - pos) {
      throw new EOFException("block of " + n + " items with " + (end - pos) + " bytes left");
    }
    return n;
  }

  @Override
  public void readNull() {}

  @Override
  public boolean readBoolean() throws IOException {
    return readByte() == 1;
  }

  @Override
  public int readInt() throws IOException {
    long v = varint();
    if (v != (int) v) {
      throw new IOException("int out of range: " + v);
    }
    return (int) v;
  }

  @Override
  public long readLong() throws IOException {
    return varint();
  }

  @Override
  public float readFloat() throws IOException {
    if (end - pos < 4) {
      throw new EOFException();
    }
    float f = ByteBuffer.wrap(buf, pos, 4).order(java.nio.ByteOrder.LITTLE_ENDIAN).getFloat();
    pos += 4;
    return f;
  }

  @Override
  public double readDouble() throws IOException {
    if (end - pos < 8) {
      throw new EOFException();
    }
    double d = ByteBuffer.wrap(buf, pos, 8).order(java.nio.ByteOrder.LITTLE_ENDIAN).getDouble();
    pos += 8;
    return d;
  }

  @Override
  public Utf8 readString(Utf8 old) throws IOException {
    return new Utf8(readString());
  }

  @Override
  public String readString() throws IOException {
    int n = length();
    try {
      String s =
          StandardCharsets.UTF_8
              .newDecoder()
              .onMalformedInput(CodingErrorAction.REPORT)
              .onUnmappableCharacter(CodingErrorAction.REPORT)
              .decode(ByteBuffer.wrap(buf, pos, n))
              .toString();
      pos += n;
      return s;
    } catch (CharacterCodingException e) {
      throw new IOException("invalid UTF-8 in a string", e);
    }
  }

  @Override
  public void skipString() throws IOException {
    // not `pos += length()`: Java reads pos before length() moves it past the varint
    int n = length();
    pos += n;
  }

  @Override
  public ByteBuffer readBytes(ByteBuffer old) throws IOException {
    int n = length();
    ByteBuffer out = ByteBuffer.wrap(java.util.Arrays.copyOfRange(buf, pos, pos + n));
    pos += n;
    return out;
  }

  @Override
  public void skipBytes() throws IOException {
    int n = length(); // as in skipString
    pos += n;
  }

  @Override
  public void readFixed(byte[] bytes, int start, int len) throws IOException {
    if (end - pos < len) {
      throw new EOFException();
    }
    System.arraycopy(buf, pos, bytes, start, len);
    pos += len;
  }

  @Override
  public void skipFixed(int len) throws IOException {
    if (end - pos < len) {
      throw new EOFException();
    }
    pos += len;
  }

  @Override
  public int readEnum() throws IOException {
    return readInt();
  }

  @Override
  public long readArrayStart() throws IOException {
    return blockCount();
  }

  @Override
  public long arrayNext() throws IOException {
    return blockCount();
  }

  @Override
  public long skipArray() throws IOException {
    return skipBlocks();
  }

  @Override
  public long readMapStart() throws IOException {
    return blockCount();
  }

  @Override
  public long mapNext() throws IOException {
    return blockCount();
  }

  @Override
  public long skipMap() throws IOException {
    return skipBlocks();
  }

  @Override
  public int readIndex() throws IOException {
    return readInt();
  }
}
