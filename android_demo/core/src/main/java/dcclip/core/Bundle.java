package dcclip.core;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * An opened bundle: the verified manifest, its tokenizer, its preprocessing and (when it has them) the label
 * set's class embeddings. Opening checks that the tokenizer belongs to the manifest (context length, special
 * ids, vocabulary size).
 */
public final class Bundle {
    public final Manifest manifest;
    public final Tokenizer tokenizer;
    public final ImagePreprocessor preprocessor;
    public final ClassEmbeddings classes; // null when the bundle carries none

    /** A label set's unit-length text embeddings, English and Chinese, as class_embeddings.json holds them. */
    public static final class ClassEmbeddings {
        public final List<String> labelsEn, labelsZh;
        public final float[][] embeddingsEn, embeddingsZh;

        ClassEmbeddings(Map<String, Object> m, String where, int dim) {
            labelsEn = strings(Json.get(m, "labels_en", where), where + " labels_en");
            labelsZh = strings(Json.get(m, "labels_zh", where), where + " labels_zh");
            embeddingsEn = matrix(Json.get(m, "embeddings_en", where), where + " embeddings_en", dim);
            embeddingsZh = matrix(Json.get(m, "embeddings_zh", where), where + " embeddings_zh", dim);
            if (labelsEn.size() != labelsZh.size() || labelsEn.size() != embeddingsEn.length
                    || labelsEn.size() != embeddingsZh.length) {
                throw new BundleException(where + " lists " + labelsEn.size() + " English and " + labelsZh.size()
                        + " Chinese labels with " + embeddingsEn.length + " and " + embeddingsZh.length + " embeddings");
            }
        }

        public List<String> labels(String language) {
            return "zh".equals(language) ? labelsZh : labelsEn;
        }

        public float[][] embeddings(String language) {
            return "zh".equals(language) ? embeddingsZh : embeddingsEn;
        }

        private static List<String> strings(Object o, String where) {
            List<String> out = new ArrayList<>();
            for (Object x : Json.arr(o, where)) out.add(Json.str(x, where));
            return out;
        }

        private static float[][] matrix(Object o, String where, int dim) {
            List<Object> rows = Json.arr(o, where);
            float[][] out = new float[rows.size()][];
            for (int k = 0; k < out.length; k++) {
                out[k] = Json.floats(rows.get(k), where + "[" + k + "]");
                if (out[k].length != dim) {
                    throw new BundleException(where + "[" + k + "] has " + out[k].length + " values; embed_dim is " + dim);
                }
            }
            return out;
        }
    }

    private Bundle(Manifest m) {
        manifest = m;
        File tokenizerFile = m.file(m.tokenizerJson, "manifest text.tokenizer.json");
        tokenizer = Tokenizer.load(tokenizerFile);
        String w = tokenizerFile.getPath();
        if (tokenizer.contextLength != m.contextLength) {
            throw new BundleException(w + " has context_length " + tokenizer.contextLength + " but the manifest says "
                    + m.contextLength + ": the two do not belong together");
        }
        if (tokenizer.padId != m.padId || tokenizer.unkId != m.unkId || tokenizer.bosId != m.bosId
                || tokenizer.eosId != m.eosId) {
            throw new BundleException(w + " special ids differ from the manifest's");
        }
        if (tokenizer.vocabSize != m.vocabSize) {
            throw new BundleException(w + " has " + tokenizer.vocabSize + " pieces but the manifest says vocab_size "
                    + m.vocabSize);
        }
        preprocessor = m.preprocessor();
        if (m.classEmbeddingsFile == null) {
            classes = null;
        } else {
            File f = m.file(m.classEmbeddingsFile, "manifest class_embeddings.file");
            classes = new ClassEmbeddings(Json.obj(parseFile(f), f.getPath()), f.getPath(), m.embedDim);
        }
    }

    /** Verify every file against the manifest, then read the tokenizer and class embeddings. */
    public static Bundle open(File directory) {
        return new Bundle(Manifest.load(directory));
    }

    public static Object parseFile(File f) {
        try {
            return Json.parse(new String(Files.readAllBytes(f.toPath()), StandardCharsets.UTF_8));
        } catch (IOException e) {
            throw new BundleException("cannot read " + f + ": " + e.getMessage(), e);
        } catch (IllegalArgumentException e) {
            throw new BundleException(f + " is not valid JSON: " + e.getMessage(), e);
        }
    }
}
