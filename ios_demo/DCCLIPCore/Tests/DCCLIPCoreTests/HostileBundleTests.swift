import Foundation
import XCTest
@testable import DCCLIPCore

/// Mirrors HostileBundleTest.java: the path rule against crafted manifests. Every path the manifest or golden.json
/// names must be relative, inside the bundle and listed in the file table with its sha256, checked before anything
/// is opened; no error message echoes a file's contents. Each case is a copy of the exported bundle with one path
/// made hostile, and an "outside" file holding a secret beside the copy.
final class HostileBundleTests: XCTestCase {
    static let secret = "SECRET-OUTSIDE-THE-BUNDLE"
    var root: URL!
    var copy: URL!
    var outside: URL!

    override func setUpWithError() throws {
        try Golden.require()
        root = FileManager.default.temporaryDirectory.appendingPathComponent("dcclip-hostile-\(UUID().uuidString)")
        copy = root.appendingPathComponent("bundles").appendingPathComponent("android")
        try FileManager.default.createDirectory(at: copy.deletingLastPathComponent(), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Golden.bundle, to: copy)
        outside = root.appendingPathComponent("outside")
        try Data("{\"\(HostileBundleTests.secret)\": [1, 2, oops \(HostileBundleTests.secret)]}".utf8).write(to: outside)
    }

    override func tearDownWithError() throws {
        if let root = root { try? FileManager.default.removeItem(at: root) }
    }

    func manifest() throws -> NSMutableDictionary {
        let data = try Data(contentsOf: copy.appendingPathComponent(Manifest.file))
        return try XCTUnwrap(JSONSerialization.jsonObject(with: data, options: [.mutableContainers]) as? NSMutableDictionary)
    }

    func write(_ m: NSMutableDictionary) throws {
        try JSONSerialization.data(withJSONObject: m, options: [.prettyPrinted])
            .write(to: copy.appendingPathComponent(Manifest.file))
    }

    func dict(_ o: Any?) throws -> NSMutableDictionary { try XCTUnwrap(o as? NSMutableDictionary) }

    func firstArtifact(_ m: NSMutableDictionary) throws -> NSMutableDictionary {
        try dict(try XCTUnwrap(m["artifacts"] as? NSMutableArray)[0])
    }

    /// DCCLIPBundle.open refuses; the message says why and never contains the outside file's secret.
    @discardableResult
    func refusal(_ mustContain: String..., file: StaticString = #filePath, line: UInt = #line) -> String {
        var msg = ""
        do {
            _ = try DCCLIPBundle.open(copy)
            XCTFail("the crafted bundle was accepted", file: file, line: line)
        } catch {
            msg = "\(error)"
        }
        XCTAssertFalse(msg.contains(HostileBundleTests.secret), "the message echoes the outside file: \(msg)",
                       file: file, line: line)
        for s in mustContain { XCTAssertTrue(msg.contains(s), msg, file: file, line: line) }
        return msg
    }

    func testRefusesATokenizerPathWithDotDot() throws {
        let m = try manifest()
        try dict(try dict(m["text"])["tokenizer"])["json"] = "../../outside"
        try write(m)
        refusal("text.tokenizer.json", "\"../../outside\"", "not a relative path inside the bundle")
    }

    func testRefusesAnAbsoluteClassEmbeddingsPath() throws {
        let m = try manifest()
        try dict(m["class_embeddings"])["file"] = outside.path
        try write(m)
        refusal("class_embeddings.file", "not a relative path inside the bundle")
        try dict(m["class_embeddings"])["file"] = "/etc/passwd"
        try write(m)
        refusal("class_embeddings.file", "\"/etc/passwd\"")
    }

    func testRefusesAGoldenPathOutsideOrUnlisted() throws {
        let m = try manifest()
        m["golden"] = "../../outside"
        try write(m)
        refusal("golden", "not a relative path inside the bundle")
        try Data("{\"\(HostileBundleTests.secret)\": 1}".utf8).write(to: copy.appendingPathComponent("unlisted.json"))
        m["golden"] = "unlisted.json"
        try write(m)
        refusal("golden", "\"unlisted.json\"", "does not list with a sha256")
    }

    func testRefusesArtifactPathsOutsideTheBundle() throws {
        for bad in ["../outside", "/etc/passwd", "./image.pte", "a//b.pte", "a\\..\\b.pte", ""] {
            let m = try manifest()
            try firstArtifact(m)["file"] = bad
            try write(m)
            refusal("artifacts[0].file", "refusing to open it")
        }
    }

    func testRefusesOddSpellingsOfTheSamePaths() throws {
        for bad in ["golden/../golden.json", "./golden.json", "golden.json/", "/golden.json", "golden\\0.png"] {
            let m = try manifest()
            m["golden"] = bad
            try write(m)
            refusal("golden", "not a relative path inside the bundle")
        }
        XCTAssertFalse(Manifest.isRelativeInside("a/\u{0}b"))
        XCTAssertTrue(Manifest.isRelativeInside("golden/0.png"))
        XCTAssertTrue(Manifest.isRelativeInside("x.mlpackage/Data/com.apple.CoreML/model.mlmodel"))
    }

    func testRefusesAFileTableKeyOutsideTheBundle() throws {
        let m = try manifest()
        let files = try dict(m["files"])
        files["../outside"] = files["golden.json"]
        try write(m)
        refusal("\"../outside\"", "outside the bundle")
    }

    func testRefusesAMalformedFileTableEntry() throws {
        var m = try manifest()
        try dict(try dict(m["files"])["golden.json"])["sha256"] = "not-a-digest"
        try write(m)
        refusal("files[\"golden.json\"] sha256 must be 64 lowercase hex digits")
        m = try manifest()
        try dict(m["files"])["golden.json"] = "abc"
        try write(m)
        refusal("files[\"golden.json\"] must be a JSON object")
    }

    func testRefusesAnArtifactWithoutAFile() throws {
        let m = try manifest()
        try firstArtifact(m).removeObject(forKey: "file")
        try write(m)
        refusal("artifacts[0]", "lacks \"file\"")
    }

    /// A tokenizer.json replaced by a symbolic link to a file with the very same bytes: the sha256 matches, the
    /// link is refused all the same (a link could point anywhere, and change after the check).
    func testRefusesASymbolicLinkEvenWithTheRightContent() throws {
        let tok = copy.appendingPathComponent("tokenizer.json")
        let real = root.appendingPathComponent("tokenizer-outside.json")
        try FileManager.default.moveItem(at: tok, to: real)
        try FileManager.default.createSymbolicLink(at: tok, withDestinationURL: real)
        refusal("tokenizer.json: a symbolic link; a bundle holds regular files only")
        let m = try Manifest.read(copy)
        XCTAssertThrowsError(try m.url("tokenizer.json", "manifest text.tokenizer.json")) { error in
            XCTAssertTrue("\(error)".contains("resolves outside the bundle"), "\(error)")
        }
    }

    struct Zeros: Encoders {
        let dim: Int
        func encodeImage(_ pixelsCHW: [Float]) throws -> [Float] { [Float](repeating: 0, count: dim) }
        func encodeText(_ encoding: Tokenizer.Encoding) throws -> [Float] { [Float](repeating: 0, count: dim) }
    }

    /// golden.json's images[].file, in a golden.json whose new sha256 the crafted manifest lists: refused before
    /// the decoder is called, which never sees the outside path.
    func testRefusesAGoldenImageOutsideTheBundleBeforeDecodingIt() throws {
        let goldenURL = copy.appendingPathComponent("golden.json")
        let g = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: goldenURL),
                                                           options: [.mutableContainers]) as? NSMutableDictionary)
        try dict(try XCTUnwrap(g["images"] as? NSMutableArray)[0])["file"] = "../../outside"
        try JSONSerialization.data(withJSONObject: g, options: [.prettyPrinted]).write(to: goldenURL)
        let m = try manifest()
        let entry = try dict(try dict(m["files"])["golden.json"])
        entry["sha256"] = try XCTUnwrap(Manifest.sha256(goldenURL))
        entry["size_bytes"] = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: goldenURL.path)[.size] as? NSNumber)
        try write(m)
        let b = try DCCLIPBundle.open(copy) // the manifest is consistent: golden.json is what it lists
        var decoded: [URL] = []
        XCTAssertThrowsError(try Classifier.goldenParity(b, Zeros(dim: b.manifest.embedDim), decode: { url in
            decoded.append(url)
            throw BundleError("decoded \(url.path)")
        })) { error in
            XCTAssertTrue("\(error)".contains("golden.json images[0].file"), "\(error)")
            XCTAssertTrue("\(error)".contains("not a relative path inside the bundle"), "\(error)")
        }
        XCTAssertEqual(decoded.count, 0)
    }

    /// JSON errors say where, never what: the text of a broken file is not in the message.
    func testJsonErrorsDoNotEchoTheFile() throws {
        let bad = root.appendingPathComponent("bad.json")
        try Data("{\"a\": 1, \(HostileBundleTests.secret)}".utf8).write(to: bad)
        XCTAssertThrowsError(try JSON.parseFile(bad)) { error in
            XCTAssertTrue("\(error)".contains("is not valid JSON"), "\(error)")
            XCTAssertFalse("\(error)".contains(HostileBundleTests.secret), "\(error)")
        }
    }

    func testTheUntouchedCopyStillOpens() throws {
        let b = try DCCLIPBundle.open(copy)
        let url = try b.manifest.artifactURL(try b.manifest.defaultArtifact("image"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: url.path))
    }
}
