import XCTest
@testable import DCCLIPCore

/// Mirrors ManifestTest.java: the real exported bundle opens; copies made bad one way each are refused.
final class ManifestTests: XCTestCase {
    var copy: URL!

    override func setUpWithError() throws {
        try Golden.require()
        copy = FileManager.default.temporaryDirectory.appendingPathComponent("dcclip-bundle-\(UUID().uuidString)")
        try FileManager.default.copyItem(at: Golden.bundle, to: copy)
    }

    override func tearDownWithError() throws {
        if let copy = copy { try? FileManager.default.removeItem(at: copy) }
    }

    func refusal(_ dir: URL) -> String {
        do {
            _ = try DCCLIPBundle.open(dir)
        } catch {
            return "\(error)"
        }
        XCTFail("the bundle in \(dir.path) was accepted")
        return ""
    }

    func editManifest(_ from: String, _ to: String) throws {
        let url = copy.appendingPathComponent("manifest.json")
        let text = try String(contentsOf: url, encoding: .utf8)
        let range = try XCTUnwrap(text.range(of: from), "manifest contains \(from)")
        try text.replacingCharacters(in: range, with: to).write(to: url, atomically: true, encoding: .utf8)
    }

    func testTheExportedBundleOpens() throws {
        let b = try DCCLIPBundle.open(Golden.bundle)
        XCTAssertTrue(["android", "ios"].contains(b.manifest.target))
        XCTAssertGreaterThan(b.manifest.logitScale, 0)
        XCTAssertEqual(b.tokenizer.contextLength, b.manifest.contextLength)
        XCTAssertEqual(try b.manifest.defaultArtifact("image").tower, "image")
        XCTAssertEqual(try b.manifest.defaultArtifact("text").tower, "text")
        XCTAssertEqual(b.classes?.labelsEn.count, b.classes?.embeddingsZh.count)
        XCTAssertTrue(b.manifest.verifyFiles().isEmpty)
    }

    func testRefusesAFileWhoseSha256DiffersFromTheManifest() throws {
        let url = copy.appendingPathComponent("tokenizer.json")
        var data = try Data(contentsOf: url)
        data[5] ^= 1
        try data.write(to: url)
        let msg = refusal(copy)
        XCTAssertTrue(msg.contains("tokenizer.json: sha256 differs from the manifest"), msg)
        XCTAssertTrue(msg.contains("refusing to load"), msg)
    }

    func testRefusesATruncatedEncoder() throws {
        let file = try Manifest.read(copy).defaultArtifact("image").file
        let url = copy.appendingPathComponent(file)
        var isDir: ObjCBool = false
        FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir)
        let target = isDir.boolValue  // an .mlpackage is a directory: truncate its weights file
            ? try XCTUnwrap(FileManager.default.enumerator(at: url, includingPropertiesForKeys: nil)?
                .compactMap { $0 as? URL }
                .first { (try? $0.resourceValues(forKeys: [.isRegularFileKey]))?.isRegularFile == true
                    && $0.lastPathComponent != "Manifest.json" })
            : url
        let data = try Data(contentsOf: target)
        try data.dropLast().write(to: target)
        let msg = refusal(copy)
        XCTAssertTrue(msg.contains("bytes, the manifest says"), msg)
    }

    func testRefusesMissingAndUnlistedFiles() throws {
        try FileManager.default.removeItem(at: copy.appendingPathComponent("golden.json"))
        try Data([1]).write(to: copy.appendingPathComponent("extra.bin"))
        let msg = refusal(copy)
        XCTAssertTrue(msg.contains("golden.json: listed in the manifest but missing"), msg)
        XCTAssertTrue(msg.contains("extra.bin: in the bundle but not in the manifest"), msg)
    }

    func testRefusesAnUnknownFormatVersion() throws {
        try editManifest("\"format_version\": 1", "\"format_version\": 2")
        XCTAssertTrue(refusal(copy).contains("format_version 2; this app reads 1"))
    }

    func testRefusesAPreprocessingItDoesNotImplement() throws {
        try editManifest("\"shorter_side_bicubic_then_center_crop\"", "\"squash\"")
        XCTAssertTrue(refusal(copy).contains("resize is \"squash\""))
    }

    func testRefusesAManifestMissingAKey() throws {
        try editManifest("\"logit_scale\":", "\"logit_scale_renamed\":")
        XCTAssertTrue(refusal(copy).contains("lacks logit_scale"))
    }

    func testRefusesAMissingOrBrokenManifest() throws {
        try Data("{\"format_version\": 1,".utf8).write(to: copy.appendingPathComponent("manifest.json"))
        XCTAssertTrue(refusal(copy).contains("is not valid JSON"))
        try FileManager.default.removeItem(at: copy.appendingPathComponent("manifest.json"))
        XCTAssertTrue(refusal(copy).contains("does not exist"))
    }

    func testRefusesATokenizerFromAnotherBundle() throws {
        try editManifest("\"context_length\": ", "\"context_length\": 1")
        XCTAssertTrue(refusal(copy).contains("do not belong together"))
    }
}
