package dcclip.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertTrue;

import java.io.File;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/**
 * The demo's pipeline glue (preprocess -> image encoder, tokenizer -> text encoder, scoring, benchmark) with
 * encoders that answer from the Python side's own embeddings: an input they were not given by Python (a
 * pixel or a token id off) is an error, so these tests prove the app feeds the encoders exactly what PyTorch saw.
 */
public class ClassifierTest {
    /** Embeddings keyed by the exact encoder input: golden.json's images and texts, and the class prompts. */
    static final class PythonAnswers implements Classifier.Encoders {
        final Map<String, float[]> images = new HashMap<>(), texts = new HashMap<>();

        PythonAnswers(Bundle b) throws Exception {
            Map<String, Object> g = Golden.golden();
            for (Object o : Json.arr(g.get("images"), "images")) {
                Map<String, Object> img = Json.obj(o, "image");
                String sha = (String) Json.obj(img.get("preprocessed"), "p").get("sha256");
                images.put(sha, Json.floats(img.get("embedding"), "embedding"));
            }
            for (Object o : Json.arr(g.get("texts"), "texts")) {
                Map<String, Object> t = Json.obj(o, "text");
                texts.put(Arrays.toString(Golden.longs(t.get("input_ids"))), Json.floats(t.get("embedding"), "embedding"));
            }
            for (String lang : new String[] {"en", "zh"}) {
                // one template per language (the exporter's default): a class prompt's embedding is its class's
                List<String> templates = DeviceBenchmark.templates(b, lang);
                if (templates.size() != 1) throw new AssertionError("this test needs a bundle with one template per language");
                for (int c = 0; c < b.classes.labels(lang).size(); c++) {
                    String prompt = templates.get(0).replace(Scoring.PLACEHOLDER, b.classes.labels(lang).get(c));
                    texts.put(Arrays.toString(b.tokenizer.encodePadded(prompt).inputIds), b.classes.embeddings(lang)[c]);
                }
            }
        }

        @Override
        public float[] encodeImage(float[] pixels) {
            try {
                float[] e = images.get(Golden.sha256LittleEndian(pixels));
                if (e == null) throw new AssertionError("the image encoder got a tensor Python never made");
                return e;
            } catch (AssertionError e) {
                throw e;
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        }

        @Override
        public float[] encodeText(Tokenizer.Encoding enc) {
            float[] e = texts.get(Arrays.toString(enc.inputIds));
            if (e == null) throw new AssertionError("the text encoder got ids Python never made: " + Arrays.toString(enc.inputIds));
            for (int k = 0; k < enc.inputIds.length; k++) assertEquals(enc.inputIds[k] != 0 || k == 0 ? 1 : 0, enc.attentionMask[k]);
            return e;
        }
    }

    static Classifier.Pixels decode(File f) throws Exception {
        int[] wh = new int[2];
        int[] argb = Golden.readArgb(f, wh);
        return new Classifier.Pixels(argb, wh[0], wh[1]);
    }

    @Test
    public void classifiesTheGoldenImagesAsTorchRanksThem() throws Exception {
        Bundle b = Bundle.open(Golden.bundle());
        Classifier c = new Classifier(b, new PythonAnswers(b));
        int checked = 0;
        for (Object o : Golden.list("scoring")) {
            Map<String, Object> s = Json.obj(o, "case");
            Classifier.Answer a = c.classify(decode(new File(Golden.bundle(), (String) s.get("image"))),
                    (String) s.get("language"), null, 5);
            int[] idx = new int[a.top.size()];
            for (int k = 0; k < idx.length; k++) idx[k] = a.top.get(k).index;
            assertArrayEquals(Json.ints(s.get("top5"), "top5"), idx);
            assertTrue(a.totalMs() >= 0);
            checked++;
        }
        assertTrue(checked >= 2);
    }

    @Test
    public void aFreeTextQueryIsRankedAmongTheLabels() throws Exception {
        Bundle b = Bundle.open(Golden.bundle());
        Map<String, Object> t = Json.obj(Json.arr(Golden.golden().get("texts"), "texts").get(2), "text");
        String query = (String) t.get("text");
        Classifier c = new Classifier(b, new PythonAnswers(b));
        Map<String, Object> img = Json.obj(Json.arr(Golden.golden().get("images"), "images").get(0), "image");
        Classifier.Answer a = c.classify(decode(new File(Golden.bundle(), (String) img.get("file"))), "zh", query,
                b.classes.labelsZh.size() + 1);
        boolean found = false;
        for (Scoring.Scored s : a.top) found |= s.label.equals("\u201c" + query + "\u201d");
        assertTrue("the query is among the candidates", found);
        float sum = 0;
        for (Scoring.Scored s : a.top) sum += s.probability;
        assertEquals(1f, sum, 1e-5f);
    }

    @Test
    public void goldenParityIsExactWithPythonsOwnEmbeddings() throws Exception {
        Bundle b = Bundle.open(Golden.bundle());
        Classifier.GoldenParity p = new Classifier(b, new PythonAnswers(b)).goldenParity(ClassifierTest::decode);
        Map<String, Object> img = Benchmark.parity(p.imageDevice, p.imageReference);
        Map<String, Object> txt = Benchmark.parity(p.textDevice, p.textReference);
        assertEquals(1.0, (Double) img.get("cosine_min"), 1e-6);
        assertEquals(1.0, (Double) txt.get("cosine_min"), 1e-6);
    }

    @Test
    public void benchmarkModeWritesAnEntryPerRunnableArtifact() throws Exception {
        Bundle b = Bundle.open(Golden.bundle());
        PythonAnswers answers = new PythonAnswers(b);
        List<DeviceBenchmark.Labeled> eval = new ArrayList<>();
        for (Object o : Golden.list("scoring")) {
            Map<String, Object> s = Json.obj(o, "case");
            if (s.get("language").equals("en")) {
                eval.add(new DeviceBenchmark.Labeled(new File(Golden.bundle(), (String) s.get("image")),
                        Json.ints(s.get("top5"), "top5")[0]));
            }
        }
        List<Map<String, Object>> entries = DeviceBenchmark.run(b, a -> answers, ClassifierTest::decode, eval, 1, 3,
                () -> 42L);
        assertEquals(b.manifest.artifacts.size(), entries.size());
        for (Map<String, Object> e : entries) {
            assertEquals(Arrays.asList(Benchmark.ENTRY_FIELDS), new ArrayList<>(e.keySet()));
            Map<String, Object> acc = Json.obj(e.get("accuracy"), "accuracy");
            // labels are PyTorch's own top-1 in English, so the English top-1 is 1
            assertEquals(1.0, (Double) Json.obj(acc.get("en"), "en").get("top1"), 0);
            assertNotNull(Json.obj(acc.get("zh"), "zh").get("top5"));
            assertEquals(1.0, (Double) Json.obj(e.get("parity"), "parity").get("cosine_min"), 1e-6);
            assertEquals(42L, e.get("peak_memory_bytes"));
        }
    }
}
