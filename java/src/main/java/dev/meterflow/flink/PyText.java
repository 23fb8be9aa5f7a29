package dev.meterflow.flink;

/** Python {@code str} semantics the reference relies on. */
final class PyText {
  private PyText() {}

  /**
   * Whether {@code cp} is Python whitespace ({@code chr(cp).isspace()}, what {@code str.strip()}
   * removes). Listed explicitly: Java's own notions (isWhitespace, isSpaceChar, strip) each differ
   * from Python's (e.g. U+00A0, U+001C..U+001F, U+0085, U+200B).
   */
  static boolean isSpace(int cp) {
    switch (cp) {
      case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D:
      case 0x1C: case 0x1D: case 0x1E: case 0x1F: case 0x20:
      case 0x85: case 0xA0: case 0x1680:
      case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
        return true;
      default:
        return cp >= 0x2000 && cp <= 0x200A;
    }
  }

  /** {@code not s.strip()}: null, empty or only Python whitespace. */
  static boolean isBlank(String s) {
    if (s == null) {
      return true;
    }
    for (int i = 0; i < s.length(); ) {
      int cp = s.codePointAt(i);
      if (!isSpace(cp)) {
        return false;
      }
      i += Character.charCount(cp);
    }
    return true;
  }

  /** {@code s.strip()}. */
  static String strip(String s) {
    int start = 0;
    int end = s.length();
    while (start < end) {
      int cp = s.codePointAt(start);
      if (!isSpace(cp)) {
        break;
      }
      start += Character.charCount(cp);
    }
    while (end > start) {
      int cp = s.codePointBefore(end);
      if (!isSpace(cp)) {
        break;
      }
      end -= Character.charCount(cp);
    }
    return s.substring(start, end);
  }

  /** Python's string order: by code point (String.compareTo compares UTF-16 units instead). */
  static int compareCodePoints(String a, String b) {
    int i = 0;
    int j = 0;
    while (i < a.length() && j < b.length()) {
      int ca = a.codePointAt(i);
      int cb = b.codePointAt(j);
      if (ca != cb) {
        return Integer.compare(ca, cb);
      }
      i += Character.charCount(ca);
      j += Character.charCount(cb);
    }
    return Boolean.compare(i < a.length(), j < b.length());
  }
}
