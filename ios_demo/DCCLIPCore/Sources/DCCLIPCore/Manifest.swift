import CryptoKit
import Foundation

/// A bundle's manifest.json (schema: dcclip_mobile/bundle_manifest.py), read and checked as the Java twin
/// (android_demo/core/.../Manifest.java) does: known format version, every required key, a preprocessing
/// this app implements, and (verifyFiles) every listed file present with its size and sha256, none unlisted,
/// no symbolic link.
///
/// The path rule (the same in dcclip_mobile/bundle_manifest.py and Manifest.java): every path the manifest or
/// golden.json names (text.tokenizer.json/model, class_embeddings.file, golden, golden.json's images[].file, each
/// artifact's file) must be a relative path whose "/"-separated segments are neither empty, "." nor ".." (no
/// leading "/", no "\\", no NUL), must be listed in the file table with its sha256 (an .mlpackage directory: the
/// files under it), and must not resolve outside the bundle. `url(_:_:)` checks it before anything is opened;
/// error messages name the manifest's value, never a file's contents.
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
        /// Text artifacts: the lengths the program runs (one, the context length, unless it has buckets).
        public let lengthBuckets: LengthBuckets

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
    public let tokenizerModel: String? // nil when the manifest names none
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
        let context = try JSON.int(JSON.get(text, "context_length", tw), "\(tw) context_length")
        contextLength = context // a local too: the artifacts' closure below may not read self before init ends
        vocabSize = try JSON.int(JSON.get(text, "vocab_size", tw), "\(tw) vocab_size")
        let sp = try JSON.obj(JSON.get(text, "special_ids", tw), "\(tw) special_ids")
        padId = try JSON.int(JSON.get(sp, "pad", tw), "pad")
        unkId = try JSON.int(JSON.get(sp, "unk", tw), "unk")
        bosId = try JSON.int(JSON.get(sp, "bos", tw), "bos")
        eosId = try JSON.int(JSON.get(sp, "eos", tw), "eos")
        let tok = try JSON.obj(JSON.get(text, "tokenizer", tw), "\(tw) tokenizer")
        tokenizerJSON = try JSON.str(JSON.get(tok, "json", tw), "\(tw) tokenizer.json")
        if let model = tok["model"] {
            tokenizerModel = try JSON.str(model, "\(tw) tokenizer.model")
        } else {
            tokenizerModel = nil
        }

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
                output: JSON.obj(JSON.get(a, "output", aw), "\(aw) output"),
                lengthBuckets: LengthBuckets.of(a, contextLength: context, aw))
        }
        var table: [String: (sha256: String, sizeBytes: Int)] = [:]
        for (rel, entry) in try JSON.obj(m["files"], "\(w) files") {
            guard Manifest.isRelativeInside(rel) else {
                throw BundleError("\(w) lists the file \(Manifest.show(rel)), which is outside the bundle")
            }
            let ew = "\(w) files[\(Manifest.show(rel))]"
            let e = try JSON.obj(entry, ew)
            let sha = try JSON.str(JSON.get(e, "sha256", ew), "\(ew) sha256")
            guard sha.count == 64, sha.unicodeScalars.allSatisfy({ "0123456789abcdef".unicodeScalars.contains($0) }) else {
                throw BundleError("\(ew) sha256 must be 64 lowercase hex digits; re-export the bundle")
            }
            let size = try JSON.int(JSON.get(e, "size_bytes", ew), "\(ew) size_bytes")
            guard size >= 0 else { throw BundleError("\(ew) size_bytes is negative; re-export the bundle") }
            table[rel] = (sha256: sha, sizeBytes: size)
        }
        files = table
        // the path rule, for every path the manifest names, before anything is opened
        try checkNamed(tokenizerJSON, "\(w) text.tokenizer.json")
        if let model = tokenizerModel { try checkNamed(model, "\(w) text.tokenizer.model") }
        if let ce = classEmbeddingsFile { try checkNamed(ce, "\(w) class_embeddings.file") }
        try checkNamed(golden, "\(w) golden")
        for (k, a) in artifacts.enumerated() { try checkNamed(a.file, "\(w) artifacts[\(k)].file", directoryOK: true) }
    }

    // MARK: the path rule

    /// A relative path inside the bundle: "/"-separated segments, none empty, "." or "..", no "\\" or NUL.
    public static func isRelativeInside(_ rel: String) -> Bool {
        if rel.isEmpty || rel.hasPrefix("/") || rel.contains("\\") || rel.contains("\u{0}") { return false }
        return rel.split(separator: "/", omittingEmptySubsequences: false).allSatisfy { !$0.isEmpty && $0 != "." && $0 != ".." }
    }

    /// A manifest value for a message: quoted, cut short.
    static func show(_ value: String) -> String {
        let q = JSON.describe(value)
        return q.count <= 120 ? q : String(q.prefix(120)) + "...\""
    }

    private func listed(_ rel: String, directoryOK: Bool) -> Bool {
        files[rel] != nil || (directoryOK && files.keys.contains(where: { $0.hasPrefix(rel + "/") }))
    }

    private func checkNamed(_ rel: String, _ what: String, directoryOK: Bool = false) throws {
        guard Manifest.isRelativeInside(rel) else {
            throw BundleError("\(what) is \(Manifest.show(rel)), which is not a relative path inside the bundle; "
                + "refusing to open it. A bundle names its files as plain relative paths (e.g. \"golden/0.png\")")
        }
        guard listed(rel, directoryOK: directoryOK) else {
            throw BundleError("\(what) is \(Manifest.show(rel)), which the manifest's file table does not list "
                + "with a sha256; refusing to open it. Re-export the bundle with `python -m lowering.export`")
        }
    }

    private func resolve(_ rel: String, _ what: String, directoryOK: Bool) throws -> URL {
        try checkNamed(rel, what, directoryOK: directoryOK)
        let u = directory.appendingPathComponent(rel)
        let root = directory.resolvingSymlinksInPath().standardizedFileURL.path
        let real = u.resolvingSymlinksInPath().standardizedFileURL.path
        guard real.hasPrefix(root.hasSuffix("/") ? root : root + "/") else {
            throw BundleError("\(what) is \(Manifest.show(rel)), which resolves outside the bundle (a symbolic link); "
                + "refusing to open it")
        }
        return u
    }

    public func preprocessor() throws -> ImagePreprocessor {
        try ImagePreprocessor(size: imageSize, mean: mean, std: std)
    }

    /// The one way to a file the manifest or golden.json names (what: where the path came from, for messages):
    /// relative, inside the bundle, listed in the file table with its sha256 and, symbolic links resolved, still
    /// inside the bundle. A BundleError otherwise, before anything is opened.
    public func url(_ rel: String, _ what: String = "the path") throws -> URL {
        try resolve(rel, what, directoryOK: false)
    }

    /// An artifact's file or .mlpackage directory (the files under it are listed), by the path rule.
    public func artifactURL(_ a: Artifact) throws -> URL {
        try resolve(a.file, "artifact \(Manifest.show(a.file))", directoryOK: true)
    }

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
        var links: [String] = []
        if let e = FileManager.default.enumerator(atPath: directory.path) { // relative paths, "/"-separated
            for case let rel as String in e where rel != Manifest.file {
                let u = directory.appendingPathComponent(rel)
                if (try? u.resourceValues(forKeys: [.isSymbolicLinkKey]))?.isSymbolicLink == true {
                    // neither followed nor hashed: it could point anywhere
                    links.append(rel)
                    onDisk[rel] = u
                    e.skipDescendants()
                    continue
                }
                var isDir: ObjCBool = false
                guard FileManager.default.fileExists(atPath: u.path, isDirectory: &isDir), !isDir.boolValue else { continue }
                onDisk[rel] = u
            }
        }
        var problems: [String] = links.sorted().map { "\($0): a symbolic link; a bundle holds regular files only" }
        for rel in files.keys.sorted() where onDisk[rel] == nil { problems.append("\(rel): listed in the manifest but missing") }
        for rel in onDisk.keys.sorted() where files[rel] == nil { problems.append("\(rel): in the bundle but not in the manifest") }
        for rel in files.keys.sorted() {
            guard let u = onDisk[rel], let want = files[rel], !links.contains(rel) else { continue }
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
        let tokenizerURL = try m.url(m.tokenizerJSON, "manifest text.tokenizer.json")
        let tw = tokenizerURL.path
        let tokenizer = try Tokenizer.load(tokenizerURL)
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
            let fileURL = try m.url(file, "manifest class_embeddings.file")
            let w = fileURL.path
            let c = try JSON.obj(JSON.parseFile(fileURL), w)
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
