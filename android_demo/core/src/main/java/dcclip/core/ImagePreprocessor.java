package dcclip.core;

/**
 * The manifest's image preprocessing (dcclip_mobile/data/preprocess.py), on plain pixel arrays:
 *
 * <ol>
 *   <li>transparency composited on white, with Pillow's integer formula (Image.alpha_composite);
 *   <li>resize so the shorter side is {@code size} (the longer round-half-even(size * long / short)) with
 *       Pillow's bicubic resampler, reproduced exactly: same filter (a = -0.5, support 2 scaled when
 *       shrinking), same double-precision coefficients rounded to 22-bit fixed point, same two passes
 *       (horizontal, then vertical) with 8-bit rounding and clipping between them; skipped when the image is
 *       already size x size, one pass skipped when that side already has its final length;
 *   <li>center crop: left = (w - size) / 2, top = (h - size) / 2;
 *   <li>float32 CHW RGB: (pixel / 255f - mean[c]) / std[c], in float32, in that order.
 * </ol>
 * The output therefore equals the Python side's tensor bit for bit, given the same decoded pixels.
 * Decoding and EXIF orientation are the platform's job (Android: BitmapFactory + ExifInterface).
 */
public final class ImagePreprocessor {
    public static final String RESIZE_RULE = "shorter_side_bicubic_then_center_crop";
    private static final int PRECISION_BITS = 32 - 8 - 2;

    public final int size;
    private final float[] mean = new float[3];
    private final float[] std = new float[3];

    public ImagePreprocessor(int size, double[] mean, double[] std) {
        if (size < 1) throw new BundleException("preprocess size must be >= 1, got " + size);
        if (mean.length != 3 || std.length != 3) throw new BundleException("mean and std need 3 values each");
        for (int c = 0; c < 3; c++) {
            if (!(std[c] > 0)) throw new BundleException("std must be > 0, got " + std[c]);
            this.mean[c] = (float) mean[c];
            this.std[c] = (float) std[c];
        }
        this.size = size;
    }

    /** An 8-bit RGB image, pixels interleaved row by row (r, g, b, r, g, b, ...). */
    public static final class Rgb {
        public final int width, height;
        public final byte[] data;

        public Rgb(int width, int height, byte[] data) {
            if (width < 1 || height < 1 || data.length != width * height * 3) {
                throw new IllegalArgumentException("an RGB image of " + width + "x" + height + " needs "
                        + (long) width * height * 3 + " bytes, got " + data.length);
            }
            this.width = width;
            this.height = height;
            this.data = data;
        }
    }

    /** ARGB pixels (Android's Bitmap.getPixels, Java's BufferedImage.getRGB) -> float32 [3, size, size]. */
    public float[] preprocessArgb(int[] argb, int width, int height) {
        return preprocess(fromArgb(argb, width, height));
    }

    public float[] preprocess(Rgb img) {
        return normalize(resizeAndCrop(img, size));
    }

    // ------------------------------------------------------------------------------ step 1: RGB
    /**
     * ARGB -> RGB. Any pixel with alpha below 255 means the image has transparency, and then every pixel is
     * composited on white as Pillow's alpha_composite does (for alpha 255 that is the identity).
     */
    public static Rgb fromArgb(int[] argb, int width, int height) {
        if (argb.length != width * height) {
            throw new IllegalArgumentException(width + "x" + height + " pixels expected, got " + argb.length);
        }
        byte[] out = new byte[width * height * 3];
        for (int k = 0; k < argb.length; k++) {
            int p = argb[k];
            int a = p >>> 24, r = (p >> 16) & 0xFF, g = (p >> 8) & 0xFF, b = p & 0xFF;
            if (a != 255) {
                r = onWhite(r, a);
                g = onWhite(g, a);
                b = onWhite(b, a);
            }
            out[3 * k] = (byte) r;
            out[3 * k + 1] = (byte) g;
            out[3 * k + 2] = (byte) b;
        }
        return new Rgb(width, height, out);
    }

    /** One channel of Pillow's alpha_composite(white, (c, a)): 7 extra bits, divisions by 255 rounded. */
    static int onWhite(int c, int a) {
        if (a == 0) return 255;
        final int bits = 7;
        long blend = 255L * (255 - a);
        long outa255 = a * 255L + blend;
        long coef1 = (long) a * 255 * 255 * (1 << bits) / outa255;
        long coef2 = 255L * (1 << bits) - coef1;
        long tmp = c * coef1 + 255 * coef2 + (0x80L << bits);
        return (int) ((((tmp >> 8) + tmp) >> 8) >> bits);
    }

    // ------------------------------------------------------------------------------ step 2, 3
    public static Rgb resizeAndCrop(Rgb img, int size) {
        int w = img.width, h = img.height;
        if (w == size && h == size) return img;
        double scale = (double) size / Math.min(w, h);
        int nw = Math.max(size, (int) Math.rint(w * scale));
        int nh = Math.max(size, (int) Math.rint(h * scale));
        Rgb resized = resizeBicubic(img, nw, nh);
        return crop(resized, (nw - size) / 2, (nh - size) / 2, size, size);
    }

    public static Rgb crop(Rgb img, int left, int top, int w, int h) {
        byte[] out = new byte[w * h * 3];
        for (int y = 0; y < h; y++) {
            System.arraycopy(img.data, ((top + y) * img.width + left) * 3, out, y * w * 3, w * 3);
        }
        return new Rgb(w, h, out);
    }

    private static double bicubic(double x) {
        final double a = -0.5;
        if (x < 0.0) x = -x;
        if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
        if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
        return 0.0;
    }

    /** Filter taps for one axis: bounds[2*i] = first input index, bounds[2*i+1] = count; k fixed-point. */
    private static final class Coeffs {
        int ksize;
        int[] bounds;
        int[] k;
    }

    private static Coeffs coeffs(int inSize, int outSize) {
        final double support0 = 2.0; // bicubic
        double scale = (double) (float) inSize / outSize;
        double filterscale = Math.max(scale, 1.0);
        double support = support0 * filterscale;
        int ksize = (int) Math.ceil(support) * 2 + 1;
        double[] kk = new double[outSize * ksize];
        int[] bounds = new int[outSize * 2];
        for (int xx = 0; xx < outSize; xx++) {
            double center = (xx + 0.5) * scale;
            double ww = 0.0;
            double ss = 1.0 / filterscale;
            int xmin = (int) (center - support + 0.5);
            if (xmin < 0) xmin = 0;
            int xmax = (int) (center + support + 0.5);
            if (xmax > inSize) xmax = inSize;
            xmax -= xmin;
            for (int x = 0; x < xmax; x++) {
                double w = bicubic((x + xmin - center + 0.5) * ss);
                kk[xx * ksize + x] = w;
                ww += w;
            }
            for (int x = 0; x < xmax; x++) {
                if (ww != 0.0) kk[xx * ksize + x] /= ww;
            }
            bounds[xx * 2] = xmin;
            bounds[xx * 2 + 1] = xmax;
        }
        Coeffs c = new Coeffs();
        c.ksize = ksize;
        c.bounds = bounds;
        c.k = new int[kk.length];
        for (int i = 0; i < kk.length; i++) {
            c.k[i] = kk[i] < 0 ? (int) (-0.5 + kk[i] * (1 << PRECISION_BITS)) : (int) (0.5 + kk[i] * (1 << PRECISION_BITS));
        }
        return c;
    }

    private static int clip8(int in) {
        if (in >= (1 << PRECISION_BITS << 8)) return 255;
        if (in <= 0) return 0;
        return in >> PRECISION_BITS;
    }

    /** Pillow's Image.resize((outW, outH), Image.BICUBIC) of an RGB image, bit for bit. */
    public static Rgb resizeBicubic(Rgb img, int outW, int outH) {
        if (outW == img.width && outH == img.height) return new Rgb(outW, outH, img.data.clone());
        boolean horizontal = outW != img.width, vertical = outH != img.height;
        Coeffs ch = coeffs(img.width, outW);
        Coeffs cv = coeffs(img.height, outH);
        int yFirst = cv.bounds[0];
        int yLast = cv.bounds[outH * 2 - 2] + cv.bounds[outH * 2 - 1];
        Rgb src = img;
        if (horizontal) {
            int rows = yLast - yFirst;
            byte[] tmp = new byte[outW * rows * 3];
            int half = 1 << (PRECISION_BITS - 1);
            for (int yy = 0; yy < rows; yy++) {
                int rowBase = (yy + yFirst) * img.width * 3;
                for (int xx = 0; xx < outW; xx++) {
                    int xmin = ch.bounds[xx * 2], xmax = ch.bounds[xx * 2 + 1], kb = xx * ch.ksize;
                    int s0 = half, s1 = half, s2 = half;
                    for (int x = 0; x < xmax; x++) {
                        int p = rowBase + (x + xmin) * 3, kx = ch.k[kb + x];
                        s0 += (img.data[p] & 0xFF) * kx;
                        s1 += (img.data[p + 1] & 0xFF) * kx;
                        s2 += (img.data[p + 2] & 0xFF) * kx;
                    }
                    int o = (yy * outW + xx) * 3;
                    tmp[o] = (byte) clip8(s0);
                    tmp[o + 1] = (byte) clip8(s1);
                    tmp[o + 2] = (byte) clip8(s2);
                }
            }
            src = new Rgb(outW, rows, tmp);
        } else {
            yFirst = 0; // the vertical pass reads the input's own rows
        }
        if (!vertical) return src;
        byte[] out = new byte[outW * outH * 3];
        int half = 1 << (PRECISION_BITS - 1);
        for (int yy = 0; yy < outH; yy++) {
            int ymin = cv.bounds[yy * 2] - yFirst, ymax = cv.bounds[yy * 2 + 1], kb = yy * cv.ksize;
            for (int xx = 0; xx < outW; xx++) {
                int s0 = half, s1 = half, s2 = half;
                for (int y = 0; y < ymax; y++) {
                    int p = ((ymin + y) * src.width + xx) * 3, ky = cv.k[kb + y];
                    s0 += (src.data[p] & 0xFF) * ky;
                    s1 += (src.data[p + 1] & 0xFF) * ky;
                    s2 += (src.data[p + 2] & 0xFF) * ky;
                }
                int o = (yy * outW + xx) * 3;
                out[o] = (byte) clip8(s0);
                out[o + 1] = (byte) clip8(s1);
                out[o + 2] = (byte) clip8(s2);
            }
        }
        return new Rgb(outW, outH, out);
    }

    // ------------------------------------------------------------------------------ step 4
    /** A size x size RGB image -> float32 CHW, (x / 255f - mean) / std in float32. */
    public float[] normalize(Rgb img) {
        if (img.width != size || img.height != size) {
            throw new IllegalArgumentException("normalize expects " + size + "x" + size + ", got " + img.width + "x" + img.height);
        }
        int plane = size * size;
        float[] out = new float[3 * plane];
        for (int k = 0; k < plane; k++) {
            for (int c = 0; c < 3; c++) {
                float x = (float) (img.data[3 * k + c] & 0xFF) / 255.0f;
                out[c * plane + k] = (x - mean[c]) / std[c];
            }
        }
        return out;
    }
}
