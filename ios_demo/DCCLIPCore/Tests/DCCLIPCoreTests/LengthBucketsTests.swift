import XCTest
@testable import DCCLIPCore

/// Picking a text's length bucket, and refusing length_buckets that break the rule (as LengthBucketsTest.java).
final class LengthBucketsTests: XCTestCase {
    let three: [String: Any] = ["length_buckets": [["length": 16, "method": "forward_16"],
                                                   ["length": 32, "method": "forward_32"],
                                                   ["length": 64, "method": "forward"]]]

    func encoding(_ tokens: Int, _ context: Int) -> Tokenizer.Encoding {
        Tokenizer.Encoding(inputIds: (0..<context).map { $0 < tokens ? Int64(100 + $0) : 0 },
                           attentionMask: (0..<context).map { $0 < tokens ? 1 : 0 })
    }

    func testATextRunsInTheShortestBucketThatHoldsIt() throws {
        let b = try LengthBuckets.of(three, contextLength: 64, "artifacts[1]")
        XCTAssertEqual(b.lengths, [16, 32, 64])
        for (tokens, want) in [(0, 16), (1, 16), (10, 16), (16, 16), (17, 32), (32, 32), (33, 64), (64, 64)] {
            let c = try b.pick(encoding(tokens, 64))
            XCTAssertEqual(c.length, want, "tokens \(tokens)")
            XCTAssertEqual(c.method, want == 64 ? "forward" : "forward_\(want)")
            XCTAssertEqual(c.inputIds.count, want)
            XCTAssertEqual(c.attentionMask.count, want)
        }
    }

    func testAnArtifactWithoutBucketsRunsTheContextInForward() throws {
        let c = try LengthBuckets.of([:], contextLength: 64, "a").pick(encoding(5, 64))
        XCTAssertEqual(c.length, 64)
        XCTAssertEqual(c.method, "forward")
    }

    func testRefusesBucketsThatBreakTheRule() {
        let bad: [Any] = [
            [Any](), 16, [["length": 16, "method": "forward_16"]],
            [["length": 32, "method": "forward_32"], ["length": 16, "method": "forward_16"], ["length": 64, "method": "forward"]],
            [["length": 16, "method": "../../forward"], ["length": 64, "method": "forward"]],
            [["length": 0, "method": "forward_0"], ["length": 64, "method": "forward"]],
            [["length": "16", "method": "forward_16"], ["length": 64, "method": "forward"]],
        ]
        for b in bad {
            XCTAssertThrowsError(try LengthBuckets.of(["length_buckets": b], contextLength: 64, "artifacts[1]")) {
                XCTAssertTrue("\($0)".contains("artifacts[1] length_buckets"), "\($0)")
            }
        }
    }
}
