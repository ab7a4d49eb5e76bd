package dcclip.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.io.File;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/**
 * The Java preprocessing against dcclip_mobile.data.preprocess: the float32 tensor's sha256 must be equal
 * (Pillow's bicubic resampler is reproduced exactly); sum and first values are checked too, with a tolerance,
 * so that a failure says how far off it is.
 */
public class PreprocessTest {
    private static ImagePreprocessor preprocessor() {
        return Manifest.read(Golden.bundle()).preprocessor();
    }

    private static void check(File png, Map<String, Object> want, String what) throws Exception {
        int[] wh = new int[2];
        int[] argb = Golden.readArgb(png, wh);
        float[] x = preprocessor().preprocessArgb(argb, wh[0], wh[1]);
        List<Object> shape = Json.arr(want.get("shape"), "shape");
        long n = 1;
        for (Object d : shape) n *= (Long) d;
        assertEquals(what + " element count", n, x.length);
        double sum = 0;
        for (float v : x) sum += v;
        double wantSum = Json.num(want.get("sum"), "sum");
        assertEquals(what + " sum", wantSum, sum, 1e-3 + 1e-5 * Math.abs(wantSum));
        float[] first = Json.floats(want.get("first"), "first");
        for (int k = 0; k < first.length; k++) assertEquals(what + " value " + k, first[k], x[k], 1e-6f);
        assertEquals(what + ": float32 tensor sha256 (bit-exact with Python)", want.get("sha256"), Golden.sha256LittleEndian(x));
    }

    @Test
    public void goldenJsonImagesBitExact() throws Exception {
        List<Object> images = Json.arr(Golden.golden().get("images"), "images");
        assertTrue(images.size() >= 1);
        for (Object o : images) {
            Map<String, Object> img = Json.obj(o, "image");
            String rel = (String) img.get("file");
            check(new File(Golden.bundle(), rel), Json.obj(img.get("preprocessed"), "preprocessed"), rel);
        }
    }

    @Test
    public void syntheticImagesOfManySizesBitExact() throws Exception {
        List<Object> cases = Golden.list("preprocess");
        assertTrue(cases.size() >= 8);
        for (Object o : cases) {
            Map<String, Object> c = Json.obj(o, "case");
            String rel = (String) c.get("file");
            check(new File(Golden.dir(), rel), Json.obj(c.get("preprocessed"), "preprocessed"), rel);
        }
    }

    @Test
    public void alphaIsCompositedOnWhiteAsPillowDoes() {
        Map<String, Object> a = Json.obj(Golden.cases().get("alpha"), "alpha");
        int[] rgba = Json.ints(a.get("rgba"), "rgba");
        int[] rgb = Json.ints(a.get("rgb"), "rgb");
        int n = rgba.length / 4;
        int[] argb = new int[n];
        for (int k = 0; k < n; k++) {
            argb[k] = rgba[4 * k + 3] << 24 | rgba[4 * k] << 16 | rgba[4 * k + 1] << 8 | rgba[4 * k + 2];
        }
        ImagePreprocessor.Rgb out = ImagePreprocessor.fromArgb(argb, n, 1);
        for (int k = 0; k < 3 * n; k++) {
            assertEquals("channel value " + k + " (alpha " + rgba[4 * (k / 3) + 3] + ")", rgb[k], out.data[k] & 0xFF);
        }
    }

    @Test
    public void normalizationAloneIsExactFloat32() {
        ImagePreprocessor p = new ImagePreprocessor(2, new double[] {0.48145466, 0.4578275, 0.40821073},
                new double[] {0.26862954, 0.26130258, 0.27577711});
        byte[] px = {0, (byte) 128, (byte) 255, 1, 2, 3, 10, 20, 30, (byte) 200, (byte) 100, 50};
        float[] x = p.normalize(new ImagePreprocessor.Rgb(2, 2, px));
        // CHW: channel 0 of pixel 0 first, then channel 0 of pixel 1
        assertEquals((0f / 255f - 0.48145466f) / 0.26862954f, x[0], 0f);
        assertEquals((1f / 255f - 0.48145466f) / 0.26862954f, x[1], 0f);
        assertEquals((255f / 255f - 0.40821073f) / 0.27577711f, x[8], 0f);
    }

    @Test
    public void imageAtTargetSizeIsNotResampled() {
        ImagePreprocessor.Rgb img = new ImagePreprocessor.Rgb(3, 3, new byte[27]);
        assertTrue(ImagePreprocessor.resizeAndCrop(img, 3) == img);
    }
}
