import XCTest
@testable import DCCLIPCore

/// Mirrors ClassifierTest.java: the pipeline glue with encoders that answer from the Python side's own
/// embeddings, keyed by the exact encoder input; any other input is a failure.
final class ClassifierTests: XCTestCase {
    struct PythonAnswers: Encoders {
        var images: [String: [Float]] = [:]
        var texts: [[Int64]: [Float]] = [:]

        init(_ b: DCCLIPBundle) throws {
            let g = try Golden.golden()
            for img in g["images"] as! [[String: Any]] {
                let sha = (img["preprocessed"] as! [String: Any])["sha256"] as! String
                images[sha] = Golden.floats(img["embedding"])
            }
            for t in g["texts"] as! [[String: Any]] { texts[Golden.int64s(t["input_ids"])] = Golden.floats(t["embedding"]) }
            let classes = b.classes!
            for lang in ["en", "zh"] {
                // one template per language (the exporter's default): a class prompt's embedding is its class's
                let templates = classes.templates[lang]!
                guard templates.count == 1 else { throw BundleError("this test needs a bundle with one template per language") }
                for (c, label) in classes.labels(lang).enumerated() {
                    let prompt = templates[0].replacingOccurrences(of: Scoring.placeholder, with: label)
                    texts[b.tokenizer.encodePadded(prompt).inputIds] = classes.embeddings(lang)[c]
                }
            }
        }

        func encodeImage(_ pixelsCHW: [Float]) throws -> [Float] {
            guard let e = images[Golden.sha256LittleEndian(pixelsCHW)] else {
                throw BundleError("the image encoder got a tensor Python never made")
            }
            return e
        }

        func encodeText(_ encoding: Tokenizer.Encoding) throws -> [Float] {
            guard let e = texts[encoding.inputIds] else {
                throw BundleError("the text encoder got ids Python never made: \(encoding.inputIds)")
            }
            return e
        }
    }

    override func setUpWithError() throws {
        try Golden.require()
        #if !(canImport(CoreGraphics) && canImport(ImageIO))
        throw XCTSkip("needs ImageIO to decode PNGs")
        #endif
    }

    #if canImport(CoreGraphics) && canImport(ImageIO)
    func testClassifiesTheGoldenImagesAsTorchRanksThem() throws {
        let b = try DCCLIPBundle.open(Golden.bundle)
        let c = try Classifier(bundle: b, encoders: PythonAnswers(b))
        for s in Golden.list("scoring") {
            let px = try ImageDecoding.decode(Golden.bundle.appendingPathComponent(s["image"] as! String))
            let a = try c.classify(px, language: s["language"] as! String, query: nil)
            XCTAssertEqual(a.top.map { $0.index }, Golden.ints(s["top5"]))
            XCTAssertGreaterThanOrEqual(a.totalMs, 0)
        }
    }

    func testAFreeTextQueryIsRankedAmongTheLabels() throws {
        let b = try DCCLIPBundle.open(Golden.bundle)
        let g = try Golden.golden()
        let query = (g["texts"] as! [[String: Any]])[2]["text"] as! String
        let img = (g["images"] as! [[String: Any]])[0]["file"] as! String
        let c = try Classifier(bundle: b, encoders: PythonAnswers(b))
        let a = try c.classify(ImageDecoding.decode(Golden.bundle.appendingPathComponent(img)), language: "zh",
                               query: query, k: b.classes!.labelsZh.count + 1)
        XCTAssertTrue(a.top.contains { $0.label == "\u{201C}\(query)\u{201D}" })
        XCTAssertEqual(a.top.reduce(0) { $0 + $1.probability }, 1, accuracy: 1e-5)
    }

    func testGoldenParityIsExactWithPythonsOwnEmbeddings() throws {
        let b = try DCCLIPBundle.open(Golden.bundle)
        let p = try Classifier.goldenParity(b, PythonAnswers(b), decode: ImageDecoding.decode)
        XCTAssertEqual(Benchmark.parity(p.imageDevice, p.imageReference)["cosine_min"] as! Double, 1, accuracy: 1e-6)
        XCTAssertEqual(Benchmark.parity(p.textDevice, p.textReference)["cosine_min"] as! Double, 1, accuracy: 1e-6)
    }

    func testBenchmarkModeWritesAnEntryPerRunnableArtifact() throws {
        let b = try DCCLIPBundle.open(Golden.bundle)
        let answers = try PythonAnswers(b)
        let eval = Golden.list("scoring").filter { $0["language"] as! String == "en" }.map {
            DeviceBenchmark.Labeled(url: Golden.bundle.appendingPathComponent($0["image"] as! String),
                                    label: Golden.ints($0["top5"])[0])
        }
        let entries = try DeviceBenchmark.run(b, load: { _ in answers }, decode: ImageDecoding.decode, eval: eval,
                                              warmup: 1, runs: 3, peakMemory: { 42 })
        XCTAssertEqual(entries.count, b.manifest.artifacts.count)
        for e in entries {
            XCTAssertEqual(Set(e.keys), Set(Benchmark.entryFields))
            let acc = e["accuracy"] as! [String: Any]
            XCTAssertEqual((acc["en"] as! [String: Any])["top1"] as! Double, 1)
            XCTAssertEqual((e["parity"] as! [String: Any])["cosine_min"] as! Double, 1, accuracy: 1e-6)
            XCTAssertEqual(e["peak_memory_bytes"] as? Int, 42)
        }
    }
    #endif
}
