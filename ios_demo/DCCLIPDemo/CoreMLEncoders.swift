import CoreML
import DCCLIPCore
import Foundation

/// The bundle's Core ML packages as the two towers. Input names, shapes and dtypes come from the manifest
/// (iOS bundles take int32 ids: Core ML has no int64 inputs); the output is the manifest's "embedding".
final class CoreMLEncoders: Encoders {
    private let image: (MLModel, Manifest.Artifact)?
    private let text: (MLModel, Manifest.Artifact)?
    private let manifest: Manifest

    init(_ manifest: Manifest, image: Manifest.Artifact?, text: Manifest.Artifact?) throws {
        self.manifest = manifest
        self.image = try image.map { (try CoreMLEncoders.load(manifest, $0, tower: "image"), $0) }
        self.text = try text.map { (try CoreMLEncoders.load(manifest, $0, tower: "text"), $0) }
    }

    /// The manifest's default pair.
    static func defaults(_ m: Manifest) throws -> CoreMLEncoders {
        try CoreMLEncoders(m, image: m.defaultArtifact("image"), text: m.defaultArtifact("text"))
    }

    /// One tower of one artifact for the benchmark; nil for what this app cannot run (.pte files need the
    /// ExecuTorch iOS runtime, which this demo does not link).
    static func forArtifact(_ m: Manifest, _ a: Manifest.Artifact) throws -> CoreMLEncoders? {
        guard a.format == "mlpackage" else { return nil }
        return a.tower == "image" ? try CoreMLEncoders(m, image: a, text: nil) : try CoreMLEncoders(m, image: nil, text: a)
    }

    private static func load(_ m: Manifest, _ a: Manifest.Artifact, tower: String) throws -> MLModel {
        guard a.tower == tower, a.format == "mlpackage" else {
            throw BundleError("\(a.file) is a \(a.tower) \(a.format) artifact; expected a \(tower) .mlpackage")
        }
        let want = tower == "image" ? ["float32"] : ["int32", "int32"]
        let got = a.inputs.map { $0["dtype"] as? String ?? "?" }
        guard got == want else { throw BundleError("\(a.file) takes inputs of dtype \(got); this app feeds \(want)") }
        let compiled = try MLModel.compileModel(at: m.artifactURL(a)) // the path rule: inside the bundle, listed
        let config = MLModelConfiguration()
        config.computeUnits = .all
        return try MLModel(contentsOf: compiled, configuration: config)
    }

    private static func array(_ shape: [Int], _ type: MLMultiArrayDataType) throws -> MLMultiArray {
        try MLMultiArray(shape: shape.map { NSNumber(value: $0) }, dataType: type)
    }

    private func run(_ model: MLModel, _ a: Manifest.Artifact, _ inputs: [MLMultiArray]) throws -> [Float] {
        var features: [String: MLFeatureValue] = [:]
        for (spec, x) in zip(a.inputs, inputs) { features[spec["name"] as! String] = MLFeatureValue(multiArray: x) }
        let out = try model.prediction(from: MLDictionaryFeatureProvider(dictionary: features))
        let name = a.output["name"] as? String ?? "embedding"
        guard let y = out.featureValue(for: name)?.multiArrayValue else {
            throw BundleError("\(a.file) produced no multi-array output named \(name)")
        }
        return (0..<y.count).map { y[$0].floatValue } // float16 or float32, as the package computes
    }

    func encodeImage(_ pixelsCHW: [Float]) throws -> [Float] {
        guard let loaded = image else { throw BundleError("no image encoder loaded") }
        let (model, a) = loaded
        let s = manifest.imageSize
        let x = try CoreMLEncoders.array([1, 3, s, s], .float32)
        let p = x.dataPointer.bindMemory(to: Float.self, capacity: pixelsCHW.count)
        for k in 0..<pixelsCHW.count { p[k] = pixelsCHW[k] }
        return try run(model, a, [x])
    }

    func encodeText(_ encoding: Tokenizer.Encoding) throws -> [Float] {
        guard let loaded = text else { throw BundleError("no text encoder loaded") }
        let (model, a) = loaded
        let n = encoding.inputIds.count
        let ids = try CoreMLEncoders.array([1, n], .int32), mask = try CoreMLEncoders.array([1, n], .int32)
        let pi = ids.dataPointer.bindMemory(to: Int32.self, capacity: n)
        let pm = mask.dataPointer.bindMemory(to: Int32.self, capacity: n)
        for k in 0..<n {
            pi[k] = Int32(encoding.inputIds[k])
            pm[k] = Int32(encoding.attentionMask[k])
        }
        return try run(model, a, [ids, mask])
    }
}
