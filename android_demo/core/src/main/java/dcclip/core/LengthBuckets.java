package dcclip.core;

import java.util.Arrays;
import java.util.List;
import java.util.Map;

/**
 * A text artifact's length buckets (manifest artifacts[].length_buckets): the .pte holds one method per length,
 * "forward" at the context length and "forward_&lt;L&gt;" below it, sharing one copy of the weights. A text runs
 * through the shortest bucket that holds its tokens, its ids and mask cut to that length: a 10-token query
 * does not pay for 64 positions. The same rule as lowering.encoders.shortest_bucket / used_length in Python.
 */
public final class LengthBuckets {
    private final int[] lengths; // rising; the last is the context length

    private LengthBuckets(int[] lengths) {
        this.lengths = lengths;
    }

    /** The artifact's buckets; an artifact without the key has one, the context length in "forward". */
    static LengthBuckets of(Map<String, Object> artifact, int contextLength, String where) {
        Object raw = artifact.get("length_buckets");
        if (raw == null) return new LengthBuckets(new int[] {contextLength});
        String expected = where + " length_buckets must be a list of {\"length\", \"method\"} with lengths rising to "
                + "the context length " + contextLength + " and methods named \"forward_<length>\" (\"forward\" for "
                + "the context length); re-export the bundle";
        List<Object> list = Json.arr(raw, where + " length_buckets");
        if (list.isEmpty()) throw new BundleException(expected);
        int[] out = new int[list.size()];
        for (int k = 0; k < out.length; k++) {
            if (!(list.get(k) instanceof Map)) throw new BundleException(expected);
            Map<String, Object> b = Json.obj(list.get(k), where + " length_buckets[" + k + "]");
            Object length = b.get("length"), method = b.get("method");
            if (!(length instanceof Long) || !(method instanceof String)) throw new BundleException(expected);
            long L = (Long) length;
            if (L < 1 || L > contextLength || (k > 0 && L <= out[k - 1])) throw new BundleException(expected);
            out[k] = (int) L;
            if (!method.equals(methodName(out[k], contextLength))) throw new BundleException(expected);
        }
        if (out[out.length - 1] != contextLength) throw new BundleException(expected);
        return new LengthBuckets(out);
    }

    static String methodName(int length, int contextLength) {
        return length == contextLength ? "forward" : "forward_" + length;
    }

    public int[] lengths() {
        return lengths.clone();
    }

    /** Positions a right-padded text uses: up to its last mask 1 (1 for a text with none). */
    public static int usedLength(long[] attentionMask) {
        for (int k = attentionMask.length - 1; k >= 0; k--) if (attentionMask[k] != 0) return k + 1;
        return 1;
    }

    /** What to run for one tokenized text: the method and its inputs cut to the bucket's length. */
    public static final class Choice {
        public final int length;
        public final String method;
        public final long[] inputIds, attentionMask;

        Choice(int length, String method, long[] ids, long[] mask) {
            this.length = length;
            this.method = method;
            this.inputIds = ids;
            this.attentionMask = mask;
        }
    }

    public Choice pick(Tokenizer.Encoding e) {
        int context = lengths[lengths.length - 1];
        if (e.inputIds.length != context || e.attentionMask.length != context) {
            throw new IllegalArgumentException("a text encoding of " + e.inputIds.length + " ids; this artifact takes "
                    + context + " (Tokenizer.encodePadded)");
        }
        int used = usedLength(e.attentionMask);
        for (int L : lengths) {
            if (used <= L) {
                return new Choice(L, methodName(L, context), Arrays.copyOf(e.inputIds, L), Arrays.copyOf(e.attentionMask, L));
            }
        }
        throw new IllegalStateException("unreachable: the last bucket is the context length");
    }
}
