#if canImport(CoreGraphics) && canImport(ImageIO)
import CoreGraphics
import Foundation
import ImageIO

/// Decoding, the platform's half of preprocessing: 8-bit non-premultiplied RGBA with the EXIF orientation
/// applied (as Pillow's exif_transpose). Alpha, resize, crop and normalization are ImagePreprocessor's.
public enum ImageDecoding {
    /// An image file (PNG, JPEG, HEIC...) with its EXIF orientation applied.
    public static func decode(_ url: URL) throws -> Pixels {
        guard let src = CGImageSourceCreateWithURL(url as CFURL, nil),
              let image = CGImageSourceCreateImageAtIndex(src, 0, nil) else {
            throw BundleError("\(url.path) is not an image this device can decode")
        }
        let props = CGImageSourceCopyPropertiesAtIndex(src, 0, nil) as? [CFString: Any]
        let orientation = (props?[kCGImagePropertyOrientation] as? NSNumber)?.intValue ?? 1
        return orient(pixels(image), orientation)
    }

    /// A CGImage's pixels. An 8-bit RGB or non-premultiplied RGBA image (what PNGs decode to) is read byte for
    /// byte; anything else is drawn into an sRGB context, premultiplied, and un-premultiplied, which is exact
    /// for opaque pixels and off by rounding for translucent ones.
    public static func pixels(_ image: CGImage) -> Pixels {
        let w = image.width, h = image.height
        let alpha = image.alphaInfo
        let order = image.bitmapInfo.intersection(.byteOrderMask)
        let direct = image.bitsPerComponent == 8 && image.colorSpace?.model == .rgb
            && (order == [] || order == .byteOrder32Big || order == .byteOrderDefault)
            && ((image.bitsPerPixel == 24 && alpha == .none) || (image.bitsPerPixel == 32 && (alpha == .last || alpha == .noneSkipLast)))
        if direct, let data = image.dataProvider?.data, let base = CFDataGetBytePtr(data) {
            var out = [UInt8](repeating: 255, count: w * h * 4)
            let bpp = image.bitsPerPixel / 8
            for y in 0..<h {
                for x in 0..<w {
                    let p = y * image.bytesPerRow + x * bpp, o = (y * w + x) * 4
                    out[o] = base[p]
                    out[o + 1] = base[p + 1]
                    out[o + 2] = base[p + 2]
                    if alpha == .last { out[o + 3] = base[p + 3] }
                }
            }
            return Pixels(rgba: out, width: w, height: h)
        }
        var out = [UInt8](repeating: 0, count: w * h * 4)
        let space = CGColorSpace(name: CGColorSpace.sRGB)!
        out.withUnsafeMutableBytes { buf in
            let ctx = CGContext(data: buf.baseAddress, width: w, height: h, bitsPerComponent: 8, bytesPerRow: w * 4,
                                space: space, bitmapInfo: CGImageAlphaInfo.premultipliedLast.rawValue)!
            ctx.draw(image, in: CGRect(x: 0, y: 0, width: w, height: h))
        }
        for k in 0..<(w * h) {
            let a = Int(out[4 * k + 3])
            if a == 0 || a == 255 { continue }
            for c in 0..<3 { out[4 * k + c] = UInt8(min(255, (Int(out[4 * k + c]) * 255 + a / 2) / a)) }
        }
        return Pixels(rgba: out, width: w, height: h)
    }

    /// The eight EXIF orientations (1...8) as exact pixel permutations.
    public static func orient(_ px: Pixels, _ orientation: Int) -> Pixels {
        guard (2...8).contains(orientation) else { return px }
        let w = px.width, h = px.height
        let swap = orientation >= 5
        let ow = swap ? h : w, oh = swap ? w : h
        var out = [UInt8](repeating: 0, count: px.rgba.count)
        for y in 0..<oh {
            for x in 0..<ow {
                // the source pixel that lands at (x, y) of the upright image
                let source: (x: Int, y: Int)
                switch orientation {
                case 2: source = (w - 1 - x, y)           // mirrored
                case 3: source = (w - 1 - x, h - 1 - y)   // rotated 180
                case 4: source = (x, h - 1 - y)           // flipped vertically
                case 5: source = (y, x)                   // transposed
                case 6: source = (y, h - 1 - x)           // rotate 90 clockwise to view
                case 7: source = (w - 1 - y, h - 1 - x)   // transversed
                default: source = (w - 1 - y, x)          // 8: rotate 90 counter-clockwise to view
                }
                let (sx, sy) = source
                let s = (sy * w + sx) * 4, o = (y * ow + x) * 4
                out[o] = px.rgba[s]
                out[o + 1] = px.rgba[s + 1]
                out[o + 2] = px.rgba[s + 2]
                out[o + 3] = px.rgba[s + 3]
            }
        }
        return Pixels(rgba: out, width: ow, height: oh)
    }
}
#endif
