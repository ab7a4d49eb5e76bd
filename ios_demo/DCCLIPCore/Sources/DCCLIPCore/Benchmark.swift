import Foundation

/// The benchmark's measuring and its JSON in the report's entry schema (the Java twin: Benchmark.java), for
/// `python -m lowering.report --device-json`. Latency as lowering/report.py: warm-up, then each run timed;
/// the median, and the p90 as the sorted times' element round(0.9 * (n - 1)).
public enum Benchmark {
    public static let formatVersion = 1
    public static let entryFields = ["name", "tower", "backend", "precision", "size_bytes", "latency_ms_median",
                                     "latency_ms_p90", "peak_memory_bytes", "accuracy", "parity", "source"]

    public struct Timing {
        public let sortedMs: [Double]
        public let medianMs: Double, p90Ms: Double

        public init(_ ms: [Double]) {
            precondition(!ms.isEmpty, "no timed runs")
            sortedMs = ms.sorted()
            let n = sortedMs.count
            medianMs = n % 2 == 1 ? sortedMs[n / 2] : (sortedMs[n / 2 - 1] + sortedMs[n / 2]) / 2
            p90Ms = sortedMs[min(n - 1, Int((0.9 * Double(n - 1)).rounded(.toNearestOrEven)))]
        }
    }

    public static func time(warmup: Int, runs: Int, _ run: () throws -> Void) rethrows -> Timing {
        for _ in 0..<warmup { try run() }
        var ms: [Double] = []
        for _ in 0..<runs {
            let t = DispatchTime.now().uptimeNanoseconds
            try run()
            ms.append(Double(DispatchTime.now().uptimeNanoseconds - t) / 1e6)
        }
        return Timing(ms)
    }

    public static func accuracy(_ rankings: [[Int]], _ labels: [Int]) -> [String: Any] {
        precondition(rankings.count == labels.count, "one ranking per label")
        guard !labels.isEmpty else { return ["top1": NSNull(), "top5": NSNull()] }
        var top1 = 0, top5 = 0
        for (r, label) in zip(rankings, labels) {
            if r.first == label { top1 += 1 }
            if r.prefix(5).contains(label) { top5 += 1 }
        }
        return ["top1": Double(top1) / Double(labels.count), "top5": Double(top5) / Double(labels.count)]
    }

    public static func parity(_ device: [[Float]], _ reference: [[Float]]) -> [String: Any] {
        precondition(device.count == reference.count && !device.isEmpty, "as many device as reference embeddings")
        let cos = zip(device, reference).map { Double(Scoring.cosine($0, $1)) }
        return ["reference": "golden.json (eager PyTorch, fp32)", "n": cos.count,
                "cosine_mean": cos.reduce(0, +) / Double(cos.count), "cosine_min": cos.min()!]
    }

    public static func entry(_ a: Manifest.Artifact, _ t: Timing, peakMemoryBytes: Int?,
                             accuracy: [String: Any]?, parity: [String: Any]?) -> [String: Any] {
        ["name": a.name, "tower": a.tower, "backend": a.backend, "precision": a.precision, "size_bytes": a.sizeBytes,
         "latency_ms_median": t.medianMs, "latency_ms_p90": t.p90Ms,
         "peak_memory_bytes": peakMemoryBytes.map { $0 as Any } ?? NSNull(),
         "accuracy": accuracy.map { $0 as Any } ?? NSNull(), "parity": parity.map { $0 as Any } ?? NSNull(),
         "source": "device"]
    }

    public static func report(device: [String: Any], entries: [[String: Any]]) throws -> Data {
        let r: [String: Any] = ["format_version": formatVersion, "source": "device", "device": device, "artifacts": entries]
        return try JSONSerialization.data(withJSONObject: r, options: [.prettyPrinted, .sortedKeys])
    }
}
