import Foundation

/// The two towers as the platform runs them (Core ML in the app); each returns the embedding [embed_dim].
public protocol Encoders {
    func encodeImage(_ pixelsCHW: [Float]) throws -> [Float]
    func encodeText(_ encoding: Tokenizer.Encoding) throws -> [Float]
}

/// Decoded, non-premultiplied RGBA pixels.
public struct Pixels {
    public let rgba: [UInt8]
    public let width: Int, height: Int
    public init(rgba: [UInt8], width: Int, height: Int) {
        self.rgba = rgba
        self.width = width
        self.height = height
    }
}

/// What the demo screen does, without the screen (the Java twin: Classifier.java).
public final class Classifier {
    public struct Answer {
        public let top: [Scoring.Scored]
        public let preprocessMs: Double, imageMs: Double, textMs: Double
        public var totalMs: Double { preprocessMs + imageMs + textMs }
    }

    public let bundle: DCCLIPBundle
    let encoders: Encoders

    public init(bundle: DCCLIPBundle, encoders: Encoders) throws {
        guard bundle.classes != nil else {
            throw BundleError("the bundle in \(bundle.manifest.directory.path) has no class embeddings; export it "
                + "with a label set (python -m lowering.export --labels ... --labels-zh ...)")
        }
        self.bundle = bundle
        self.encoders = encoders
    }

    static func ms(since t: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - t) / 1e6 }

    public func embedText(_ text: String) throws -> [Float] {
        try checked(encoders.encodeText(bundle.tokenizer.encodePadded(text)), "text")
    }

    func checked(_ e: [Float], _ tower: String) throws -> [Float] {
        guard e.count == bundle.manifest.embedDim else {
            throw BundleError("the \(tower) encoder returned \(e.count) values; the manifest's embed_dim is \(bundle.manifest.embedDim)")
        }
        return e
    }

    /// language "en" or "zh"; query: free text ranked among the labels (in quotes), or nil/blank for none.
    public func classify(_ px: Pixels, language: String, query: String?, k: Int = 5) throws -> Answer {
        var t = DispatchTime.now().uptimeNanoseconds
        let x = bundle.preprocessor.preprocess(rgba: px.rgba, width: px.width, height: px.height)
        let pre = Classifier.ms(since: t)
        t = DispatchTime.now().uptimeNanoseconds
        let img = try checked(encoders.encodeImage(x), "image")
        let imageMs = Classifier.ms(since: t)
        var candidates = bundle.classes!.embeddings(language)
        var labels = bundle.classes!.labels(language)
        var textMs = 0.0
        if let q = query?.trimmingCharacters(in: .whitespacesAndNewlines), !q.isEmpty {
            t = DispatchTime.now().uptimeNanoseconds
            candidates.append(try embedText(q))
            textMs = Classifier.ms(since: t)
            labels.append("\u{201C}\(q)\u{201D}")
        }
        let top = Scoring.rank(img, candidates, labels, bundle.manifest.logitScale, k)
        return Answer(top: top, preprocessMs: pre, imageMs: imageMs, textMs: textMs)
    }

    public struct GoldenParity {
        public var imageDevice: [[Float]] = [], imageReference: [[Float]] = []
        public var textDevice: [[Float]] = [], textReference: [[Float]] = []
    }

    /// This device's embeddings of golden.json's inputs (the classifier's encoders) next to PyTorch's.
    public func goldenParity(decode: ((URL) throws -> Pixels)?) throws -> GoldenParity {
        try Classifier.goldenParity(bundle, encoders, decode: decode)
    }

    /// This device's embeddings of golden.json's inputs next to the eager PyTorch student's.
    public static func goldenParity(_ bundle: DCCLIPBundle, _ encoders: Encoders,
                                    decode: ((URL) throws -> Pixels)?) throws -> GoldenParity {
        let m = bundle.manifest
        let g = try JSON.obj(JSON.parseFile(m.url(m.golden, "manifest golden")), m.golden)
        var out = GoldenParity()
        if let decode = decode {
            for (k, o) in try JSON.arr(g["images"], "golden images").enumerated() {
                let img = try JSON.obj(o, "golden image")
                let what = "golden.json images[\(k)].file"
                let px = try decode(m.url(JSON.str(img["file"], what), what))
                out.imageDevice.append(try encoders.encodeImage(
                    bundle.preprocessor.preprocess(rgba: px.rgba, width: px.width, height: px.height)))
                out.imageReference.append(try JSON.floats(img["embedding"], "golden image embedding"))
            }
        }
        for o in try JSON.arr(g["texts"], "golden texts") {
            let t = try JSON.obj(o, "golden text")
            out.textDevice.append(try encoders.encodeText(bundle.tokenizer.encodePadded(JSON.str(t["text"], "golden text"))))
            out.textReference.append(try JSON.floats(t["embedding"], "golden text embedding"))
        }
        return out
    }
}

/// The benchmark mode (the Java twin: DeviceBenchmark.java): every artifact this platform can run, timed,
/// its parity against golden.json, and with labeled images each (image, text) pair's zero-shot accuracy.
public enum DeviceBenchmark {
    public struct Labeled {
        public let url: URL
        public let label: Int
        public init(url: URL, label: Int) { self.url = url; self.label = label }
    }

    /// load: an artifact's encoders, or nil when this platform can't run it (only its tower's method is called).
    public static func run(_ bundle: DCCLIPBundle, load: (Manifest.Artifact) throws -> Encoders?,
                           decode: @escaping (URL) throws -> Pixels, eval: [Labeled], warmup: Int = 5, runs: Int = 50,
                           peakMemory: () -> Int? = { nil }) throws -> [[String: Any]] {
        let m = bundle.manifest
        var loaded: [String: Encoders] = [:]
        for a in m.artifacts { if let e = try load(a) { loaded[a.file] = e } }
        let g = try JSON.obj(JSON.parseFile(m.url(m.golden, "manifest golden")), m.golden)
        let img0 = try JSON.obj(JSON.arr(g["images"], "golden images").first, "golden image")
        let px = try decode(m.url(JSON.str(img0["file"], "golden.json images[0].file"), "golden.json images[0].file"))
        let pixels = bundle.preprocessor.preprocess(rgba: px.rgba, width: px.width, height: px.height)
        let t0 = try JSON.obj(JSON.arr(g["texts"], "golden texts").first, "golden text")
        let ids = bundle.tokenizer.encodePadded(try JSON.str(t0["text"], "text"))

        var accuracyByPair: [String: [String: Any]?] = [:]
        var entries: [[String: Any]] = []
        for a in m.artifacts {
            guard let enc = loaded[a.file] else { continue }
            let image = a.tower == "image"
            let t = try Benchmark.time(warmup: warmup, runs: runs) {
                if image { _ = try enc.encodeImage(pixels) } else { _ = try enc.encodeText(ids) }
            }
            let gp = try Classifier.goldenParity(bundle, enc, decode: image ? decode : nil)
            let parity = image ? Benchmark.parity(gp.imageDevice, gp.imageReference) : Benchmark.parity(gp.textDevice, gp.textReference)
            let pair = "\(a.backend)/\(a.precision)"
            if accuracyByPair[pair] == nil {
                accuracyByPair[pair] = .some(try pairAccuracy(bundle, loaded, a, decode, eval))
            }
            entries.append(Benchmark.entry(a, t, peakMemoryBytes: peakMemory(), accuracy: accuracyByPair[pair] ?? nil, parity: parity))
        }
        return entries
    }

    static func pairAccuracy(_ bundle: DCCLIPBundle, _ loaded: [String: Encoders], _ a: Manifest.Artifact,
                             _ decode: (URL) throws -> Pixels, _ eval: [Labeled]) throws -> [String: Any]? {
        guard !eval.isEmpty, let classes = bundle.classes else { return nil }
        let same = bundle.manifest.artifacts.filter { $0.backend == a.backend && $0.precision == a.precision }
        guard let imageArt = same.first(where: { $0.tower == "image" }), let image = loaded[imageArt.file],
              let textArt = same.first(where: { $0.tower == "text" }), let text = loaded[textArt.file] else { return nil }
        var embeddings: [[Float]] = []
        for e in eval {
            let px = try decode(e.url)
            embeddings.append(try image.encodeImage(bundle.preprocessor.preprocess(rgba: px.rgba, width: px.width, height: px.height)))
        }
        var out: [String: Any] = [:]
        for lang in ["en", "zh"] {
            let templates = classes.templates[lang]!  // checked when the bundle was opened
            let protos = try classes.labels(lang).map { name in
                try Scoring.prototype(templates, name) { try text.encodeText(bundle.tokenizer.encodePadded($0)) }
            }
            let ranks = embeddings.map { Scoring.topK(Scoring.logits($0, protos, 1), 5) }
            out[lang] = Benchmark.accuracy(ranks, eval.map { $0.label })
        }
        return out
    }
}
