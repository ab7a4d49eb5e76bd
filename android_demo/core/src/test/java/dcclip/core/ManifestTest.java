package dcclip.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Comparator;
import java.util.stream.Stream;
import org.junit.After;
import org.junit.Before;
import org.junit.Test;

/** The manifest reader on the real exported bundle, and on copies of it made bad in one way each. */
public class ManifestTest {
    private Path copy;

    @Before
    public void copyBundle() throws IOException {
        copy = Files.createTempDirectory("dcclip-bundle");
        Path src = Golden.bundle().toPath();
        try (Stream<Path> s = Files.walk(src)) {
            for (Path p : (Iterable<Path>) s::iterator) {
                Path to = copy.resolve(src.relativize(p).toString());
                if (Files.isDirectory(p)) Files.createDirectories(to);
                else Files.copy(p, to, StandardCopyOption.REPLACE_EXISTING);
            }
        }
    }

    @After
    public void removeCopy() throws IOException {
        try (Stream<Path> s = Files.walk(copy)) {
            s.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        }
    }

    private static String refusal(File dir) {
        try {
            Bundle.open(dir);
        } catch (BundleException e) {
            return e.getMessage();
        }
        fail("the bundle in " + dir + " was accepted");
        return null;
    }

    private void editManifest(String from, String to) throws IOException {
        editManifestMatching(java.util.regex.Pattern.quote(from), java.util.regex.Matcher.quoteReplacement(to));
    }

    /** The first match of regex in the copy's manifest replaced (replacement may use its groups); fails on none. */
    private void editManifestMatching(String regex, String replacement) throws IOException {
        Path m = copy.resolve("manifest.json");
        String text = new String(Files.readAllBytes(m), StandardCharsets.UTF_8);
        java.util.regex.Matcher match = java.util.regex.Pattern.compile(regex).matcher(text);
        assertTrue("manifest matches " + regex, match.find());
        Files.write(m, match.replaceFirst(replacement).getBytes(StandardCharsets.UTF_8));
    }

    @Test
    public void theExportedBundleOpens() {
        Bundle b = Bundle.open(Golden.bundle());
        Manifest m = b.manifest;
        assertEquals("android", m.target);
        assertTrue(m.logitScale > 0);
        assertEquals(m.contextLength, b.tokenizer.contextLength);
        assertEquals("image", m.defaultArtifact("image").tower);
        assertEquals("text", m.defaultArtifact("text").tower);
        assertEquals("xnnpack", m.defaultArtifact("image").backend);
        assertNotNull(b.classes);
        assertEquals(b.classes.labelsEn.size(), b.classes.embeddingsZh.length);
        assertTrue(m.verifyFiles().isEmpty());
    }

    @Test
    public void refusesAFileWhoseSha256DiffersFromTheManifest() throws IOException {
        // same size, one byte changed: only the hash can tell
        try (RandomAccessFile f = new RandomAccessFile(copy.resolve("tokenizer.json").toFile(), "rw")) {
            f.seek(5);
            int b = f.read();
            f.seek(5);
            f.write(b ^ 1);
        }
        String msg = refusal(copy.toFile());
        assertTrue(msg, msg.contains("tokenizer.json: sha256 differs from the manifest"));
        assertTrue(msg, msg.contains("refusing to load"));
    }

    @Test
    public void refusesATruncatedEncoder() throws IOException {
        String pte = Manifest.read(copy.toFile()).defaultArtifact("image").file;
        try (RandomAccessFile f = new RandomAccessFile(copy.resolve(pte).toFile(), "rw")) {
            f.setLength(f.length() - 1);
        }
        String msg = refusal(copy.toFile());
        assertTrue(msg, msg.contains(pte + ": ") && msg.contains("bytes, the manifest says"));
    }

    @Test
    public void refusesMissingAndUnlistedFiles() throws IOException {
        Files.delete(copy.resolve("golden.json"));
        Files.write(copy.resolve("extra.bin"), new byte[] {1});
        String msg = refusal(copy.toFile());
        assertTrue(msg, msg.contains("golden.json: listed in the manifest but missing"));
        assertTrue(msg, msg.contains("extra.bin: in the bundle but not in the manifest"));
    }

    @Test
    public void refusesALengthBucketMethodOutsideTheRule() throws IOException {
        editManifest("\"method\": \"forward\"", "\"method\": \"../forward\"");
        String msg = refusal(copy.toFile());
        assertTrue(msg, msg.contains("length_buckets must be a list of"));
    }

    @Test
    public void refusesAnUnknownFormatVersion() throws IOException {
        editManifest("\"format_version\": 1", "\"format_version\": 2");
        String msg = refusal(copy.toFile());
        assertTrue(msg, msg.contains("format_version 2; this app reads 1"));
    }

    @Test
    public void refusesAPreprocessingItDoesNotImplement() throws IOException {
        editManifest("\"shorter_side_bicubic_then_center_crop\"", "\"squash\"");
        String msg = refusal(copy.toFile());
        assertTrue(msg, msg.contains("resize is \"squash\""));
    }

    @Test
    public void refusesAManifestMissingAKey() throws IOException {
        editManifest("\"logit_scale\":", "\"logit_scale_renamed\":");
        String msg = refusal(copy.toFile());
        assertTrue(msg, msg.contains("lacks logit_scale"));
    }

    @Test
    public void refusesAMissingOrBrokenManifest() throws IOException {
        Files.write(copy.resolve("manifest.json"), "{\"format_version\": 1,".getBytes(StandardCharsets.UTF_8));
        assertTrue(refusal(copy.toFile()).contains("is not valid JSON"));
        Files.delete(copy.resolve("manifest.json"));
        assertTrue(refusal(copy.toFile()).contains("does not exist"));
    }

    /** With lowering.golden --ios: an iOS bundle (Core ML packages are directories) reads and verifies too. */
    @Test
    public void anIosBundleVerifiesFileByFileInsidePackages() throws IOException {
        File pointer = new File(Golden.dir(), "bundle_path_ios.txt");
        org.junit.Assume.assumeTrue("no iOS bundle (python -m lowering.golden --ios)", pointer.isFile());
        File ios = new File(new String(Files.readAllBytes(pointer.toPath()), StandardCharsets.UTF_8).trim());
        Manifest m = Manifest.load(ios);
        assertEquals("ios", m.target);
        assertEquals("mlpackage", m.defaultArtifact("text").format);
        assertEquals("int32", Json.obj(Json.arr(m.defaultArtifact("text").raw.get("inputs"), "in").get(0), "i").get("dtype"));
        String inside = null;
        for (String rel : m.files.keySet()) if (rel.startsWith(m.defaultArtifact("image").file + "/")) inside = rel;
        assertNotNull("the manifest lists the files inside the .mlpackage", inside);
        Path dir = Files.createTempDirectory("dcclip-ios");
        try {
            try (Stream<Path> s = Files.walk(ios.toPath())) {
                for (Path p : (Iterable<Path>) s::iterator) {
                    Path to = dir.resolve(ios.toPath().relativize(p).toString());
                    if (Files.isDirectory(p)) Files.createDirectories(to);
                    else Files.copy(p, to, StandardCopyOption.REPLACE_EXISTING);
                }
            }
            Files.write(dir.resolve(inside), new byte[] {1, 2, 3});
            String msg = refusal(dir.toFile());
            assertTrue(msg, msg.contains(inside + ": "));
        } finally {
            try (Stream<Path> s = Files.walk(dir)) {
                s.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
            }
        }
    }

    @Test
    public void refusesATokenizerFromAnotherBundle() throws IOException {
        editManifest("\"context_length\": ", "\"context_length\": 1");
        // the text .pte's context bucket (the one whose method is "forward") follows, as a re-export would
        editManifestMatching("\"length\": (\\d+),(\\s*)\"method\": \"forward\"",
                "\"length\": 1$1,$2\"method\": \"forward\"");
        String msg = refusal(copy.toFile());
        assertTrue(msg, msg.contains("do not belong together"));
    }
}
