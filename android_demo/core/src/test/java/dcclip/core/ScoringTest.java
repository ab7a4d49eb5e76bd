package dcclip.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.util.List;
import java.util.Map;
import org.junit.Test;

/** Scoring against torch: golden image embeddings x the bundle's class embeddings, both languages. */
public class ScoringTest {
    @Test
    public void logitsSoftmaxAndTop5MatchTorch() {
        Bundle b = Bundle.open(Golden.bundle());
        List<Object> cases = Golden.list("scoring");
        assertTrue("scoring cases", cases.size() >= 2);
        for (Object o : cases) {
            Map<String, Object> c = Json.obj(o, "case");
            String lang = (String) c.get("language");
            float[] emb = Json.floats(c.get("embedding"), "embedding");
            float[] logits = Scoring.logits(emb, b.classes.embeddings(lang), b.manifest.logitScale);
            float[] want = Json.floats(c.get("logits"), "logits");
            for (int k = 0; k < want.length; k++) assertEquals(lang + " logit " + k, want[k], logits[k], 1e-4f);
            float[] p = Scoring.softmax(logits);
            float[] wantP = Json.floats(c.get("probs"), "probs");
            for (int k = 0; k < wantP.length; k++) assertEquals(lang + " prob " + k, wantP[k], p[k], 1e-5f);
            List<Scoring.Scored> top = Scoring.rank(emb, b.classes.embeddings(lang), b.classes.labels(lang),
                    b.manifest.logitScale, 5);
            int[] idx = new int[top.size()];
            for (int k = 0; k < idx.length; k++) idx[k] = top.get(k).index;
            assertArrayEquals(lang + " top-5", Json.ints(c.get("top5"), "top5"), idx);
            List<Object> labels = Json.arr(c.get("top5_labels"), "labels");
            assertEquals(labels.get(0), top.get(0).label);
        }
    }

    @Test
    public void softmaxAndTopKBasics() {
        float[] p = Scoring.softmax(new float[] {1000f, 1000f, -1000f});
        assertEquals(0.5f, p[0], 0f);
        assertEquals(0f, p[2], 0f);
        assertArrayEquals(new int[] {0, 1}, Scoring.topK(p, 2));
        assertArrayEquals(new int[] {2, 0, 1}, Scoring.topK(new float[] {1f, 0f, 3f}, 10));
        float[] n = Scoring.normalize(new float[] {3f, 4f});
        assertEquals(0.6f, n[0], 1e-7f);
        assertEquals(0f, Scoring.normalize(new float[] {0f, 0f})[0], 0f);
    }
}
