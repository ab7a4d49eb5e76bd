import XCTest
@testable import DCCLIPCore

/// Mirrors ScoringTest.java and BenchmarkTest.java.
final class ScoringAndBenchmarkTests: XCTestCase {
    func testLogitsSoftmaxAndTop5MatchTorch() throws {
        try Golden.require()
        let b = try DCCLIPBundle.open(Golden.bundle)
        let classes = try XCTUnwrap(b.classes)
        let cases = Golden.list("scoring")
        XCTAssertGreaterThanOrEqual(cases.count, 2)
        for c in cases {
            let lang = c["language"] as! String
            let emb = Golden.floats(c["embedding"])
            let logits = Scoring.logits(emb, classes.embeddings(lang), b.manifest.logitScale)
            for (k, v) in Golden.floats(c["logits"]).enumerated() { XCTAssertEqual(logits[k], v, accuracy: 1e-4) }
            let p = Scoring.softmax(logits)
            for (k, v) in Golden.floats(c["probs"]).enumerated() { XCTAssertEqual(p[k], v, accuracy: 1e-5) }
            let top = Scoring.rank(emb, classes.embeddings(lang), classes.labels(lang), b.manifest.logitScale, 5)
            XCTAssertEqual(top.map { $0.index }, Golden.ints(c["top5"]))
            XCTAssertEqual(top.first?.label, (c["top5_labels"] as! [String]).first)
        }
    }

    func testSoftmaxAndTopKBasics() {
        let p = Scoring.softmax([1000, 1000, -1000])
        XCTAssertEqual(p[0], 0.5)
        XCTAssertEqual(p[2], 0)
        XCTAssertEqual(Scoring.topK(p, 2), [0, 1])
        XCTAssertEqual(Scoring.topK([1, 0, 3], 10), [2, 0, 1])
        XCTAssertEqual(Scoring.normalize([3, 4])[0], 0.6, accuracy: 1e-7)
        XCTAssertEqual(Scoring.normalize([0, 0])[0], 0)
    }

    func testMedianAndP90AsTheReportComputesThem() {
        let t = Benchmark.Timing((1...50).reversed().map { Double($0) })
        XCTAssertEqual(t.medianMs, 25.5)
        XCTAssertEqual(t.p90Ms, 45)
        let odd = Benchmark.Timing([3, 1, 2])
        XCTAssertEqual(odd.medianMs, 2)
        XCTAssertEqual(odd.p90Ms, 3)
    }

    func testTimesEveryRunAfterWarmup() {
        var calls = 0
        let t = Benchmark.time(warmup: 3, runs: 7) { calls += 1 }
        XCTAssertEqual(calls, 10)
        XCTAssertEqual(t.sortedMs.count, 7)
    }

    func testAccuracyAndParity() {
        let acc = Benchmark.accuracy([[1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 5], [9, 8, 7, 6, 5, 4]], [1, 3, 5])
        XCTAssertEqual(acc["top1"] as! Double, 1.0 / 3, accuracy: 1e-12)
        XCTAssertEqual(acc["top5"] as! Double, 1.0, accuracy: 1e-12)
        let par = Benchmark.parity([[1, 0], [0, 2]], [[2, 0], [1, 1]])
        XCTAssertEqual(par["cosine_min"] as! Double, 0.5.squareRoot(), accuracy: 1e-6)
        XCTAssertTrue(Benchmark.accuracy([], [])["top1"] is NSNull)
    }

    func testReportHasTheEntrySchemaAndParsesBack() throws {
        try Golden.require()
        let m = try Manifest.read(Golden.bundle)
        let entries = m.artifacts.map {
            Benchmark.entry($0, Benchmark.Timing([2.5, 1.5, 3.5]), peakMemoryBytes: 12345,
                            accuracy: ["en": Benchmark.accuracy([[0]], [0]), "zh": Benchmark.accuracy([[1]], [0])],
                            parity: Benchmark.parity([[1, 0]], [[1, 0]]))
        }
        let data = try Benchmark.report(device: ["model": "XCTest", "threads": 2], entries: entries)
        let r = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        XCTAssertEqual(r["format_version"] as? Int, 1)
        let arts = r["artifacts"] as! [[String: Any]]
        XCTAssertEqual(arts.count, m.artifacts.count)
        XCTAssertEqual(Set(arts[0].keys), Set(Benchmark.entryFields))
        XCTAssertEqual(arts[0]["name"] as? String, m.artifacts[0].name)
        XCTAssertEqual(arts[0]["latency_ms_median"] as? Double, 2.5)
        XCTAssertEqual(arts[0]["source"] as? String, "device")
        try data.write(to: Golden.dir.appendingPathComponent("device_report_sample_ios.json"))
    }
}
