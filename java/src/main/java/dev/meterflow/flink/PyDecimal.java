package dev.meterflow.flink;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.math.RoundingMode;

/**
 * The subset of Python's {@code decimal} (CPython's _decimal / libmpdec) that meters.py uses,
 * bit for bit: {@code Decimal(text)}, {@code Context(prec=80).multiply}, {@code abs()} in the
 * default 28-digit context, and {@code quantize} to 12 places half-even.
 *
 * <p>A finite value is kept as sign, coefficient and a long exponent, not a BigDecimal: Python
 * accepts exponents up to about ±2e18, beyond BigDecimal's int scale, and comparing or rescaling
 * such a BigDecimal would build a 10^exponent integer.
 */
final class PyDecimal {
  enum Kind { FINITE, INFINITE, NAN }

  // libmpdec's MAX_EMAX and MIN_ETINY on 64-bit: the exponents Decimal(text) accepts exactly.
  private static final long MAX_EMAX = 999_999_999_999_999_999L;
  private static final long MIN_ETINY = -1_999_999_999_999_999_997L;
  private static final BigInteger TEN = BigInteger.TEN;

  final Kind kind;
  final boolean negative;
  final BigInteger coef; // >= 0; FINITE only
  final long exp;

  private PyDecimal(Kind kind, boolean negative, BigInteger coef, long exp) {
    this.kind = kind;
    this.negative = negative;
    this.coef = coef;
    this.exp = exp;
  }

  static PyDecimal finite(boolean negative, BigInteger coef, long exp) {
    return new PyDecimal(Kind.FINITE, negative, coef, exp);
  }

  /**
   * {@code Decimal(text)}, or null where Python raises InvalidOperation. CPython first strips
   * Python whitespace, drops every '_' (anywhere: '1__0' and '_1' are accepted), maps any Unicode
   * decimal digit (category Nd) to its ASCII digit, turns inner whitespace into ' ' and refuses
   * any other non-ASCII char; libmpdec then parses the ASCII text, case-insensitively.
   */
  static PyDecimal parse(String text) {
    if (text == null) {
      return null;
    }
    String s = PyText.strip(text);
    StringBuilder a = new StringBuilder(s.length());
    for (int i = 0; i < s.length(); ) {
      int cp = s.codePointAt(i);
      i += Character.charCount(cp);
      if (cp == '_') {
        continue;
      }
      if (cp > 0 && cp <= 127) {
        a.append((char) cp);
      } else if (PyText.isSpace(cp)) {
        a.append(' ');
      } else if (Character.getType(cp) == Character.DECIMAL_DIGIT_NUMBER) {
        a.append((char) ('0' + Character.digit(cp, 10)));
      } else {
        return null;
      }
    }
    return parseAscii(a.toString());
  }

  private static PyDecimal parseAscii(String s) {
    int i = 0;
    boolean neg = false;
    if (i < s.length() && (s.charAt(i) == '+' || s.charAt(i) == '-')) {
      neg = s.charAt(i) == '-';
      i++;
    }
    String rest = s.substring(i).toLowerCase(java.util.Locale.ROOT);
    if (rest.equals("inf") || rest.equals("infinity")) {
      return new PyDecimal(Kind.INFINITE, neg, null, 0);
    }
    if (rest.startsWith("nan") || rest.startsWith("snan")) {
      String payload = rest.substring(rest.startsWith("nan") ? 3 : 4);
      return allDigits(payload) ? new PyDecimal(Kind.NAN, neg, null, 0) : null;
    }
    int n = rest.length();
    int j = 0;
    StringBuilder digits = new StringBuilder();
    int intDigits = 0;
    while (j < n && isDigit(rest.charAt(j))) {
      digits.append(rest.charAt(j++));
      intDigits++;
    }
    int fracDigits = 0;
    if (j < n && rest.charAt(j) == '.') {
      j++;
      while (j < n && isDigit(rest.charAt(j))) {
        digits.append(rest.charAt(j++));
        fracDigits++;
      }
    }
    if (intDigits + fracDigits == 0) {
      return null;
    }
    BigInteger e = BigInteger.ZERO;
    if (j < n && rest.charAt(j) == 'e') {
      j++;
      int start = j;
      if (j < n && (rest.charAt(j) == '+' || rest.charAt(j) == '-')) {
        j++;
      }
      int digitsStart = j;
      while (j < n && isDigit(rest.charAt(j))) {
        j++;
      }
      if (j == digitsStart) {
        return null;
      }
      e = new BigInteger(rest.substring(start, j));
    }
    if (j != n) {
      return null;
    }
    BigInteger coef = new BigInteger(digits.toString());
    BigInteger exp = e.subtract(BigInteger.valueOf(fracDigits));
    BigInteger adjusted =
        coef.signum() == 0 ? exp : exp.add(BigInteger.valueOf(digitCount(coef) - 1));
    if (adjusted.compareTo(BigInteger.valueOf(MAX_EMAX)) > 0
        || exp.compareTo(BigInteger.valueOf(MIN_ETINY)) < 0) {
      return null; // libmpdec: overflow, or rounding/clamping, which the exact conversion refuses
    }
    return finite(neg, coef, exp.longValueExact());
  }

  private static boolean isDigit(char c) {
    return c >= '0' && c <= '9';
  }

  private static boolean allDigits(String s) {
    for (int i = 0; i < s.length(); i++) {
      if (!isDigit(s.charAt(i))) {
        return false;
      }
    }
    return true;
  }

  static int digitCount(BigInteger c) {
    if (c.signum() == 0) {
      return 1;
    }
    // bitLength gives an estimate within one; fix it with one comparison
    int d = (int) (c.bitLength() * 0.30102999566398120) + 1;
    if (TEN.pow(d - 1).compareTo(c) > 0) {
      d--;
    } else if (TEN.pow(d).compareTo(c) <= 0) {
      d++;
    }
    return d;
  }

  boolean isZero() {
    return coef.signum() == 0;
  }

  /** {@code self < 0} (so -0 is not). */
  boolean lessThanZero() {
    return negative && !isZero();
  }

  /** The exponent of the most significant digit (for zero: the exponent). */
  long adjusted() {
    return isZero() ? exp : exp + digitCount(coef) - 1;
  }

  /** This value rounded half-even to {@code prec} significant digits. */
  PyDecimal round(int prec) {
    int d = digitCount(coef);
    if (isZero() || d <= prec) {
      return this;
    }
    BigDecimal r = new BigDecimal(coef).movePointLeft(d - prec).setScale(0, RoundingMode.HALF_EVEN);
    BigInteger c = r.toBigIntegerExact();
    long e = exp + (d - prec);
    if (digitCount(c) > prec) { // 99..9 carried into a new digit: that digit is a zero
      c = c.divide(TEN);
      e++;
    }
    return finite(negative, c, e);
  }

  /** {@code Context(prec=80).multiply(self, other)} for finite values (the product, rounded). */
  PyDecimal multiply80(PyDecimal other) {
    return finite(negative ^ other.negative, coef.multiply(other.coef), exp + other.exp).round(80);
  }

  /**
   * {@code abs(self) >= Decimal(10) ** 26} as Python evaluates it: abs() rounds to the default
   * context's 28 digits, so 99999999999999999999999999.995 counts as 1e26. (Where Python's
   * abs() overflows, past 1e999999, Python raises; that is out of range here.)
   */
  boolean absAtLeast1e26() {
    return !isZero() && round(28).adjusted() >= 26;
  }

  /** {@code quantize(Decimal("1e-12"))} half-even, for a value below 1e26 in magnitude. */
  BigDecimal quantize12() {
    if (isZero() || adjusted() < -13) {
      return BigDecimal.ZERO.setScale(12); // below 1e-13: rounds to zero
    }
    BigDecimal v = new BigDecimal(coef, Math.toIntExact(-exp));
    v = v.setScale(12, RoundingMode.HALF_EVEN);
    return negative ? v.negate() : v;
  }
}
