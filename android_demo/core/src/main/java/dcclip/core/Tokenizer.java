package dcclip.core;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.text.Normalizer;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * The bundle's bilingual SentencePiece tokenizer, from its tokenizer.json, reproducing
 * {@code dcclip_mobile.tokenizer.BilingualTokenizer} id for id:
 *
 * <ol>
 *   <li>lone surrogates: each surrogate char not part of a high+low pair becomes U+FFFD (the one rule of every
 *       port: dcclip_mobile/tokenizer.py, tokenizer.json "lone_surrogates");
 *   <li>normalize: Unicode NFKC, lower case, every run of whitespace (Python's {@code \s}) to one space, strip;
 *   <li>SentencePiece (identity rule): "▁" before the text, every space to "▁";
 *   <li>unigram segmentation: the maximum-score path over the "normal" pieces, computed as SentencePiece's
 *       optimized encoder does (float32 sums, a strictly better score replaces, candidates in order of start
 *       position then length; a character no piece of its own length covers gets an unknown node scored
 *       min_score - 10);
 *   <li>byte fallback: an unknown character becomes the pieces "&lt;0xAB&gt;" of its UTF-8 bytes;
 *   <li>BOS + the first context_length-2 pieces + EOS, padded with the pad id; mask 1 on real tokens.
 * </ol>
 */
public final class Tokenizer {
    public static final int FORMAT_VERSION = 1;
    static final float UNK_PENALTY = 10.0f;
    static final String WHITESPACE_SYMBOL = "\u2581";

    /** Characters Python's re {@code \s} (str.isspace) matches: what the Python side collapses. */
    private static final int[] PY_WHITESPACE = {
        0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680,
        0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a,
        0x2028, 0x2029, 0x202f, 0x205f, 0x3000};

    private static final class Node {
        final HashMap<Integer, Node> next = new HashMap<>();
        int id = -1;
    }

    public final int contextLength;
    public final int padId, unkId, bosId, eosId;
    public final int vocabSize;
    private final float[] scores;
    private final String[] pieces;
    private final int[] byteIds = new int[256];
    private final Node trie = new Node();
    private final float unkScore;

    /** Token ids and attention mask, both context_length long. */
    public static final class Encoding {
        public final long[] inputIds;
        public final long[] attentionMask;

        Encoding(long[] ids, long[] mask) {
            this.inputIds = ids;
            this.attentionMask = mask;
        }

        public int[] inputIdsInt() {
            int[] out = new int[inputIds.length];
            for (int k = 0; k < out.length; k++) out[k] = (int) inputIds[k];
            return out;
        }

        public int[] attentionMaskInt() {
            int[] out = new int[attentionMask.length];
            for (int k = 0; k < out.length; k++) out[k] = (int) attentionMask[k];
            return out;
        }
    }

    public static Tokenizer load(File tokenizerJson) {
        try {
            return fromJson(new String(Files.readAllBytes(tokenizerJson.toPath()), StandardCharsets.UTF_8),
                    tokenizerJson.getPath());
        } catch (IOException e) {
            throw new BundleException("cannot read tokenizer file " + tokenizerJson + ": " + e.getMessage(), e);
        }
    }

    public static Tokenizer fromJson(String json, String where) {
        Object parsed;
        try {
            parsed = Json.parse(json);
        } catch (IllegalArgumentException e) {
            throw new BundleException(where + " is not valid JSON: " + e.getMessage(), e);
        }
        return new Tokenizer(Json.obj(parsed, where), where);
    }

    private Tokenizer(Map<String, Object> m, String where) {
        long version = Json.integer(Json.get(m, "format_version", where), where + " format_version");
        if (version != FORMAT_VERSION) {
            throw new BundleException(where + " has format_version " + version + "; this app reads "
                    + FORMAT_VERSION + ". Re-export the bundle with a matching dcclip-mobile.");
        }
        require(m, "model_type", "unigram", where);
        require(m, "add_dummy_prefix", Boolean.TRUE, where);
        require(m, "whitespace_symbol", WHITESPACE_SYMBOL, where);
        require(m, "byte_fallback", Boolean.TRUE, where);
        Map<String, Object> norm = Json.obj(Json.get(m, "normalization", where), where + " normalization");
        if (!"NFKC".equals(norm.get("unicode")) || !Boolean.TRUE.equals(norm.get("lowercase"))
                || !Boolean.TRUE.equals(norm.get("collapse_whitespace")) || !Boolean.TRUE.equals(norm.get("strip"))
                || norm.size() != 4) {
            throw new BundleException(where + " states normalization " + Json.write(norm) + "; this app implements "
                    + "{\"unicode\":\"NFKC\",\"lowercase\":true,\"collapse_whitespace\":true,\"strip\":true}");
        }
        contextLength = (int) Json.integer(Json.get(m, "context_length", where), where + " context_length");
        if (contextLength < 2) {
            throw new BundleException(where + " context_length is " + contextLength + "; it must be >= 2 (BOS and EOS)");
        }
        Map<String, Object> sp = Json.obj(Json.get(m, "special_ids", where), where + " special_ids");
        padId = (int) Json.integer(Json.get(sp, "pad", where + " special_ids"), "pad");
        unkId = (int) Json.integer(Json.get(sp, "unk", where + " special_ids"), "unk");
        bosId = (int) Json.integer(Json.get(sp, "bos", where + " special_ids"), "bos");
        eosId = (int) Json.integer(Json.get(sp, "eos", where + " special_ids"), "eos");

        List<Object> list = Json.arr(Json.get(m, "pieces", where), where + " pieces");
        vocabSize = list.size();
        scores = new float[vocabSize];
        pieces = new String[vocabSize];
        Arrays.fill(byteIds, -1);
        float minScore = Float.MAX_VALUE;
        boolean anyNormal = false;
        for (int id = 0; id < vocabSize; id++) {
            String w = where + " pieces[" + id + "]";
            Map<String, Object> p = Json.obj(list.get(id), w);
            String piece = Json.str(Json.get(p, "piece", w), w + " piece");
            String type = Json.str(Json.get(p, "type", w), w + " type");
            float score = (float) Json.num(Json.get(p, "score", w), w + " score");
            pieces[id] = piece;
            scores[id] = score;
            switch (type) {
                case "normal":
                    anyNormal = true;
                    minScore = Math.min(minScore, score);
                    insert(piece, id);
                    break;
                case "byte":
                    int b = parseBytePiece(piece);
                    if (b < 0) throw new BundleException(w + " is a byte piece spelled \"" + piece + "\", not <0xAB>");
                    byteIds[b] = id;
                    break;
                case "control": case "unknown": case "unused":
                    break; // never matched by text
                default:
                    throw new BundleException(w + " has type \"" + type + "\"; known: normal, byte, control, unknown, unused");
            }
        }
        if (!anyNormal) throw new BundleException(where + " has no normal pieces");
        for (int b = 0; b < 256; b++) {
            if (byteIds[b] < 0) {
                throw new BundleException(where + " lacks the byte piece <0x" + String.format("%02X", b)
                        + ">; byte fallback needs all 256");
            }
        }
        for (int id : new int[] {padId, unkId, bosId, eosId}) {
            if (id < 0 || id >= vocabSize) throw new BundleException(where + " special id " + id + " is outside the vocabulary");
        }
        unkScore = minScore - UNK_PENALTY;
    }

    private static void require(Map<String, Object> m, String key, Object want, String where) {
        Object got = Json.get(m, key, where);
        if (!want.equals(got)) {
            throw new BundleException(where + " has " + key + " = " + Json.write(got) + "; this app implements "
                    + Json.write(want));
        }
    }

    private static int parseBytePiece(String p) {
        if (p.length() != 6 || !p.startsWith("<0x") || p.charAt(5) != '>') return -1;
        try {
            return Integer.parseInt(p.substring(3, 5), 16);
        } catch (NumberFormatException e) {
            return -1;
        }
    }

    private void insert(String piece, int id) {
        Node n = trie;
        for (int k = 0; k < piece.length(); ) {
            int cp = piece.codePointAt(k);
            n = n.next.computeIfAbsent(cp, x -> new Node());
            k += Character.charCount(cp);
        }
        if (n.id < 0) n.id = id; // SentencePiece refuses duplicate pieces; keep the first if one slipped in
    }

    public String piece(int id) {
        return pieces[id];
    }

    // ------------------------------------------------------------------------------ normalization
    static boolean isPythonWhitespace(int cp) {
        return Arrays.binarySearch(PY_WHITESPACE, cp) >= 0;
    }

    /**
     * Each lone surrogate (a high surrogate not followed by a low one, a low one not preceded by a high one)
     * replaced by U+FFFD, as the Python tokenizer does before normalizing (UTF-8 has no encoding for them).
     */
    public static String replaceLoneSurrogates(String text) {
        StringBuilder b = null;
        int n = text.length();
        for (int k = 0; k < n; k++) {
            char c = text.charAt(k);
            boolean lone = false;
            if (Character.isHighSurrogate(c)) {
                if (k + 1 < n && Character.isLowSurrogate(text.charAt(k + 1))) {
                    if (b != null) b.append(c).append(text.charAt(k + 1));
                    k++;
                    continue;
                }
                lone = true;
            } else if (Character.isLowSurrogate(c)) {
                lone = true; // a low surrogate whose high one was consumed would have been skipped above
            }
            if (lone && b == null) b = new StringBuilder(n).append(text, 0, k);
            if (b != null) b.append(lone ? '\uFFFD' : c);
        }
        return b == null ? text : b.toString();
    }

    /**
     * The normalization rule of tokenizer.json: lone surrogates to U+FFFD, then NFKC, lower case, whitespace
     * runs to one space, strip.
     */
    public static String normalize(String text) {
        String s = lowerCase(Normalizer.normalize(replaceLoneSurrogates(text), Normalizer.Form.NFKC));
        StringBuilder b = new StringBuilder(s.length());
        boolean pendingSpace = false;
        for (int k = 0; k < s.length(); ) {
            int cp = s.codePointAt(k);
            k += Character.charCount(cp);
            if (isPythonWhitespace(cp)) {
                pendingSpace = b.length() > 0; // leading whitespace is stripped
            } else {
                if (pendingSpace) b.append(' ');
                pendingSpace = false;
                b.appendCodePoint(cp);
            }
        }
        return b.toString(); // trailing whitespace is dropped: a pending space is never written
    }

    /**
     * Python's str.lower(): full Unicode lower-case mappings, and capital sigma as final sigma when it follows
     * a cased letter and no cased letter follows (case-ignorable characters skipped both ways). Java's own
     * toLowerCase decides final sigma by word boundaries instead ("xΣ8l"), so sigma is decided here.
     */
    static String lowerCase(String s) {
        if (s.indexOf('\u03a3') < 0) return s.toLowerCase(Locale.ROOT);
        StringBuilder b = new StringBuilder(s);
        for (int i = 0; i < b.length(); i++) {
            if (b.charAt(i) != '\u03a3') continue;
            int j = i, c = 0;
            while (j > 0) {
                c = s.codePointBefore(j);
                j -= Character.charCount(c);
                if (!isCaseIgnorable(c)) break;
                c = -1;
            }
            boolean fin = c > 0 && isCased(c);
            if (fin) {
                int k = i + 1;
                c = -1;
                while (k < s.length()) {
                    c = s.codePointAt(k);
                    k += Character.charCount(c);
                    if (!isCaseIgnorable(c)) break;
                    c = -1;
                }
                fin = c < 0 || !isCased(c);
            }
            b.setCharAt(i, fin ? '\u03c2' : '\u03c3');
        }
        return b.toString().toLowerCase(Locale.ROOT);
    }

    /** Unicode's Cased: lower case, upper case (both with their Other_ properties) or title case. */
    static boolean isCased(int cp) {
        return Character.isLowerCase(cp) || Character.isUpperCase(cp) || Character.isTitleCase(cp);
    }

    /** Unicode's Case_Ignorable: Mn, Me, Cf, Lm, Sk, and Word_Break MidLetter, MidNumLet, Single_Quote. */
    static boolean isCaseIgnorable(int cp) {
        switch (Character.getType(cp)) {
            case Character.NON_SPACING_MARK: case Character.ENCLOSING_MARK: case Character.FORMAT:
            case Character.MODIFIER_LETTER: case Character.MODIFIER_SYMBOL:
                return true;
            default:
                break;
        }
        switch (cp) {
            case 0x27: case 0x2e: case 0x3a: case 0xb7: case 0x387: case 0x55f: case 0x5f4: case 0x2018: case 0x2019:
            case 0x2024: case 0x2027: case 0xfe13: case 0xfe52: case 0xfe55: case 0xff07: case 0xff0e: case 0xff1a:
                return true;
            default:
                return false;
        }
    }

    // ------------------------------------------------------------------------------ segmentation
    /** The piece ids of a text, untruncated and without BOS/EOS: SentencePiece's encode of normalize(text). */
    public int[] pieceIds(String text) {
        String norm = normalize(text);
        if (norm.isEmpty()) return new int[0];
        int[] cps = (WHITESPACE_SYMBOL + norm.replace(" ", WHITESPACE_SYMBOL)).codePoints().toArray();
        int n = cps.length;
        float[] best = new float[n + 1];
        int[] startsAt = new int[n + 1];
        int[] idAt = new int[n + 1];
        Arrays.fill(startsAt, -1);
        for (int start = 0; start < n; start++) {
            float here = best[start];
            boolean hasSingle = false;
            Node node = trie;
            for (int end = start; end < n; end++) {
                node = node.next.get(cps[end]);
                if (node == null) break;
                if (node.id >= 0) {
                    float cand = scores[node.id] + here;
                    int pos = end + 1;
                    if (startsAt[pos] == -1 || cand > best[pos]) {
                        best[pos] = cand;
                        startsAt[pos] = start;
                        idAt[pos] = node.id;
                    }
                    if (end == start) hasSingle = true;
                }
            }
            if (!hasSingle) {
                float cand = unkScore + here;
                int pos = start + 1;
                if (startsAt[pos] == -1 || cand > best[pos]) {
                    best[pos] = cand;
                    startsAt[pos] = start;
                    idAt[pos] = unkId;
                }
            }
        }
        // backtrack, expanding unknown characters into their UTF-8 byte pieces
        int[] rev = new int[4 * n];
        int count = 0;
        for (int end = n; end > 0; end = startsAt[end]) {
            int start = startsAt[end];
            if (idAt[end] == unkId) {
                byte[] utf8 = new String(cps, start, end - start).getBytes(StandardCharsets.UTF_8);
                for (int k = utf8.length - 1; k >= 0; k--) rev[count++] = byteIds[utf8[k] & 0xFF];
            } else {
                rev[count++] = idAt[end];
            }
        }
        int[] out = new int[count];
        for (int k = 0; k < count; k++) out[k] = rev[count - 1 - k];
        return out;
    }

    /** BOS + pieces + EOS, truncated to context_length (truncation drops pieces, never EOS); unpadded. */
    public int[] encode(String text) {
        int[] p = pieceIds(text);
        int keep = Math.min(p.length, contextLength - 2);
        int[] out = new int[keep + 2];
        out[0] = bosId;
        System.arraycopy(p, 0, out, 1, keep);
        out[keep + 1] = eosId;
        return out;
    }

    /** encode() padded to context_length with the pad id, and its attention mask. */
    public Encoding encodePadded(String text) {
        int[] row = encode(text);
        long[] ids = new long[contextLength];
        long[] mask = new long[contextLength];
        Arrays.fill(ids, padId);
        for (int k = 0; k < row.length; k++) {
            ids[k] = row[k];
            mask[k] = 1;
        }
        return new Encoding(ids, mask);
    }
}
