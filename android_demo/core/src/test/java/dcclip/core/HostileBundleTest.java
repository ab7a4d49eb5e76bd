package dcclip.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.After;
import org.junit.Before;
import org.junit.Test;

/**
 * The path rule against crafted manifests: every path the manifest or golden.json names must be relative,
 * inside the bundle and listed in the file table with its sha256, checked before anything is opened; no
 * error message echoes a file's contents. Each case is a copy of the exported bundle with one path made
 * hostile, and an "outside" file holding a secret beside the copy.
 */
public class HostileBundleTest {
    static final String SECRET = "SECRET-OUTSIDE-THE-BUNDLE";
    private Path root, copy, outside;

    @Before
    public void copyBundle() throws IOException {
        root = Files.createTempDirectory("dcclip-hostile");
        copy = root.resolve("bundles").resolve("android");
        Files.createDirectories(copy);
        Path src = Golden.bundle().toPath();
        try (Stream<Path> s = Files.walk(src)) {
            for (Path p : (Iterable<Path>) s::iterator) {
                Path to = copy.resolve(src.relativize(p).toString());
                if (Files.isDirectory(p)) Files.createDirectories(to);
                else Files.copy(p, to, StandardCopyOption.REPLACE_EXISTING);
            }
        }
        // an outside file that parses as nothing the app knows and holds a secret
        outside = root.resolve("outside");
        Files.write(outside, ("{\"" + SECRET + "\": [1, 2, oops " + SECRET + "]}").getBytes(StandardCharsets.UTF_8));
    }

    @After
    public void removeCopy() throws IOException {
        try (Stream<Path> s = Files.walk(root)) {
            s.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        }
    }

    private Map<String, Object> manifest() {
        return Json.obj(Bundle.parseFile(copy.resolve(Manifest.FILE).toFile()), "manifest");
    }

    private void write(Map<String, Object> m) throws IOException {
        Files.write(copy.resolve(Manifest.FILE), Json.writePretty(m).getBytes(StandardCharsets.UTF_8));
    }

    private static Map<String, Object> obj(Map<String, Object> m, String key) {
        return Json.obj(m.get(key), key);
    }

    /** Bundle.open refuses; the message says why and never contains the outside file's secret. */
    private String refusal(String... mustContain) {
        String msg = null;
        try {
            Bundle.open(copy.toFile());
        } catch (BundleException e) {
            msg = e.getMessage();
        }
        if (msg == null) fail("the crafted bundle was accepted");
        assertFalse("the message echoes the outside file: " + msg, msg.contains(SECRET));
        for (String s : mustContain) assertTrue(msg, msg.contains(s));
        return msg;
    }

    @Test
    public void refusesATokenizerPathWithDotDot() throws IOException {
        Map<String, Object> m = manifest();
        obj(obj(m, "text"), "tokenizer").put("json", "../../outside");
        write(m);
        refusal("text.tokenizer.json", "\"../../outside\"", "not a relative path inside the bundle");
    }

    @Test
    public void refusesAnAbsoluteClassEmbeddingsPath() throws IOException {
        Map<String, Object> m = manifest();
        obj(m, "class_embeddings").put("file", outside.toString());
        write(m);
        refusal("class_embeddings.file", "not a relative path inside the bundle");
        obj(m, "class_embeddings").put("file", "/etc/passwd");
        write(m);
        refusal("class_embeddings.file", "\"/etc/passwd\"");
    }

    @Test
    public void refusesAGoldenPathOutsideOrUnlisted() throws IOException {
        Map<String, Object> m = manifest();
        m.put("golden", "../../outside");
        write(m);
        refusal("golden", "not a relative path inside the bundle");
        // inside the bundle but not in the file table: no sha256 covers it
        Files.write(copy.resolve("unlisted.json"), ("{\"" + SECRET + "\": 1}").getBytes(StandardCharsets.UTF_8));
        m.put("golden", "unlisted.json");
        write(m);
        refusal("golden", "\"unlisted.json\"", "does not list with a sha256");
    }

    @Test
    public void refusesArtifactPathsOutsideTheBundle() throws IOException {
        for (String bad : new String[] {"../outside", "/etc/passwd", "./image.pte", "a//b.pte", "a\\..\\b.pte", ""}) {
            Map<String, Object> m = manifest();
            Json.obj(Json.arr(m.get("artifacts"), "artifacts").get(0), "artifact").put("file", bad);
            write(m);
            refusal("artifacts[0].file", "refusing to open it");
        }
    }

    @Test
    public void refusesOddSpellingsOfTheSamePaths() throws IOException {
        String[] bad = {"golden/../golden.json", "./golden.json", "golden.json/", "/golden.json", "golden\\0.png"};
        for (String b : bad) {
            Map<String, Object> m = manifest();
            m.put("golden", b);
            write(m);
            refusal("golden", "not a relative path inside the bundle");
        }
        assertFalse(Manifest.isRelativeInside("a/\0b"));
        assertTrue(Manifest.isRelativeInside("golden/0.png"));
        assertTrue(Manifest.isRelativeInside("x.mlpackage/Data/com.apple.CoreML/model.mlmodel"));
    }

    @Test
    public void refusesAFileTableKeyOutsideTheBundle() throws IOException {
        Map<String, Object> m = manifest();
        Map<String, Object> files = obj(m, "files");
        files.put("../outside", files.get("golden.json"));
        write(m);
        refusal("\"../outside\"", "outside the bundle");
    }

    @Test
    public void refusesAMalformedFileTableEntry() throws IOException {
        Map<String, Object> m = manifest();
        obj(obj(m, "files"), "golden.json").put("sha256", "not-a-digest");
        write(m);
        refusal("files[\"golden.json\"] sha256 must be 64 lowercase hex digits");
        m = manifest();
        obj(m, "files").put("golden.json", "abc");
        write(m);
        refusal("files[\"golden.json\"] must be a JSON object");
    }

    @Test
    public void refusesAnArtifactWithoutAFile() throws IOException {
        Map<String, Object> m = manifest();
        Json.obj(Json.arr(m.get("artifacts"), "artifacts").get(0), "artifact").remove("file");
        write(m);
        refusal("artifacts[0]", "lacks \"file\"");
    }

    /** A tokenizer.json replaced by a symbolic link to a file with the very same bytes: the sha256 matches, the
     * link is refused all the same (a link could point anywhere, and change after the check). */
    @Test
    public void refusesASymbolicLinkEvenWithTheRightContent() throws IOException {
        Path tok = copy.resolve("tokenizer.json");
        Path real = root.resolve("tokenizer-outside.json");
        Files.move(tok, real);
        Files.createSymbolicLink(tok, real);
        refusal("tokenizer.json: a symbolic link; a bundle holds regular files only");
        Manifest m = Manifest.read(copy.toFile());
        try {
            m.file("tokenizer.json", "manifest text.tokenizer.json");
            fail("a link out of the bundle was resolved");
        } catch (BundleException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("resolves outside the bundle"));
        }
    }

    /** golden.json's images[].file, in a golden.json whose new sha256 the crafted manifest lists: refused
     * before the decoder is called, which never sees the outside path. */
    @Test
    public void refusesAGoldenImageOutsideTheBundleBeforeDecodingIt() throws Exception {
        Path goldenJson = copy.resolve("golden.json");
        Map<String, Object> g = Json.obj(Bundle.parseFile(goldenJson.toFile()), "golden");
        Json.obj(Json.arr(g.get("images"), "images").get(0), "image").put("file", "../../outside");
        Files.write(goldenJson, Json.writePretty(g).getBytes(StandardCharsets.UTF_8));
        Map<String, Object> m = manifest();
        Map<String, Object> entry = obj(obj(m, "files"), "golden.json");
        entry.put("sha256", Manifest.sha256(goldenJson.toFile()));
        entry.put("size_bytes", Files.size(goldenJson));
        write(m);
        Bundle b = Bundle.open(copy.toFile()); // the manifest is consistent: golden.json is what it lists
        List<File> decoded = new ArrayList<>();
        Classifier.Encoders enc = new Classifier.Encoders() {
            public float[] encodeImage(float[] px) {
                return new float[b.manifest.embedDim];
            }

            public float[] encodeText(Tokenizer.Encoding e) {
                return new float[b.manifest.embedDim];
            }
        };
        try {
            Classifier.goldenParity(b, enc, f -> {
                decoded.add(f);
                throw new AssertionError("decoded " + f);
            });
            fail("a golden image outside the bundle was accepted");
        } catch (BundleException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("golden.json images[0].file"));
            assertTrue(e.getMessage(), e.getMessage().contains("not a relative path inside the bundle"));
        }
        assertEquals(0, decoded.size());
    }

    /** JSON errors say where, never what: the text of a broken file is not in the message. */
    @Test
    public void jsonErrorsDoNotEchoTheFile() throws IOException {
        Path bad = root.resolve("bad.json");
        Files.write(bad, ("{\"a\": 1, " + SECRET + "}").getBytes(StandardCharsets.UTF_8));
        try {
            Bundle.parseFile(bad.toFile());
            fail("parsed");
        } catch (BundleException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("invalid JSON at character"));
            assertFalse(e.getMessage(), e.getMessage().contains(SECRET));
        }
    }

    @Test
    public void theUntouchedCopyStillOpens() {
        Bundle b = Bundle.open(copy.toFile());
        assertTrue(b.manifest.artifactFile(b.manifest.defaultArtifact("image")).isFile());
    }
}
