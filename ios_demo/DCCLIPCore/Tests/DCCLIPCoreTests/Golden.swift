import CryptoKit
import Foundation
import XCTest
@testable import DCCLIPCore

/// The vectors lowering/golden.py writes (shared with the Android JVM tests): environment
/// DCCLIP_GOLDEN, default <repo>/android_demo/build/golden. bundle_path[_ios].txt names the exported bundle.
enum Golden {
    static var dir: URL {
        if let env = ProcessInfo.processInfo.environment["DCCLIP_GOLDEN"] { return URL(fileURLWithPath: env) }
        // <repo>/ios_demo/DCCLIPCore/Tests/DCCLIPCoreTests/Golden.swift
        var repo = URL(fileURLWithPath: #filePath)
        for _ in 0..<5 { repo.deleteLastPathComponent() }
        return repo.appendingPathComponent("android_demo/build/golden")
    }

    static func require() throws {
        guard FileManager.default.fileExists(atPath: dir.appendingPathComponent("cases.json").path) else {
            throw XCTSkip("no golden vectors in \(dir.path): run `python3 -m lowering.golden` first")
        }
    }

    /// The iOS bundle when lowering.golden was run with --ios (Core ML packages, int32 ids), else the Android one;
    /// both carry the same tokenizer, golden.json and class embeddings.
    static var bundle: URL {
        let ios = dir.appendingPathComponent("bundle_path_ios.txt")
        let file = FileManager.default.fileExists(atPath: ios.path) ? ios : dir.appendingPathComponent("bundle_path.txt")
        let p = (try? String(contentsOf: file, encoding: .utf8)) ?? ""
        return URL(fileURLWithPath: p.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    static let cases: [String: Any] = {
        let data = try! Data(contentsOf: dir.appendingPathComponent("cases.json"))
        return try! JSONSerialization.jsonObject(with: data) as! [String: Any]
    }()

    static func list(_ key: String) -> [[String: Any]] { cases[key] as! [[String: Any]] }

    static func golden() throws -> [String: Any] {
        try JSON.obj(JSON.parseFile(bundle.appendingPathComponent("golden.json")), "golden.json")
    }

    static func ints(_ o: Any?) -> [Int] { (o as! [NSNumber]).map { $0.intValue } }
    static func int64s(_ o: Any?) -> [Int64] { (o as! [NSNumber]).map { $0.int64Value } }
    static func floats(_ o: Any?) -> [Float] { (o as! [NSNumber]).map { $0.floatValue } }

    static func sha256LittleEndian(_ x: [Float]) -> String {
        var bytes = [UInt8]()
        bytes.reserveCapacity(x.count * 4)
        for v in x {
            let b = v.bitPattern.littleEndian
            bytes += [UInt8(b & 0xFF), UInt8((b >> 8) & 0xFF), UInt8((b >> 16) & 0xFF), UInt8(b >> 24)]
        }
        return SHA256.hash(data: Data(bytes)).map { String(format: "%02x", $0) }.joined()
    }
}
