import Foundation

/// The manifest's image preprocessing (dcclip_mobile/data/preprocess.py) on plain pixel arrays; the Java
/// twin is android_demo/core/.../ImagePreprocessor.java, and both reproduce Pillow exactly:
///  1. transparency composited on white with Pillow's integer alpha_composite formula;
///  2. resize so the shorter side is `size` (the longer round-half-even(size * long / short)) with Pillow's
///     bicubic resampler (a = -0.5, support 2 scaled when shrinking, double coefficients rounded to 22-bit
///     fixed point, horizontal then vertical pass with 8-bit clipping between); skipped at size x size;
///  3. center crop: left = (w - size) / 2, top = (h - size) / 2;
///  4. float32 CHW RGB: (pixel / 255 - mean[c]) / std[c] in Float.
public struct ImagePreprocessor {
    public static let resizeRule = "shorter_side_bicubic_then_center_crop"
    static let precisionBits = 32 - 8 - 2

    public let size: Int
    let mean: [Float]
    let std: [Float]

    public init(size: Int, mean: [Double], std: [Double]) throws {
        guard size >= 1 else { throw BundleError("preprocess size must be >= 1, got \(size)") }
        guard mean.count == 3, std.count == 3, std.allSatisfy({ $0 > 0 }) else {
            throw BundleError("mean and std need 3 values each, std > 0; got mean=\(mean) std=\(std)")
        }
        self.size = size
        self.mean = mean.map { Float($0) }
        self.std = std.map { Float($0) }
    }

    /// An 8-bit RGB image, interleaved row by row.
    public struct RGB {
        public let width: Int, height: Int
        public var data: [UInt8]
        public init(width: Int, height: Int, data: [UInt8]) {
            precondition(width >= 1 && height >= 1 && data.count == width * height * 3,
                         "an RGB image of \(width)x\(height) needs \(width * height * 3) bytes, got \(data.count)")
            self.width = width
            self.height = height
            self.data = data
        }
    }

    /// Non-premultiplied RGBA bytes -> float32 [3, size, size].
    public func preprocess(rgba: [UInt8], width: Int, height: Int) -> [Float] {
        normalize(ImagePreprocessor.resizeAndCrop(ImagePreprocessor.fromRGBA(rgba, width: width, height: height), size))
    }

    // MARK: step 1

    public static func fromRGBA(_ rgba: [UInt8], width: Int, height: Int) -> RGB {
        precondition(rgba.count == width * height * 4, "\(width)x\(height) RGBA pixels expected")
        var out = [UInt8](repeating: 0, count: width * height * 3)
        for k in 0..<(width * height) {
            let a = Int(rgba[4 * k + 3])
            for c in 0..<3 {
                let v = Int(rgba[4 * k + c])
                out[3 * k + c] = UInt8(a == 255 ? v : onWhite(v, a))
            }
        }
        return RGB(width: width, height: height, data: out)
    }

    /// One channel of Pillow's alpha_composite(white, (c, a)): 7 extra bits, divisions by 255 rounded.
    static func onWhite(_ c: Int, _ a: Int) -> Int {
        if a == 0 { return 255 }
        let bits = 7
        let blend = 255 * (255 - a)
        let outa255 = a * 255 + blend
        let coef1 = a * 255 * 255 * (1 << bits) / outa255
        let coef2 = 255 * (1 << bits) - coef1
        let tmp = c * coef1 + 255 * coef2 + (0x80 << bits)
        return (((tmp >> 8) + tmp) >> 8) >> bits
    }

    // MARK: steps 2, 3

    public static func resizeAndCrop(_ img: RGB, _ size: Int) -> RGB {
        let w = img.width, h = img.height
        if w == size && h == size { return img }
        let scale = Double(size) / Double(min(w, h))
        let nw = max(size, Int((Double(w) * scale).rounded(.toNearestOrEven)))
        let nh = max(size, Int((Double(h) * scale).rounded(.toNearestOrEven)))
        return crop(resizeBicubic(img, nw, nh), left: (nw - size) / 2, top: (nh - size) / 2, width: size, height: size)
    }

    public static func crop(_ img: RGB, left: Int, top: Int, width: Int, height: Int) -> RGB {
        var out = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0..<height {
            let src = ((top + y) * img.width + left) * 3
            out.replaceSubrange((y * width * 3)..<((y + 1) * width * 3), with: img.data[src..<(src + width * 3)])
        }
        return RGB(width: width, height: height, data: out)
    }

    static func bicubic(_ x0: Double) -> Double {
        let a = -0.5
        let x = x0 < 0.0 ? -x0 : x0
        if x < 1.0 { return ((a + 2.0) * x - (a + 3.0)) * x * x + 1 }
        if x < 2.0 { return (((x - 5) * x + 8) * x - 4) * a }
        return 0.0
    }

    struct Coeffs {
        var ksize: Int
        var bounds: [Int]
        var k: [Int]
    }

    static func coeffs(_ inSize: Int, _ outSize: Int) -> Coeffs {
        let scale = Double(Float(inSize)) / Double(outSize)
        let filterscale = max(scale, 1.0)
        let support = 2.0 * filterscale
        let ksize = Int(support.rounded(.up)) * 2 + 1
        var kk = [Double](repeating: 0, count: outSize * ksize)
        var bounds = [Int](repeating: 0, count: outSize * 2)
        for xx in 0..<outSize {
            let center = (Double(xx) + 0.5) * scale
            var ww = 0.0
            let ss = 1.0 / filterscale
            var xmin = Int(center - support + 0.5)   // truncation toward zero, as C's (int)
            if xmin < 0 { xmin = 0 }
            var xmax = Int(center + support + 0.5)
            if xmax > inSize { xmax = inSize }
            xmax -= xmin
            for x in 0..<max(xmax, 0) {
                let w = bicubic((Double(x + xmin) - center + 0.5) * ss)
                kk[xx * ksize + x] = w
                ww += w
            }
            if ww != 0.0 {
                for x in 0..<max(xmax, 0) { kk[xx * ksize + x] /= ww }
            }
            bounds[xx * 2] = xmin
            bounds[xx * 2 + 1] = xmax
        }
        let one = Double(1 << precisionBits)
        let k = kk.map { $0 < 0 ? Int(-0.5 + $0 * one) : Int(0.5 + $0 * one) }
        return Coeffs(ksize: ksize, bounds: bounds, k: k)
    }

    static func clip8(_ v: Int) -> UInt8 {
        if v >= (1 << precisionBits << 8) { return 255 }
        if v <= 0 { return 0 }
        return UInt8(v >> precisionBits)
    }

    /// Pillow's Image.resize((outW, outH), Image.BICUBIC) of an RGB image, bit for bit.
    public static func resizeBicubic(_ img: RGB, _ outW: Int, _ outH: Int) -> RGB {
        if outW == img.width && outH == img.height { return img }
        let horizontal = outW != img.width, vertical = outH != img.height
        let ch = coeffs(img.width, outW), cv = coeffs(img.height, outH)
        var yFirst = cv.bounds[0]
        let yLast = cv.bounds[outH * 2 - 2] + cv.bounds[outH * 2 - 1]
        let half = 1 << (precisionBits - 1)
        var src = img
        if horizontal {
            let rows = yLast - yFirst
            var tmp = [UInt8](repeating: 0, count: outW * rows * 3)
            for yy in 0..<rows {
                let rowBase = (yy + yFirst) * img.width * 3
                for xx in 0..<outW {
                    let xmin = ch.bounds[xx * 2], xmax = ch.bounds[xx * 2 + 1], kb = xx * ch.ksize
                    var s0 = half, s1 = half, s2 = half
                    for x in 0..<xmax {
                        let p = rowBase + (x + xmin) * 3, kx = ch.k[kb + x]
                        s0 += Int(img.data[p]) * kx
                        s1 += Int(img.data[p + 1]) * kx
                        s2 += Int(img.data[p + 2]) * kx
                    }
                    let o = (yy * outW + xx) * 3
                    tmp[o] = clip8(s0)
                    tmp[o + 1] = clip8(s1)
                    tmp[o + 2] = clip8(s2)
                }
            }
            src = RGB(width: outW, height: rows, data: tmp)
        } else {
            yFirst = 0
        }
        if !vertical { return src }
        var out = [UInt8](repeating: 0, count: outW * outH * 3)
        for yy in 0..<outH {
            let ymin = cv.bounds[yy * 2] - yFirst, ymax = cv.bounds[yy * 2 + 1], kb = yy * cv.ksize
            for xx in 0..<outW {
                var s0 = half, s1 = half, s2 = half
                for y in 0..<ymax {
                    let p = ((ymin + y) * src.width + xx) * 3, ky = cv.k[kb + y]
                    s0 += Int(src.data[p]) * ky
                    s1 += Int(src.data[p + 1]) * ky
                    s2 += Int(src.data[p + 2]) * ky
                }
                let o = (yy * outW + xx) * 3
                out[o] = clip8(s0)
                out[o + 1] = clip8(s1)
                out[o + 2] = clip8(s2)
            }
        }
        return RGB(width: outW, height: outH, data: out)
    }

    // MARK: step 4

    /// A size x size RGB image -> float32 CHW, (x / 255 - mean) / std in Float.
    public func normalize(_ img: RGB) -> [Float] {
        precondition(img.width == size && img.height == size, "normalize expects \(size)x\(size)")
        let plane = size * size
        var out = [Float](repeating: 0, count: 3 * plane)
        for k in 0..<plane {
            for c in 0..<3 {
                let x = Float(img.data[3 * k + c]) / Float(255)
                out[c * plane + k] = (x - mean[c]) / std[c]
            }
        }
        return out
    }
}
