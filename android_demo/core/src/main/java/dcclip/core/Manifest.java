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
 * unlisted, no symbolic link. The app trusts nothing the manifest does not state.
 *
 * <p>The path rule (the same in dcclip_mobile/bundle_manifest.py and the Swift core): every path the manifest
 * or golden.json names (text.tokenizer.json/model, class_embeddings.file, golden, golden.json's images[].file,
 * each artifact's file) must be a relative path whose "/"-separated segments are neither empty, "." nor ".."
 * (no leading "/", no "\\", no NUL), must be listed in the file table with its sha256 (an .mlpackage directory:
 * the files under it), and must not resolve outside the bundle. {@link #file(String, String)} checks it before
 * anything is opened; error messages name the manifest's value, never a file's contents.
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
        /** Text artifacts: the lengths the .pte runs (one, the context length, unless it has buckets). */
        public final LengthBuckets lengthBuckets;

        Artifact(Map<String, Object> a, String where, int contextLength) {
            raw = a;
            tower = Json.str(Json.get(a, "tower", where), where + " tower");
            backend = Json.str(Json.get(a, "backend", where), where + " backend");
            format = Json.str(Json.get(a, "format", where), where + " format");
            precision = Json.str(Json.get(a, "precision", where), where + " precision");
            file = Json.str(Json.get(a, "file", where), where + " file");
            sizeBytes = Json.integer(Json.get(a, "size_bytes", where), where + " size_bytes");
            isDefault = Boolean.TRUE.equals(a.get("default"));
            lengthBuckets = LengthBuckets.of(a, contextLength, where);
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
    public final String tokenizerModel; // null when the manifest names none
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
        tokenizerModel = tok.containsKey("model") ? Json.str(tok.get("model"), w + " tokenizer.model") : null;

        golden = Json.str(m.get("golden"), where + " golden");
        Object ce = m.get("class_embeddings");
        classEmbeddingsFile = ce == null ? null : Json.str(Json.get(Json.obj(ce, where + " class_embeddings"), "file",
                where + " class_embeddings"), where + " class_embeddings.file");

        List<Object> arts = Json.arr(m.get("artifacts"), where + " artifacts");
        for (int k = 0; k < arts.size(); k++) {
            artifacts.add(new Artifact(Json.obj(arts.get(k), where + " artifacts[" + k + "]"), where + " artifacts[" + k + "]",
                    contextLength));
        }
        Map<String, Object> table = Json.obj(m.get("files"), where + " files");
        Map<String, Map<String, Object>> ft = new TreeMap<>();
        for (Map.Entry<String, Object> e : table.entrySet()) {
            String rel = e.getKey();
            if (!isRelativeInside(rel)) {
                throw new BundleException(where + " lists the file " + show(rel) + ", which is outside the bundle");
            }
            String ew = where + " files[" + show(rel) + "]";
            Map<String, Object> entry = Json.obj(e.getValue(), ew);
            String sha = Json.str(Json.get(entry, "sha256", ew), ew + " sha256");
            if (!sha.matches("[0-9a-f]{64}")) {
                throw new BundleException(ew + " sha256 must be 64 lowercase hex digits; re-export the bundle");
            }
            if (Json.integer(Json.get(entry, "size_bytes", ew), ew + " size_bytes") < 0) {
                throw new BundleException(ew + " size_bytes is negative; re-export the bundle");
            }
            ft.put(rel, entry);
        }
        files = ft;
        // the path rule, for every path the manifest names, before anything is opened
        checkNamed(tokenizerJson, where + " text.tokenizer.json", false);
        if (tokenizerModel != null) checkNamed(tokenizerModel, where + " text.tokenizer.model", false);
        if (classEmbeddingsFile != null) checkNamed(classEmbeddingsFile, where + " class_embeddings.file", false);
        checkNamed(golden, where + " golden", false);
        for (int k = 0; k < artifacts.size(); k++) {
            checkNamed(artifacts.get(k).file, where + " artifacts[" + k + "].file", true);
        }
    }

    // ------------------------------------------------------------------------------ the path rule
    /** A relative path inside the bundle: "/"-separated segments, none empty, "." or "..", no "\\" or NUL. */
    public static boolean isRelativeInside(String rel) {
        if (rel == null || rel.isEmpty() || rel.startsWith("/") || rel.indexOf('\\') >= 0 || rel.indexOf('\0') >= 0) {
            return false;
        }
        for (String seg : rel.split("/", -1)) {
            if (seg.isEmpty() || seg.equals(".") || seg.equals("..")) return false;
        }
        return true;
    }

    /** A manifest value for a message: quoted, cut short. */
    static String show(String value) {
        String q = Json.write(value);
        return q.length() <= 120 ? q : q.substring(0, 120) + "...\"";
    }

    private boolean listed(String rel, boolean directoryOk) {
        if (files.containsKey(rel)) return true;
        if (directoryOk) {
            for (String k : files.keySet()) if (k.startsWith(rel + "/")) return true;
        }
        return false;
    }

    private void checkNamed(String rel, String what, boolean directoryOk) {
        if (!isRelativeInside(rel)) {
            throw new BundleException(what + " is " + show(rel) + ", which is not a relative path inside the bundle; "
                    + "refusing to open it. A bundle names its files as plain relative paths (e.g. \"golden/0.png\")");
        }
        if (!listed(rel, directoryOk)) {
            throw new BundleException(what + " is " + show(rel) + ", which the manifest's file table does not list "
                    + "with a sha256; refusing to open it. Re-export the bundle with `python -m lowering.export`");
        }
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

    /**
     * The one way to a file the manifest or golden.json names (what: where the path came from, for messages):
     * relative, inside the bundle, listed in the file table with its sha256 and, resolved (symbolic links
     * followed), still inside the bundle. A BundleException otherwise, before anything is opened.
     */
    public File file(String rel, String what) {
        return resolve(rel, what, false);
    }

    /** {@link #file(String, String)} for a path from no particular field. */
    public File file(String rel) {
        return resolve(rel, "the path", false);
    }

    /** An artifact's file (an .mlpackage is a directory: the files under it are listed), by the path rule. */
    public File artifactFile(Artifact a) {
        return resolve(a.file, "artifact " + show(a.file), true);
    }

    private File resolve(String rel, String what, boolean directoryOk) {
        checkNamed(rel, what, directoryOk);
        File f = new File(directory, rel);
        try {
            java.nio.file.Path root = directory.getCanonicalFile().toPath();
            java.nio.file.Path real = f.getCanonicalFile().toPath();
            if (!real.startsWith(root) || real.equals(root)) {
                throw new BundleException(what + " is " + show(rel) + ", which resolves outside the bundle (a "
                        + "symbolic link); refusing to open it");
            }
        } catch (IOException e) {
            throw new BundleException("cannot resolve " + what + " " + show(rel) + " in " + directory + ": "
                    + e.getMessage(), e);
        }
        return f;
    }

    // ------------------------------------------------------------------------------ verification
    /** Problems between the files on disk and the manifest's table (empty when none), as the Python side lists them. */
    public List<String> verifyFiles() {
        Map<String, File> onDisk = new TreeMap<>();
        List<String> links = new ArrayList<>();
        listFiles(directory, "", onDisk, links);
        List<String> problems = new ArrayList<>();
        for (String rel : links) problems.add(rel + ": a symbolic link; a bundle holds regular files only");
        for (String rel : files.keySet()) {
            if (!onDisk.containsKey(rel)) problems.add(rel + ": listed in the manifest but missing");
        }
        for (String rel : onDisk.keySet()) {
            if (!files.containsKey(rel)) problems.add(rel + ": in the bundle but not in the manifest");
        }
        for (Map.Entry<String, Map<String, Object>> e : files.entrySet()) {
            File f = onDisk.get(e.getKey());
            if (f == null || links.contains(e.getKey())) continue; // a link is never followed, never read
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

    private static void listFiles(File dir, String prefix, Map<String, File> out, List<String> links) {
        File[] children = dir.listFiles();
        if (children == null) return;
        for (File c : children) {
            String rel = prefix + c.getName();
            if (rel.equals(FILE)) continue;
            if (Files.isSymbolicLink(c.toPath())) {
                links.add(rel); // neither followed nor hashed: it could point anywhere
                out.put(rel, c);
            } else if (c.isDirectory()) {
                listFiles(c, rel + "/", out, links);
            } else if (c.isFile()) {
                out.put(rel, c);
            }
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
