package dcclip.core;

import java.util.ArrayList;
import java.util.List;

/**
 * Zero-shot scoring as the Python side does it: unit-normalize the embeddings, cosine by dot product,
 * multiply by the manifest's logit scale, softmax, top-k. All in float32.
 */
public final class Scoring {
    private Scoring() {}

    /** One ranked answer. */
    public static final class Scored {
        public final int index;
        public final String label;
        public final float probability;
        public final float logit;

        Scored(int index, String label, float probability, float logit) {
            this.index = index;
            this.label = label;
            this.probability = probability;
            this.logit = logit;
        }

        @Override
        public String toString() {
            return String.format("%s %.1f%%", label, 100 * probability);
        }
    }

    /** Where a template takes the class name (lowering/scoring.py). */
    public static final String PLACEHOLDER = "{c}";

    /**
     * A class's prototype by the bundle's one rule (lowering/scoring.py): the normalized mean of the unit-length
     * embeddings of the class name in each of the manifest's templates.
     */
    public static float[] prototype(Classifier.Encoders text, Tokenizer tokenizer, List<String> templates, String name)
            throws Exception {
        float[] sum = null;
        for (String t : templates) {
            float[] e = normalize(text.encodeText(tokenizer.encodePadded(t.replace(PLACEHOLDER, name))));
            if (sum == null) sum = new float[e.length];
            for (int k = 0; k < e.length; k++) sum[k] += e[k];
        }
        for (int k = 0; k < sum.length; k++) sum[k] /= templates.size();
        return normalize(sum);
    }

    /** v / max(||v||, 1e-12), as torch.nn.functional.normalize. */
    public static float[] normalize(float[] v) {
        float sq = 0f;
        for (float x : v) sq += x * x;
        float norm = Math.max((float) Math.sqrt(sq), 1e-12f);
        float[] out = new float[v.length];
        for (int k = 0; k < v.length; k++) out[k] = v[k] / norm;
        return out;
    }

    public static float dot(float[] a, float[] b) {
        if (a.length != b.length) throw new IllegalArgumentException("dimensions differ: " + a.length + " vs " + b.length);
        float s = 0f;
        for (int k = 0; k < a.length; k++) s += a[k] * b[k];
        return s;
    }

    public static float cosine(float[] a, float[] b) {
        return dot(normalize(a), normalize(b));
    }

    /** logit_scale * cos(query, candidate) for every candidate. */
    public static float[] logits(float[] query, float[][] candidates, float logitScale) {
        float[] q = normalize(query);
        float[] out = new float[candidates.length];
        for (int k = 0; k < candidates.length; k++) out[k] = logitScale * dot(q, normalize(candidates[k]));
        return out;
    }

    public static float[] softmax(float[] logits) {
        float max = Float.NEGATIVE_INFINITY;
        for (float x : logits) max = Math.max(max, x);
        float[] out = new float[logits.length];
        float sum = 0f;
        for (int k = 0; k < logits.length; k++) {
            out[k] = (float) Math.exp(logits[k] - max);
            sum += out[k];
        }
        for (int k = 0; k < out.length; k++) out[k] /= sum;
        return out;
    }

    /** Indices of the k largest scores, largest first; equal scores keep the lower index first. */
    public static int[] topK(float[] scores, int k) {
        k = Math.min(k, scores.length);
        int[] out = new int[k];
        boolean[] taken = new boolean[scores.length];
        for (int r = 0; r < k; r++) {
            int best = -1;
            for (int j = 0; j < scores.length; j++) {
                if (!taken[j] && (best < 0 || scores[j] > scores[best])) best = j;
            }
            taken[best] = true;
            out[r] = best;
        }
        return out;
    }

    /** The top k labels for an embedding against the candidates' embeddings. */
    public static List<Scored> rank(float[] query, float[][] candidates, List<String> labels, float logitScale, int k) {
        if (labels.size() != candidates.length) {
            throw new IllegalArgumentException(labels.size() + " labels for " + candidates.length + " embeddings");
        }
        float[] lg = logits(query, candidates, logitScale);
        float[] p = softmax(lg);
        List<Scored> out = new ArrayList<>();
        for (int i : topK(p, k)) out.add(new Scored(i, labels.get(i), p[i], lg[i]));
        return out;
    }
}
