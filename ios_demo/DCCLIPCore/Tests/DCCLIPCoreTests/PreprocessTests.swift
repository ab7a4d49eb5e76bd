import XCTest
@testable import DCCLIPCore

/// Mirrors PreprocessTest.java: bit-exact float32 tensors (sha256) against dcclip_mobile.data.preprocess.
final class PreprocessTests: XCTestCase {
    override func setUpWithError() throws { try Golden.require() }

    func preprocessor() throws -> ImagePreprocessor { try Manifest.read(Golden.bundle).preprocessor() }

    func check(_ png: URL, _ want: [String: Any], _ what: String) throws {
        #if canImport(CoreGraphics) && canImport(ImageIO)
        let px = try ImageDecoding.decode(png)
        let x = try preprocessor().preprocess(rgba: px.rgba, width: px.width, height: px.height)
        XCTAssertEqual(x.count, Golden.ints(want["shape"]).reduce(1, *), what)
        let sum = x.reduce(0.0) { $0 + Double($1) }
        let wantSum = (want["sum"] as! NSNumber).doubleValue
        XCTAssertEqual(sum, wantSum, accuracy: 1e-3 + 1e-5 * abs(wantSum), what)
        for (k, v) in Golden.floats(want["first"]).enumerated() { XCTAssertEqual(x[k], v, accuracy: 1e-6, what) }
        XCTAssertEqual(Golden.sha256LittleEndian(x), want["sha256"] as! String, "\(what): float32 tensor sha256")
        #else
        throw XCTSkip("needs ImageIO to decode PNGs")
        #endif
    }

    func testGoldenJsonImagesBitExact() throws {
        let images = try Golden.golden()["images"] as! [[String: Any]]
        XCTAssertFalse(images.isEmpty)
        for img in images {
            let rel = img["file"] as! String
            try check(Golden.bundle.appendingPathComponent(rel), img["preprocessed"] as! [String: Any], rel)
        }
    }

    func testSyntheticImagesOfManySizesBitExact() throws {
        let cases = Golden.list("preprocess")
        XCTAssertGreaterThanOrEqual(cases.count, 8)
        for c in cases {
            let rel = c["file"] as! String
            try check(Golden.dir.appendingPathComponent(rel), c["preprocessed"] as! [String: Any], rel)
        }
    }

    func testAlphaIsCompositedOnWhiteAsPillowDoes() {
        let a = Golden.cases["alpha"] as! [String: Any]
        let rgba = Golden.ints(a["rgba"]).map { UInt8($0) }
        let rgb = Golden.ints(a["rgb"]).map { UInt8($0) }
        let out = ImagePreprocessor.fromRGBA(rgba, width: rgba.count / 4, height: 1)
        XCTAssertEqual(out.data, rgb)
    }

    func testNormalizationAloneIsExactFloat32() throws {
        let p = try ImagePreprocessor(size: 2, mean: [0.48145466, 0.4578275, 0.40821073], std: [0.26862954, 0.26130258, 0.27577711])
        let x = p.normalize(.init(width: 2, height: 2, data: [0, 128, 255, 1, 2, 3, 10, 20, 30, 200, 100, 50]))
        XCTAssertEqual(x[0], (Float(0) / 255 - Float(0.48145466)) / Float(0.26862954))
        XCTAssertEqual(x[1], (Float(1) / 255 - Float(0.48145466)) / Float(0.26862954))
        XCTAssertEqual(x[8], (Float(255) / 255 - Float(0.40821073)) / Float(0.27577711))
    }

    func testExifOrientationsArePixelPermutations() {
        #if canImport(CoreGraphics) && canImport(ImageIO)
        // 3x2 image, pixel value = index; orientation 6 (rotate 90 clockwise to view) makes it 2x3
        let px = Pixels(rgba: (0..<6).flatMap { [UInt8($0), 0, 0, 255] }, width: 3, height: 2)
        let r = ImageDecoding.orient(px, 6)
        XCTAssertEqual([r.width, r.height], [2, 3])
        XCTAssertEqual(stride(from: 0, to: r.rgba.count, by: 4).map { r.rgba[$0] }, [3, 0, 4, 1, 5, 2])
        XCTAssertEqual(ImageDecoding.orient(ImageDecoding.orient(px, 3), 3).rgba, px.rgba)
        #endif
    }
}
