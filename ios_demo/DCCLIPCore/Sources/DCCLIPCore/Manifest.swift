import CryptoKit
import Foundation

/// A bundle's manifest.json (schema: dcclip_mobile/bundle_manifest.py), read and checked as the Java twin
/// (android_demo/core/.../Manifest.java) does: known format version, every required key, a preprocessing
/// this app implements, and (verifyFiles) every listed file present with its size and sha256, none unlisted.
public final class Manifest {
    public static let formatVersion = 1
    public static let file = "manifest.json"
    static let requiredKeys = ["format_version", "target", "student", "embed_dim", "logit_scale", "image", "text",
                               "artifacts", "default_precision", "parity_gate", "class_embeddings", "golden", "files"]

    public struct Artifact {
        public let tower: String, backend: String, format: String, precision: String, file: String
        public let sizeBytes: Int
        public let isDefault: Bool
        public let inputs: [[String: Any]]
        public let output: [String: Any]

        /// The artifact's name in reports: its file name without the extension.
        public var name: String { (file as NSString).deletingPathExtension }
    }

    public let directory: URL
    public let raw: [String: Any]
    public let target: String
    public let embedDim: Int
    public let logitScale: Float
    public let imageSize: Int
    public let mean: [Double], std: [Double]
    public let contextLength: Int, vocabSize: Int
    public let padId: Int, unkId: Int, bosId: Int, eosId: Int
    public let tokenizerJSON: String
    public let golden: String
    public let classEmbeddingsFile: String?
    public let artifacts: [Artifact]
    public let files: [String: (sha256: String, sizeBytes: Int)]

    /// Read, check, and verify every file's sha256: what the app does before loading anything.
    public static func load(_ bundle: URL) throws -> Manifest {
        let m = try read(bundle)
        let problems = m.verifyFiles()
        if !problems.isEmpty {
            let shown = problems.prefix(5).joined(separator: "; ")
            let more = problems.count > 5 ? "; and \(problems.count - 5) more" : ""
            throw BundleError("bundle \(bundle.path) does not match its manifest; refusing to load it: \(shown)\(more). "
                + "Copy the bundle again exactly as `python -m lowering.export` wrote it.")
        }
        return m
    }

    public static func read(_ bundle: URL) throws -> Manifest {
        let url = bundle.appendingPathComponent(file)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw BundleError("\(url.path) does not exist; a bundle is a directory written by "
                + "`python -m lowering.export` (e.g. OUT/ios)")
        }
        return try Manifest(bundle, JSON.obj(JSON.parseFile(url), url.path), url.path)
    }

    private init(_ dir: URL, _ m: [String: Any], _ w: String) throws {
        directory = dir
        raw = m
        let version = m["format_version"]
        guard let v = version as? NSNumber, !JSON.isBool(version), v.doubleValue == Double(Manifest.formatVersion) else {
            throw BundleError("\(w) has format_version \(JSON.describe(version)); this app reads \(Manifest.formatVersion). "
                + "Re-export the bundle with the dcclip-mobile this app was built with.")
        }
        let missing = Manifest.requiredKeys.filter { m[$0] == nil }
        guard missing.isEmpty else { throw BundleError("\(w) lacks \(missing.joined(separator: ", "))") }

        target = try JSON.str(m["target"], "\(w) target")
        embedDim = try JSON.int(m["embed_dim"], "\(w) embed_dim")
        let scale = Float(try JSON.num(m["logit_scale"], "\(w) logit_scale"))
        guard scale > 0, scale.isFinite else {
            throw BundleError("\(w) logit_scale is \(scale); it must be a positive number")
        }
        logitScale = scale

        let image = try JSON.obj(m["image"], "\(w) image")
        let pw = "\(w) image.preprocess"
        let pre = try JSON.obj(JSON.get(image, "preprocess", "\(w) image"), pw)
        for (key, want) in [("resize", ImagePreprocessor.resizeRule), ("channel_order", "RGB"), ("layout", "NCHW"),
                            ("dtype", "float32"), ("scale", "pixel/255")] {
            let got = try JSON.get(pre, key, pw)
            guard got as? String == want else {
                throw BundleError("\(pw) \(key) is \(JSON.describe(got)); this app implements \"\(want)\"")
            }
        }
        imageSize = try JSON.int(JSON.get(pre, "size", pw), "\(pw) size")
        let meanValues = try JSON.arr(JSON.get(pre, "mean", pw), "\(pw) mean").map { try JSON.num($0, "\(pw) mean") }
        let stdValues = try JSON.arr(JSON.get(pre, "std", pw), "\(pw) std").map { try JSON.num($0, "\(pw) std") }
        guard meanValues.count == 3, stdValues.count == 3 else { throw BundleError("\(pw) mean and std need 3 values (R, G, B)") }
        mean = meanValues
        std = stdValues

        let tw = "\(w) text"
        let text = try JSON.obj(m["text"], tw)
        contextLength = try JSON.int(JSON.get(text, "context_length", tw), "\(tw) context_length")
        vocabSize = try JSON.int(JSON.get(text, "vocab_size", tw), "\(tw) vocab_size")
        let sp = try JSON.obj(JSON.get(text, "special_ids", tw), "\(tw) special_ids")
        padId = try JSON.int(JSON.get(sp, "pad", tw), "pad")
        unkId = try JSON.int(JSON.get(sp, "unk", tw), "unk")
        bosId = try JSON.int(JSON.get(sp, "bos", tw), "bos")
        eosId = try JSON.int(JSON.get(sp, "eos", tw), "eos")
        let tok = try JSON.obj(JSON.get(text, "tokenizer", tw), "\(tw) tokenizer")
        tokenizerJSON = try JSON.str(JSON.get(tok, "json", tw), "\(tw) tokenizer.json")

        golden = try JSON.str(m["golden"], "\(w) golden")
        if let ce = m["class_embeddings"], !(ce is NSNull) {
            classEmbeddingsFile = try JSON.str(JSON.get(JSON.obj(ce, "\(w) class_embeddings"), "file", w), "class_embeddings.file")
        } else {
            classEmbeddingsFile = nil
        }

        artifacts = try JSON.arr(m["artifacts"], "\(w) artifacts").enumerated().map { k, o in
            let aw = "\(w) artifacts[\(k)]"
            let a = try JSON.obj(o, aw)
            return try Artifact(
                tower: JSON.str(JSON.get(a, "tower", aw), "\(aw) tower"),
                backend: JSON.str(JSON.get(a, "backend", aw), "\(aw) backend"),
                format: JSON.str(JSON.get(a, "format", aw), "\(aw) format"),
                precision: JSON.str(JSON.get(a, "precision", aw), "\(aw) precision"),
                file: JSON.str(JSON.get(a, "file", aw), "\(aw) file"),
                sizeBytes: JSON.int(JSON.get(a, "size_bytes", aw), "\(aw) size_bytes"),
                isDefault: (a["default"] as? Bool) == true && JSON.isBool(a["default"]),
                inputs: JSON.arr(JSON.get(a, "inputs", aw), "\(aw) inputs").map { try JSON.obj($0, "\(aw) input") },
                output: JSON.obj(JSON.get(a, "output", aw), "\(aw) output"))
        }
        var table: [String: (sha256: String, sizeBytes: Int)] = [:]
        for (rel, entry) in try JSON.obj(m["files"], "\(w) files") {
            if rel.hasPrefix("/") || rel.contains("\\") || "/\(rel)/".contains("/../") {
                throw BundleError("\(w) lists the file \"\(rel)\", which is outside the bundle")
            }
            let e = try JSON.obj(entry, "\(w) files[\(rel)]")
            let sha = try JSON.str(JSON.get(e, "sha256", rel), "sha256")
            let size = try JSON.int(JSON.get(e, "size_bytes", rel), "size_bytes")
            table[rel] = (sha256: sha, sizeBytes: size)
        }
        files = table
    }

    public func preprocessor() throws -> ImagePreprocessor {
        try ImagePreprocessor(size: imageSize, mean: mean, std: std)
    }

    public func url(_ rel: String) -> URL { directory.appendingPathComponent(rel) }

    /// The artifact the app loads for a tower: the one marked default.
    public func defaultArtifact(_ tower: String) throws -> Artifact {
        guard let a = artifacts.first(where: { $0.isDefault && $0.tower == tower }) else {
            throw BundleError("the manifest in \(directory.path) marks no default \(tower) artifact")
        }
        return a
    }

    // MARK: verification

    /// Problems between the files on disk and the manifest's table (empty when none).
    public func verifyFiles() -> [String] {
        var onDisk: [String: URL] = [:]
        if let e = FileManager.default.enumerator(atPath: directory.path) { // relative paths, "/"-separated
            for case let rel as String in e {
                let u = directory.appendingPathComponent(rel)
                var isDir: ObjCBool = false
                guard FileManager.default.fileExists(atPath: u.path, isDirectory: &isDir), !isDir.boolValue else { continue }
                if rel != Manifest.file { onDisk[rel] = u }
            }
        }
        var problems: [String] = []
        for rel in files.keys.sorted() where onDisk[rel] == nil { problems.append("\(rel): listed in the manifest but missing") }
        for rel in onDisk.keys.sorted() where files[rel] == nil { problems.append("\(rel): in the bundle but not in the manifest") }
        for rel in files.keys.sorted() {
            guard let u = onDisk[rel], let want = files[rel] else { continue }
            let size = (try? u.resourceValues(forKeys: [.fileSizeKey]))?.fileSize ?? -1
            if size != want.sizeBytes {
                problems.append("\(rel): \(size) bytes, the manifest says \(want.sizeBytes)")
            } else if Manifest.sha256(u) != want.sha256 {
                problems.append("\(rel): sha256 differs from the manifest (the file was changed or corrupted)")
            }
        }
        for a in artifacts where files[a.file] == nil && !files.keys.contains(where: { $0.hasPrefix(a.file + "/") }) {
            problems.append("artifact \(a.file): not in the manifest's file table")
        }
        return problems
    }

    public static func sha256(_ url: URL) -> String? {
        guard let h = FileHandle(forReadingAtPath: url.path) else { return nil }
        defer { try? h.close() }
        var hasher = SHA256()
        while true {
            let chunk = h.readData(ofLength: 1 << 20)
            if chunk.isEmpty { break }
            hasher.update(data: chunk)
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }
}

/// An opened bundle: verified manifest, tokenizer, preprocessing, and the label set's class embeddings.
public final class DCCLIPBundle {
    public let manifest: Manifest
    public let tokenizer: Tokenizer
    public let preprocessor: ImagePreprocessor
    public let classes: ClassEmbeddings?

    public struct ClassEmbeddings {
        public let labelsEn: [String], labelsZh: [String]
        public let embeddingsEn: [[Float]], embeddingsZh: [[Float]]
        /// {lang: [template with "{c}", ..]}: the rule the embeddings were built with (lowering/scoring.py)
        public let templates: [String: [String]]

        public func labels(_ language: String) -> [String] { language == "zh" ? labelsZh : labelsEn }
        public func embeddings(_ language: String) -> [[Float]] { language == "zh" ? embeddingsZh : embeddingsEn }
    }

    /// Verify every file against the manifest, then read the tokenizer and the class embeddings.
    public static func open(_ directory: URL) throws -> DCCLIPBundle {
        try DCCLIPBundle(Manifest.load(directory))
    }

    init(_ m: Manifest) throws {
        manifest = m
        let tw = m.url(m.tokenizerJSON).path
        let tokenizer = try Tokenizer.load(m.url(m.tokenizerJSON))
        self.tokenizer = tokenizer
        guard tokenizer.contextLength == m.contextLength else {
            throw BundleError("\(tw) has context_length \(tokenizer.contextLength) but the manifest says "
                + "\(m.contextLength): the two do not belong together")
        }
        guard [tokenizer.padId, tokenizer.unkId, tokenizer.bosId, tokenizer.eosId] == [m.padId, m.unkId, m.bosId, m.eosId] else {
            throw BundleError("\(tw) special ids differ from the manifest's")
        }
        guard tokenizer.vocabSize == m.vocabSize else {
            throw BundleError("\(tw) has \(tokenizer.vocabSize) pieces but the manifest says vocab_size \(m.vocabSize)")
        }
        preprocessor = try m.preprocessor()
        if let file = m.classEmbeddingsFile {
            let w = m.url(file).path
            let c = try JSON.obj(JSON.parseFile(m.url(file)), w)
            func matrix(_ key: String) throws -> [[Float]] {
                try JSON.arr(JSON.get(c, key, w), "\(w) \(key)").map { row in
                    let v = try JSON.floats(row, "\(w) \(key)")
                    guard v.count == m.embedDim else { throw BundleError("\(w) \(key) has a row of \(v.count); embed_dim is \(m.embedDim)") }
                    return v
                }
            }
            let en = try JSON.arr(JSON.get(c, "labels_en", w), w).map { try JSON.str($0, "\(w) labels_en") }
            let zh = try JSON.arr(JSON.get(c, "labels_zh", w), w).map { try JSON.str($0, "\(w) labels_zh") }
            let ee = try matrix("embeddings_en"), ez = try matrix("embeddings_zh")
            guard en.count == zh.count, en.count == ee.count, en.count == ez.count else {
                throw BundleError("\(w) lists \(en.count) English and \(zh.count) Chinese labels with \(ee.count) and \(ez.count) embeddings")
            }
            guard let templates = c["templates"] as? [String: [String]],
                  ["en", "zh"].allSatisfy({ !(templates[$0] ?? []).isEmpty && templates[$0]!.allSatisfy { $0.contains(Scoring.placeholder) } }) else {
                throw BundleError("\(w) templates must map en and zh to non-empty lists of templates with \(Scoring.placeholder); re-export the bundle")
            }
            classes = ClassEmbeddings(labelsEn: en, labelsZh: zh, embeddingsEn: ee, embeddingsZh: ez, templates: templates)
        } else {
            classes = nil
        }
    }
}
