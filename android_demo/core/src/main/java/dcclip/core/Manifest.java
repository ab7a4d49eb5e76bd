package dcclip.core;

import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * A bundle's manifest.json (schema: dcclip_mobile/bundle_manifest.py), read and checked: the format version
 * must be the one this app knows, every required key present, the image preprocessing one this app
 * implements, and (by {@link #verifyFiles}) every listed file on disk with its size and sha256, nothing
 * unlisted. The app trusts nothing the manifest does not state.
 */
public final class Manifest {
    public static final int FORMAT_VERSION = 1;
    public static final String FILE = "manifest.json";
    static final String[] REQUIRED_KEYS = {"format_version", "target", "student", "embed_dim", "logit_scale", "image",
        "text", "artifacts", "default_precision", "parity_gate", "class_embeddings", "golden", "files"};

    /** One encoder file of the bundle. */
    public static final class Artifact {
        public final String tower, backend, format, precision, file;
        public final long sizeBytes;
        public final boolean isDefault;
        public final Map<String, Object> raw;

        Artifact(Map<String, Object> a, String where) {
            raw = a;
            tower = Json.str(Json.get(a, "tower", where), where + " tower");
            backend = Json.str(Json.get(a, "backend", where), where + " backend");
            format = Json.str(Json.get(a, "format", where), where + " format");
            precision = Json.str(Json.get(a, "precision", where), where + " precision");
            file = Json.str(Json.get(a, "file", where), where + " file");
            sizeBytes = Json.integer(Json.get(a, "size_bytes", where), where + " size_bytes");
            isDefault = Boolean.TRUE.equals(a.get("default"));
        }

        /** The artifact's name in reports: its file name without the extension. */
        public String name() {
            int dot = file.lastIndexOf('.');
            return dot > 0 ? file.substring(0, dot) : file;
        }
    }

    public final File directory;
    public final Map<String, Object> raw;
    public final String target;
    public final int embedDim;
    public final float logitScale;
    public final int imageSize;
    public final double[] mean, std;
    public final int contextLength;
    public final int padId, unkId, bosId, eosId;
    public final int vocabSize;
    public final String tokenizerJson;
    public final String golden;
    public final String classEmbeddingsFile; // null when the bundle has none
    public final List<Artifact> artifacts = new ArrayList<>();
    public final Map<String, Map<String, Object>> files;

    /** Read, check and verify every file's sha256: what an app does before loading anything. */
    public static Manifest load(File bundleDir) {
        Manifest m = read(bundleDir);
        List<String> problems = m.verifyFiles();
        if (!problems.isEmpty()) {
            throw new BundleException("bundle " + bundleDir + " does not match its manifest; refusing to load it: "
                    + String.join("; ", problems.subList(0, Math.min(5, problems.size())))
                    + (problems.size() > 5 ? "; and " + (problems.size() - 5) + " more" : "")
                    + ". Copy the bundle again exactly as `python -m lowering.export` wrote it.");
        }
        return m;
    }

    /** Read and check manifest.json without hashing the files. */
    public static Manifest read(File bundleDir) {
        File f = new File(bundleDir, FILE);
        if (!f.isFile()) {
            throw new BundleException(f + " does not exist; a bundle is a directory written by "
                    + "`python -m lowering.export` (e.g. OUT/android)");
        }
        String text;
        try {
            text = new String(Files.readAllBytes(f.toPath()), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new BundleException("cannot read " + f + ": " + e.getMessage(), e);
        }
        Object parsed;
        try {
            parsed = Json.parse(text);
        } catch (IllegalArgumentException e) {
            throw new BundleException(f + " is not valid JSON: " + e.getMessage(), e);
        }
        return new Manifest(bundleDir, Json.obj(parsed, f.getPath()), f.getPath());
    }

    @SuppressWarnings("unchecked")
    private Manifest(File dir, Map<String, Object> m, String where) {
        directory = dir;
        raw = m;
        Object version = m.get("format_version");
        if (!(version instanceof Long) || (Long) version != FORMAT_VERSION) {
            throw new BundleException(where + " has format_version " + Json.write(version) + "; this app reads "
                    + FORMAT_VERSION + ". Re-export the bundle with the dcclip-mobile this app was built with.");
        }
        List<String> missing = new ArrayList<>();
        for (String k : REQUIRED_KEYS) if (!m.containsKey(k)) missing.add(k);
        if (!missing.isEmpty()) throw new BundleException(where + " lacks " + String.join(", ", missing));

        target = Json.str(m.get("target"), where + " target");
        embedDim = (int) Json.integer(m.get("embed_dim"), where + " embed_dim");
        logitScale = (float) Json.num(m.get("logit_scale"), where + " logit_scale");
        if (!(logitScale > 0) || Float.isInfinite(logitScale)) {
            throw new BundleException(where + " logit_scale is " + logitScale + "; it must be a positive number");
        }

        Map<String, Object> image = Json.obj(m.get("image"), where + " image");
        Map<String, Object> pre = Json.obj(Json.get(image, "preprocess", where + " image"), where + " image.preprocess");
        String w = where + " image.preprocess";
        expect(pre, "resize", ImagePreprocessor.RESIZE_RULE, w);
        expect(pre, "channel_order", "RGB", w);
        expect(pre, "layout", "NCHW", w);
        expect(pre, "dtype", "float32", w);
        expect(pre, "scale", "pixel/255", w);
        imageSize = (int) Json.integer(Json.get(pre, "size", w), w + " size");
        mean = doubles(Json.get(pre, "mean", w), w + " mean");
        std = doubles(Json.get(pre, "std", w), w + " std");

        Map<String, Object> text = Json.obj(m.get("text"), where + " text");
        w = where + " text";
        contextLength = (int) Json.integer(Json.get(text, "context_length", w), w + " context_length");
        vocabSize = (int) Json.integer(Json.get(text, "vocab_size", w), w + " vocab_size");
        Map<String, Object> sp = Json.obj(Json.get(text, "special_ids", w), w + " special_ids");
        padId = (int) Json.integer(Json.get(sp, "pad", w), w + " pad");
        unkId = (int) Json.integer(Json.get(sp, "unk", w), w + " unk");
        bosId = (int) Json.integer(Json.get(sp, "bos", w), w + " bos");
        eosId = (int) Json.integer(Json.get(sp, "eos", w), w + " eos");
        Map<String, Object> tok = Json.obj(Json.get(text, "tokenizer", w), w + " tokenizer");
        tokenizerJson = Json.str(Json.get(tok, "json", w + " tokenizer"), w + " tokenizer.json");

        golden = Json.str(m.get("golden"), where + " golden");
        Object ce = m.get("class_embeddings");
        classEmbeddingsFile = ce == null ? null : Json.str(Json.get(Json.obj(ce, where + " class_embeddings"), "file",
                where + " class_embeddings"), where + " class_embeddings.file");

        List<Object> arts = Json.arr(m.get("artifacts"), where + " artifacts");
        for (int k = 0; k < arts.size(); k++) {
            artifacts.add(new Artifact(Json.obj(arts.get(k), where + " artifacts[" + k + "]"), where + " artifacts[" + k + "]"));
        }
        Map<String, Object> table = Json.obj(m.get("files"), where + " files");
        Map<String, Map<String, Object>> ft = new TreeMap<>();
        for (Map.Entry<String, Object> e : table.entrySet()) {
            String rel = e.getKey();
            if (rel.startsWith("/") || rel.contains("\\") || ("/" + rel + "/").contains("/../")) {
                throw new BundleException(where + " lists the file \"" + rel + "\", which is outside the bundle");
            }
            Map<String, Object> entry = Json.obj(e.getValue(), where + " files[" + rel + "]");
            Json.str(Json.get(entry, "sha256", where + " files[" + rel + "]"), "sha256");
            Json.integer(Json.get(entry, "size_bytes", where + " files[" + rel + "]"), "size_bytes");
            ft.put(rel, entry);
        }
        files = ft;
    }

    private static void expect(Map<String, Object> m, String key, String want, String where) {
        Object got = Json.get(m, key, where);
        if (!want.equals(got)) {
            throw new BundleException(where + " " + key + " is " + Json.write(got) + "; this app implements \"" + want + "\"");
        }
    }

    private static double[] doubles(Object o, String where) {
        List<Object> a = Json.arr(o, where);
        if (a.size() != 3) throw new BundleException(where + " needs 3 values (R, G, B), got " + a.size());
        double[] out = new double[3];
        for (int k = 0; k < 3; k++) out[k] = Json.num(a.get(k), where + "[" + k + "]");
        return out;
    }

    public ImagePreprocessor preprocessor() {
        return new ImagePreprocessor(imageSize, mean, std);
    }

    /** The artifact the app loads for a tower ("image" or "text"): the one marked default. */
    public Artifact defaultArtifact(String tower) {
        for (Artifact a : artifacts) if (a.isDefault && a.tower.equals(tower)) return a;
        throw new BundleException("the manifest in " + directory + " marks no default " + tower + " artifact");
    }

    public Artifact find(String tower, String backend, String precision) {
        for (Artifact a : artifacts) {
            if (a.tower.equals(tower) && (backend == null || a.backend.equals(backend))
                    && (precision == null || a.precision.equals(precision))) return a;
        }
        throw new BundleException("no " + tower + " artifact with backend " + backend + " and precision " + precision
                + " in " + directory);
    }

    public File file(String rel) {
        return new File(directory, rel);
    }

    // ------------------------------------------------------------------------------ verification
    /** Problems between the files on disk and the manifest's table (empty when none), as the Python side lists them. */
    public List<String> verifyFiles() {
        Map<String, File> onDisk = new TreeMap<>();
        listFiles(directory, "", onDisk);
        List<String> problems = new ArrayList<>();
        for (String rel : files.keySet()) {
            if (!onDisk.containsKey(rel)) problems.add(rel + ": listed in the manifest but missing");
        }
        for (String rel : onDisk.keySet()) {
            if (!files.containsKey(rel)) problems.add(rel + ": in the bundle but not in the manifest");
        }
        for (Map.Entry<String, Map<String, Object>> e : files.entrySet()) {
            File f = onDisk.get(e.getKey());
            if (f == null) continue;
            long want = (Long) e.getValue().get("size_bytes");
            if (f.length() != want) {
                problems.add(e.getKey() + ": " + f.length() + " bytes, the manifest says " + want);
            } else if (!sha256(f).equals(e.getValue().get("sha256"))) {
                problems.add(e.getKey() + ": sha256 differs from the manifest (the file was changed or corrupted)");
            }
        }
        for (Artifact a : artifacts) {
            boolean listed = files.containsKey(a.file);
            for (String rel : files.keySet()) listed |= rel.startsWith(a.file + "/");
            if (!listed) problems.add("artifact " + a.file + ": not in the manifest's file table");
        }
        return problems;
    }

    private static void listFiles(File dir, String prefix, Map<String, File> out) {
        File[] children = dir.listFiles();
        if (children == null) return;
        for (File c : children) {
            String rel = prefix + c.getName();
            if (c.isDirectory()) listFiles(c, rel + "/", out);
            else if (c.isFile() && !rel.equals(FILE)) out.put(rel, c);
        }
    }

    public static String sha256(File f) {
        try (InputStream in = Files.newInputStream(f.toPath())) {
            MessageDigest md = MessageDigest.getInstance("SHA-256");
            byte[] buf = new byte[1 << 16];
            for (int n; (n = in.read(buf)) > 0; ) md.update(buf, 0, n);
            return hex(md.digest());
        } catch (IOException e) {
            throw new BundleException("cannot read " + f + ": " + e.getMessage(), e);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    public static String hex(byte[] digest) {
        StringBuilder b = new StringBuilder();
        for (byte x : digest) b.append(String.format("%02x", x & 0xFF));
        return b.toString();
    }
}
