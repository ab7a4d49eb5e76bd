package dcclip.core;

import java.io.File;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

/**
 * What the demo screen does, without the screen: zero-shot classification of an image against the bundle's
 * label set in English or Chinese, optionally with a free-text query ranked among the labels, with the
 * measured latency of each step. The encoders are the platform's (ExecuTorch on Android), behind
 * {@link Encoders}.
 */
public final class Classifier {
    /** The two towers as the platform runs them; each returns the embedding [embed_dim]. */
    public interface Encoders {
        float[] encodeImage(float[] pixelsChw);

        float[] encodeText(Tokenizer.Encoding encoding);
    }

    /** Decoded pixels of an image file (ARGB), from the platform's decoder. */
    public static final class Pixels {
        public final int[] argb;
        public final int width, height;

        public Pixels(int[] argb, int width, int height) {
            this.argb = argb;
            this.width = width;
            this.height = height;
        }
    }

    public interface Decoder {
        Pixels decode(File file) throws Exception;
    }

    /** Top answers and where the time went. */
    public static final class Answer {
        public final List<Scoring.Scored> top;
        public final double preprocessMs, imageMs, textMs;
        public final float[] imageEmbedding;

        Answer(List<Scoring.Scored> top, double preprocessMs, double imageMs, double textMs, float[] imageEmbedding) {
            this.top = top;
            this.preprocessMs = preprocessMs;
            this.imageMs = imageMs;
            this.textMs = textMs;
            this.imageEmbedding = imageEmbedding;
        }

        public double totalMs() {
            return preprocessMs + imageMs + textMs;
        }
    }

    public final Bundle bundle;
    private final Encoders encoders;

    public Classifier(Bundle bundle, Encoders encoders) {
        if (bundle.classes == null) {
            throw new BundleException("the bundle in " + bundle.manifest.directory + " has no class embeddings; "
                    + "export it with a label set (python -m lowering.export --labels ... --labels-zh ...)");
        }
        this.bundle = bundle;
        this.encoders = encoders;
    }

    private static double since(long t0) {
        return (System.nanoTime() - t0) / 1e6;
    }

    public float[] embedText(String text) {
        return checked(encoders.encodeText(bundle.tokenizer.encodePadded(text)), "text");
    }

    private float[] checked(float[] emb, String tower) {
        if (emb.length != bundle.manifest.embedDim) {
            throw new BundleException("the " + tower + " encoder returned " + emb.length + " values; the manifest's "
                    + "embed_dim is " + bundle.manifest.embedDim);
        }
        return emb;
    }

    /**
     * Classify decoded pixels. language: "en" or "zh". query: free text in either language, ranked among the
     * labels as one more candidate (shown in quotes), or null/blank for none.
     */
    public Answer classify(Pixels px, String language, String query, int k) {
        long t0 = System.nanoTime();
        float[] x = bundle.preprocessor.preprocessArgb(px.argb, px.width, px.height);
        double pre = since(t0);
        t0 = System.nanoTime();
        float[] img = checked(encoders.encodeImage(x), "image");
        double imageMs = since(t0);
        float[][] candidates = bundle.classes.embeddings(language);
        List<String> labels = new ArrayList<>(bundle.classes.labels(language));
        double textMs = 0;
        if (query != null && !query.trim().isEmpty()) {
            t0 = System.nanoTime();
            float[] q = embedText(query);
            textMs = since(t0);
            candidates = Arrays.copyOf(candidates, candidates.length + 1);
            candidates[candidates.length - 1] = q;
            labels.add("\u201c" + query.trim() + "\u201d");
        }
        List<Scoring.Scored> top = Scoring.rank(img, candidates, labels, bundle.manifest.logitScale, k);
        return new Answer(top, pre, imageMs, textMs, img);
    }

    /** Cosine of this device's embeddings against golden.json's (the eager PyTorch student's), per item. */
    public static final class GoldenParity {
        public final List<float[]> imageDevice = new ArrayList<>(), imageReference = new ArrayList<>();
        public final List<float[]> textDevice = new ArrayList<>(), textReference = new ArrayList<>();
    }

    public GoldenParity goldenParity(Decoder decoder) throws Exception {
        return goldenParity(bundle, encoders, decoder);
    }

    public static GoldenParity goldenParity(Bundle bundle, Encoders encoders, Decoder decoder) throws Exception {
        Manifest m = bundle.manifest;
        Map<String, Object> g = Json.obj(Bundle.parseFile(m.file(m.golden, "manifest golden")), m.golden);
        GoldenParity out = new GoldenParity();
        if (decoder != null) {
            List<Object> images = Json.arr(g.get("images"), "golden images");
            for (int k = 0; k < images.size(); k++) {
                Map<String, Object> img = Json.obj(images.get(k), "golden image");
                String what = "golden.json images[" + k + "].file";
                Pixels px = decoder.decode(m.file(Json.str(img.get("file"), what), what));
                out.imageDevice.add(encoders.encodeImage(bundle.preprocessor.preprocessArgb(px.argb, px.width, px.height)));
                out.imageReference.add(Json.floats(img.get("embedding"), "golden image embedding"));
            }
        }
        for (Object o : Json.arr(g.get("texts"), "golden texts")) {
            Map<String, Object> t = Json.obj(o, "golden text");
            out.textDevice.add(encoders.encodeText(bundle.tokenizer.encodePadded(Json.str(t.get("text"), "golden text"))));
            out.textReference.add(Json.floats(t.get("embedding"), "golden text embedding"));
        }
        return out;
    }
}
