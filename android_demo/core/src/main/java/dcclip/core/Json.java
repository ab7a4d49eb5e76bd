package dcclip.core;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A small JSON reader and writer, so the core module needs nothing beyond the JDK (and runs the same on
 * Android and on a plain JVM).
 *
 * <p>Values: {@code Map<String,Object>} (insertion-ordered), {@code List<Object>}, {@code String},
 * {@code Long} (integers that fit), {@code Double} (any other number), {@code Boolean}, {@code null}.
 * Python's json module writes NaN, Infinity and -Infinity for non-finite floats; they are read too.
 */
public final class Json {
    private final String s;
    private int i;

    private Json(String s) {
        this.s = s;
    }

    public static Object parse(String text) {
        Json p = new Json(text);
        p.ws();
        Object v = p.value();
        p.ws();
        if (p.i != p.s.length()) throw p.error("trailing characters after the JSON value");
        return v;
    }

    // ------------------------------------------------------------------------------------ reading
    /** The position and what was expected there, never the text itself (error messages never echo a file). */
    private IllegalArgumentException error(String what) {
        return new IllegalArgumentException("invalid JSON at character " + i + ": " + what);
    }

    private void ws() {
        while (i < s.length()) {
            char c = s.charAt(i);
            if (c == ' ' || c == '\t' || c == '\n' || c == '\r') i++;
            else break;
        }
    }

    private Object value() {
        if (i >= s.length()) throw error("unexpected end of input");
        char c = s.charAt(i);
        switch (c) {
            case '{': return object();
            case '[': return array();
            case '"': return string();
            case 't': return literal("true", Boolean.TRUE);
            case 'f': return literal("false", Boolean.FALSE);
            case 'n': return literal("null", null);
            case 'N': return literal("NaN", Double.NaN);
            case 'I': return literal("Infinity", Double.POSITIVE_INFINITY);
            default:
                if (c == '-' || (c >= '0' && c <= '9')) return number();
                throw error("unexpected character");
        }
    }

    private Object literal(String word, Object v) {
        if (!s.startsWith(word, i)) throw error("expected " + word);
        i += word.length();
        return v;
    }

    private Map<String, Object> object() {
        Map<String, Object> m = new LinkedHashMap<>();
        i++;
        ws();
        if (peek() == '}') {
            i++;
            return m;
        }
        while (true) {
            ws();
            if (peek() != '"') throw error("expected a string key");
            String k = string();
            ws();
            if (peek() != ':') throw error("expected ':'");
            i++;
            ws();
            m.put(k, value());
            ws();
            char c = peek();
            i++;
            if (c == '}') return m;
            if (c != ',') throw error("expected ',' or '}'");
        }
    }

    private List<Object> array() {
        List<Object> a = new ArrayList<>();
        i++;
        ws();
        if (peek() == ']') {
            i++;
            return a;
        }
        while (true) {
            ws();
            a.add(value());
            ws();
            char c = peek();
            i++;
            if (c == ']') return a;
            if (c != ',') throw error("expected ',' or ']'");
        }
    }

    private char peek() {
        if (i >= s.length()) throw error("unexpected end of input");
        return s.charAt(i);
    }

    private String string() {
        i++; // opening quote
        StringBuilder b = new StringBuilder();
        while (true) {
            if (i >= s.length()) throw error("unterminated string");
            char c = s.charAt(i++);
            if (c == '"') return b.toString();
            if (c != '\\') {
                b.append(c);
                continue;
            }
            if (i >= s.length()) throw error("unterminated escape");
            char e = s.charAt(i++);
            switch (e) {
                case '"': b.append('"'); break;
                case '\\': b.append('\\'); break;
                case '/': b.append('/'); break;
                case 'b': b.append('\b'); break;
                case 'f': b.append('\f'); break;
                case 'n': b.append('\n'); break;
                case 'r': b.append('\r'); break;
                case 't': b.append('\t'); break;
                case 'u':
                    if (i + 4 > s.length()) throw error("short \\u escape");
                    try {
                        b.append((char) Integer.parseInt(s.substring(i, i + 4), 16)); // surrogate pairs join up
                    } catch (NumberFormatException ex) {
                        throw error("bad \\u escape");
                    }
                    i += 4;
                    break;
                default: throw error("bad escape");
            }
        }
    }

    private Object number() {
        int start = i;
        if (s.charAt(i) == '-') {
            i++;
            if (s.startsWith("Infinity", i)) {
                i += 8;
                return Double.NEGATIVE_INFINITY;
            }
        }
        boolean integral = true;
        while (i < s.length()) {
            char c = s.charAt(i);
            if (c >= '0' && c <= '9') i++;
            else if (c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') {
                integral = false;
                i++;
            } else break;
        }
        String t = s.substring(start, i);
        try {
            if (integral) {
                BigInteger big = new BigInteger(t);
                return big.bitLength() < 64 ? (Object) big.longValue() : (Object) big.doubleValue();
            }
            return Double.parseDouble(t);
        } catch (NumberFormatException ex) {
            throw error("bad number");
        }
    }

    // ------------------------------------------------------------------------------------ writing
    /** Compact JSON for the same value kinds (plus int/float/arrays of numbers); non-finite numbers as null. */
    public static String write(Object v) {
        StringBuilder b = new StringBuilder();
        write(v, b, 0, true);
        return b.toString();
    }

    /** Indented JSON (one space per level, like the Python side's files). */
    public static String writePretty(Object v) {
        StringBuilder b = new StringBuilder();
        write(v, b, 0, false);
        return b.append('\n').toString();
    }

    private static void newline(StringBuilder b, int depth, boolean compact) {
        if (compact) return;
        b.append('\n');
        for (int k = 0; k < depth; k++) b.append(' ');
    }

    @SuppressWarnings("unchecked")
    private static void write(Object v, StringBuilder b, int depth, boolean compact) {
        if (v == null) {
            b.append("null");
        } else if (v instanceof String) {
            quote((String) v, b);
        } else if (v instanceof Boolean) {
            b.append(v.toString());
        } else if (v instanceof Double || v instanceof Float) {
            double d = ((Number) v).doubleValue();
            if (Double.isNaN(d) || Double.isInfinite(d)) b.append("null");
            else if (d == Math.rint(d) && Math.abs(d) < 1e15) b.append((long) d).append(".0");
            else b.append(v instanceof Float ? Float.toString((Float) v) : Double.toString(d));
        } else if (v instanceof Number) {
            b.append(((Number) v).longValue());
        } else if (v instanceof Map) {
            Map<String, Object> m = (Map<String, Object>) v;
            b.append('{');
            boolean first = true;
            for (Map.Entry<String, Object> e : m.entrySet()) {
                if (!first) b.append(',');
                first = false;
                newline(b, depth + 1, compact);
                quote(e.getKey(), b);
                b.append(compact ? ":" : ": ");
                write(e.getValue(), b, depth + 1, compact);
            }
            if (!m.isEmpty()) newline(b, depth, compact);
            b.append('}');
        } else if (v instanceof List) {
            List<Object> a = (List<Object>) v;
            b.append('[');
            for (int k = 0; k < a.size(); k++) {
                if (k > 0) b.append(compact ? "," : ", ");
                write(a.get(k), b, depth + 1, true);
            }
            b.append(']');
        } else if (v instanceof float[]) {
            float[] a = (float[]) v;
            List<Object> l = new ArrayList<>();
            for (float f : a) l.add(f);
            write(l, b, depth, compact);
        } else if (v instanceof double[]) {
            List<Object> l = new ArrayList<>();
            for (double d : (double[]) v) l.add(d);
            write(l, b, depth, compact);
        } else if (v instanceof int[]) {
            List<Object> l = new ArrayList<>();
            for (int x : (int[]) v) l.add((long) x);
            write(l, b, depth, compact);
        } else {
            throw new IllegalArgumentException("cannot write a " + v.getClass().getName() + " as JSON");
        }
    }

    private static void quote(String s, StringBuilder b) {
        b.append('"');
        for (int k = 0; k < s.length(); k++) {
            char c = s.charAt(k);
            switch (c) {
                case '"': b.append("\\\""); break;
                case '\\': b.append("\\\\"); break;
                case '\n': b.append("\\n"); break;
                case '\r': b.append("\\r"); break;
                case '\t': b.append("\\t"); break;
                default:
                    if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
                    else b.append(c);
            }
        }
        b.append('"');
    }

    // ------------------------------------------------------------------------------------ access
    /** Typed access with messages that name the key: used by the manifest and tokenizer readers. */
    @SuppressWarnings("unchecked")
    public static Map<String, Object> obj(Object o, String where) {
        if (!(o instanceof Map)) throw new BundleException(where + " must be a JSON object, got " + kind(o));
        return (Map<String, Object>) o;
    }

    @SuppressWarnings("unchecked")
    public static List<Object> arr(Object o, String where) {
        if (!(o instanceof List)) throw new BundleException(where + " must be a JSON array, got " + kind(o));
        return (List<Object>) o;
    }

    public static String str(Object o, String where) {
        if (!(o instanceof String)) throw new BundleException(where + " must be a string, got " + kind(o));
        return (String) o;
    }

    public static double num(Object o, String where) {
        if (!(o instanceof Number)) throw new BundleException(where + " must be a number, got " + kind(o));
        return ((Number) o).doubleValue();
    }

    public static long integer(Object o, String where) {
        if (!(o instanceof Long)) throw new BundleException(where + " must be an integer, got " + kind(o));
        return (Long) o;
    }

    public static boolean bool(Object o, String where) {
        if (!(o instanceof Boolean)) throw new BundleException(where + " must be true or false, got " + kind(o));
        return (Boolean) o;
    }

    public static Object get(Map<String, Object> m, String key, String where) {
        if (!m.containsKey(key)) throw new BundleException(where + " lacks \"" + key + "\"");
        return m.get(key);
    }

    public static float[] floats(Object o, String where) {
        List<Object> a = arr(o, where);
        float[] out = new float[a.size()];
        for (int k = 0; k < out.length; k++) out[k] = (float) num(a.get(k), where + "[" + k + "]");
        return out;
    }

    public static int[] ints(Object o, String where) {
        List<Object> a = arr(o, where);
        int[] out = new int[a.size()];
        for (int k = 0; k < out.length; k++) out[k] = (int) integer(a.get(k), where + "[" + k + "]");
        return out;
    }

    private static String kind(Object o) {
        if (o == null) return "null";
        if (o instanceof Map) return "an object";
        if (o instanceof List) return "an array";
        if (o instanceof String) return "the string \"" + o + "\"";
        return o.toString();
    }
}
