import Foundation

/// Zero-shot scoring as the Python side does it: unit-normalize, dot product, x logit scale, softmax, top-k.
public enum Scoring {
    public struct Scored {
        public let index: Int
        public let label: String
        public let probability: Float
        public let logit: Float
    }

    /// v / max(||v||, 1e-12), as torch.nn.functional.normalize.
    /// Where a template takes the class name (lowering/scoring.py).
    public static let placeholder = "{c}"

    /// A class's prototype by the bundle's one rule (lowering/scoring.py): the normalized mean of the unit-length
    /// embeddings of the class name in each of the manifest's templates.
    public static func prototype(_ templates: [String], _ name: String, _ embed: (String) throws -> [Float]) rethrows -> [Float] {
        var sum: [Float] = []
        for t in templates {
            let e = normalize(try embed(t.replacingOccurrences(of: placeholder, with: name)))
            sum = sum.isEmpty ? e : zip(sum, e).map { $0 + $1 }
        }
        return normalize(sum.map { $0 / Float(templates.count) })
    }

    public static func normalize(_ v: [Float]) -> [Float] {
        var sq: Float = 0
        for x in v { sq += x * x }
        let norm = max(sq.squareRoot(), 1e-12)
        return v.map { $0 / norm }
    }

    public static func dot(_ a: [Float], _ b: [Float]) -> Float {
        precondition(a.count == b.count, "dimensions differ: \(a.count) vs \(b.count)")
        var s: Float = 0
        for k in 0..<a.count { s += a[k] * b[k] }
        return s
    }

    public static func cosine(_ a: [Float], _ b: [Float]) -> Float { dot(normalize(a), normalize(b)) }

    public static func logits(_ query: [Float], _ candidates: [[Float]], _ logitScale: Float) -> [Float] {
        let q = normalize(query)
        return candidates.map { logitScale * dot(q, normalize($0)) }
    }

    public static func softmax(_ logits: [Float]) -> [Float] {
        let m = logits.max() ?? 0
        let e = logits.map { Float(Foundation.exp(Double($0 - m))) }
        var sum: Float = 0
        for x in e { sum += x }
        return e.map { $0 / sum }
    }

    /// Indices of the k largest scores, largest first; equal scores keep the lower index first.
    public static func topK(_ scores: [Float], _ k: Int) -> [Int] {
        Array(scores.indices.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }.prefix(k))
    }

    public static func rank(_ query: [Float], _ candidates: [[Float]], _ labels: [String], _ logitScale: Float, _ k: Int) -> [Scored] {
        precondition(labels.count == candidates.count, "\(labels.count) labels for \(candidates.count) embeddings")
        let lg = logits(query, candidates, logitScale)
        let p = softmax(lg)
        return topK(p, k).map { Scored(index: $0, label: labels[$0], probability: p[$0], logit: lg[$0]) }
    }
}
