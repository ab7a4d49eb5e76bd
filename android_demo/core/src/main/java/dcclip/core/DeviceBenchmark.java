package dcclip.core;

import java.io.File;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The benchmark mode: every artifact of the bundle this platform can run, timed at batch 1 (warm-up, then
 * each run timed), its parity against golden.json's PyTorch embeddings, and, given labeled images, the
 * zero-shot top-1/top-5 of each (image, text) pair of one backend and precision, English and Chinese, with
 * prototypes built on the device from the manifest's prompt templates. The result is
 * {@link Benchmark#report}'s JSON, for {@code python -m lowering.report --device-json}.
 */
public final class DeviceBenchmark {
    private DeviceBenchmark() {}

    /** Loads one artifact; only the method of its tower is called. Returns null if this platform can't run it. */
    public interface Loader {
        Classifier.Encoders load(Manifest.Artifact artifact) throws Exception;
    }

    /** Peak memory of the process in bytes, or null when the platform can't tell. */
    public interface MemoryProbe {
        Long peakBytes();
    }

    public static final class Labeled {
        public final File file;
        public final int label;

        public Labeled(File file, int label) {
            this.file = file;
            this.label = label;
        }
    }

    public static List<Map<String, Object>> run(Bundle bundle, Loader loader, Classifier.Decoder decoder,
                                                List<Labeled> eval, int warmup, int runs, MemoryProbe memory)
            throws Exception {
        Manifest m = bundle.manifest;
        Map<String, Classifier.Encoders> loaded = new HashMap<>();
        for (Manifest.Artifact a : m.artifacts) {
            Classifier.Encoders enc = loader.load(a);
            if (enc != null) loaded.put(a.file, enc);
        }
        // one input per tower: the first golden image and text
        Map<String, Object> g = Json.obj(Bundle.parseFile(m.file(m.golden, "manifest golden")), m.golden);
        Map<String, Object> img0 = Json.obj(Json.arr(g.get("images"), "golden images").get(0), "golden image");
        String what = "golden.json images[0].file";
        Classifier.Pixels px = decoder.decode(m.file(Json.str(img0.get("file"), what), what));
        float[] pixels = bundle.preprocessor.preprocessArgb(px.argb, px.width, px.height);
        Map<String, Object> t0 = Json.obj(Json.arr(g.get("texts"), "golden texts").get(0), "golden text");
        Tokenizer.Encoding ids = bundle.tokenizer.encodePadded(Json.str(t0.get("text"), "text"));

        Map<String, Map<String, Object>> accuracyByPair = new HashMap<>();
        List<Map<String, Object>> entries = new ArrayList<>();
        for (Manifest.Artifact a : m.artifacts) {
            Classifier.Encoders enc = loaded.get(a.file);
            if (enc == null) continue;
            boolean image = a.tower.equals("image");
            Benchmark.Timing t = Benchmark.time(image ? () -> enc.encodeImage(pixels) : () -> enc.encodeText(ids), warmup, runs);
            Classifier.GoldenParity gp = Classifier.goldenParity(bundle, enc, image ? decoder : null);
            Map<String, Object> parity = image ? Benchmark.parity(gp.imageDevice, gp.imageReference)
                    : Benchmark.parity(gp.textDevice, gp.textReference);
            String pair = a.backend + "/" + a.precision;
            if (!accuracyByPair.containsKey(pair)) accuracyByPair.put(pair, pairAccuracy(bundle, loaded, a, decoder, eval));
            entries.add(Benchmark.entry(a, t, memory == null ? null : memory.peakBytes(), accuracyByPair.get(pair), parity));
        }
        return entries;
    }

    private static Map<String, Object> pairAccuracy(Bundle bundle, Map<String, Classifier.Encoders> loaded,
                                                    Manifest.Artifact a, Classifier.Decoder decoder,
                                                    List<Labeled> eval) throws Exception {
        if (eval == null || eval.isEmpty() || bundle.classes == null) return null;
        Classifier.Encoders image = null, text = null;
        for (Manifest.Artifact b : bundle.manifest.artifacts) {
            if (!b.backend.equals(a.backend) || !b.precision.equals(a.precision) || !loaded.containsKey(b.file)) continue;
            if (b.tower.equals("image")) image = loaded.get(b.file);
            else text = loaded.get(b.file);
        }
        if (image == null || text == null) return null;
        List<float[]> embeddings = new ArrayList<>();
        int[] labels = new int[eval.size()];
        for (int k = 0; k < eval.size(); k++) {
            Classifier.Pixels px = decoder.decode(eval.get(k).file);
            embeddings.add(image.encodeImage(bundle.preprocessor.preprocessArgb(px.argb, px.width, px.height)));
            labels[k] = eval.get(k).label;
        }
        Map<String, Object> out = new LinkedHashMap<>();
        for (String lang : new String[] {"en", "zh"}) {
            List<String> names = bundle.classes.labels(lang);
            List<String> templates = templates(bundle, lang);
            float[][] protos = new float[names.size()][];
            for (int c = 0; c < protos.length; c++) protos[c] = Scoring.prototype(text, bundle.tokenizer, templates, names.get(c));
            List<int[]> ranks = new ArrayList<>();
            for (float[] e : embeddings) ranks.add(Scoring.topK(Scoring.logits(e, protos, 1f), 5));
            out.put(lang, Benchmark.accuracy(ranks, labels));
        }
        return out;
    }

    /** The manifest's class_embeddings.templates[lang]: the rule the bundle's class embeddings were built with. */
    @SuppressWarnings("unchecked")
    static List<String> templates(Bundle bundle, String lang) {
        String where = "manifest class_embeddings.templates." + lang;
        Map<String, Object> ce = Json.obj(bundle.manifest.raw.get("class_embeddings"), "manifest class_embeddings");
        List<String> out = new ArrayList<>();
        for (Object t : Json.arr(Json.obj(ce.get("templates"), "manifest class_embeddings.templates").get(lang), where)) {
            String s = Json.str(t, where);
            if (!s.contains(Scoring.PLACEHOLDER)) throw new BundleException(where + ": '" + s + "' has no " + Scoring.PLACEHOLDER);
            out.add(s);
        }
        if (out.isEmpty()) throw new BundleException(where + " is empty");
        return out;
    }
}
