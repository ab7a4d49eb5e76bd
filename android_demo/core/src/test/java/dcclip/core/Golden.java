package dcclip.core;

import java.awt.image.BufferedImage;
import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.security.MessageDigest;
import java.util.List;
import java.util.Map;
import javax.imageio.ImageIO;

/**
 * Where the tests' vectors are: the directory lowering/golden.py wrote (system property
 * dcclip.golden, default build/golden): cases.json, the images, and bundle_path.txt naming the exported
 * bundle whose golden.json and files the tests read.
 */
final class Golden {
    private static Map<String, Object> cases;

    private Golden() {}

    static File dir() {
        File d = new File(System.getProperty("dcclip.golden", "build/golden"));
        if (!new File(d, "cases.json").isFile()) {
            throw new IllegalStateException("no golden vectors in " + d.getAbsolutePath() + "; run "
                    + "`python3 -m lowering.golden` (run_jvm_tests.sh does) or set -Ddcclip.golden");
        }
        return d;
    }

    static File bundle() {
        try {
            String p = new String(Files.readAllBytes(new File(dir(), "bundle_path.txt").toPath()), StandardCharsets.UTF_8).trim();
            return new File(p);
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    static synchronized Map<String, Object> cases() {
        if (cases == null) cases = Json.obj(Bundle.parseFile(new File(dir(), "cases.json")), "cases.json");
        return cases;
    }

    static List<Object> list(String key) {
        return Json.arr(cases().get(key), key);
    }

    static Map<String, Object> golden() {
        return Json.obj(Bundle.parseFile(new File(bundle(), "golden.json")), "golden.json");
    }

    /** A PNG as ARGB pixels, as Android's Bitmap.getPixels gives them. */
    static int[] readArgb(File png, int[] sizeOut) throws IOException {
        BufferedImage img = ImageIO.read(png);
        if (img == null) throw new IOException("cannot decode " + png);
        int w = img.getWidth(), h = img.getHeight();
        sizeOut[0] = w;
        sizeOut[1] = h;
        return img.getRGB(0, 0, w, h, null, 0, w);
    }

    static String sha256LittleEndian(float[] x) throws Exception {
        byte[] b = new byte[x.length * 4];
        for (int k = 0; k < x.length; k++) {
            int bits = Float.floatToRawIntBits(x[k]);
            b[4 * k] = (byte) bits;
            b[4 * k + 1] = (byte) (bits >> 8);
            b[4 * k + 2] = (byte) (bits >> 16);
            b[4 * k + 3] = (byte) (bits >> 24);
        }
        return Manifest.hex(MessageDigest.getInstance("SHA-256").digest(b));
    }

    static long[] longs(Object o) {
        List<Object> a = Json.arr(o, "array");
        long[] out = new long[a.size()];
        for (int k = 0; k < out.length; k++) out[k] = (Long) a.get(k);
        return out;
    }
}
