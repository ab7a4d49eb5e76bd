import Foundation

/// The bundle's bilingual SentencePiece tokenizer, from its tokenizer.json, reproducing
/// `dcclip_mobile.tokenizer.BilingualTokenizer` id for id (the Java twin: android_demo/core/.../Tokenizer.java):
///  0. lone surrogates become U+FFFD (the one rule of every port, tokenizer.json "lone_surrogates"): a Swift String
///     cannot hold one, and decoding UTF-16 (String(decoding:as: UTF16.self)) already applies the rule;
///  1. normalize: NFKC, Python's `str.lower()` (final sigma decided as Python does), Python's `\s` runs to
///     one space, strip;
///  2. SentencePiece (identity rule): "▁" before the text, every space to "▁";
///  3. unigram segmentation as SentencePiece's optimized encoder: float32 path scores, a strictly better score
///     replaces, candidates by start position then length, an unknown node (min_score - 10) for a character
///     no piece of its own length covers;
///  4. byte fallback: an unknown character becomes the `<0xAB>` pieces of its UTF-8 bytes;
///  5. BOS + the first context_length-2 pieces + EOS, padded with the pad id; mask 1 on real tokens.
public final class Tokenizer {
    public static let formatVersion = 1
    static let unkPenalty: Float = 10.0
    static let whitespaceSymbol: Unicode.Scalar = "\u{2581}"
    /// What Python's re `\s` (str.isspace) matches.
    static let pythonWhitespace: Set<UInt32> = [
        0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680,
        0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a,
        0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
    ]

    final class Node {
        var next: [UInt32: Node] = [:]
        var id: Int = -1
    }

    public struct Encoding {
        public let inputIds: [Int64]
        public let attentionMask: [Int64]
    }

    public let contextLength: Int
    public let padId: Int, unkId: Int, bosId: Int, eosId: Int
    public let vocabSize: Int
    private var scores: [Float] = []
    private var pieces: [String] = []
    private var byteIds = [Int](repeating: -1, count: 256)
    private let trie = Node()
    private var unkScore: Float = 0

    public static func load(_ url: URL) throws -> Tokenizer {
        try Tokenizer(json: JSON.parseFile(url), where_: url.path)
    }

    public init(json: Any, where_ w: String) throws {
        let m = try JSON.obj(json, w)
        let version = try JSON.int(JSON.get(m, "format_version", w), "\(w) format_version")
        guard version == Tokenizer.formatVersion else {
            throw BundleError("\(w) has format_version \(version); this app reads \(Tokenizer.formatVersion). "
                + "Re-export the bundle with a matching dcclip-mobile.")
        }
        guard try JSON.get(m, "model_type", w) as? String == "unigram" else {
            throw BundleError("\(w) has model_type \(JSON.describe(m["model_type"])); this app implements \"unigram\"")
        }
        for key in ["add_dummy_prefix", "byte_fallback"] {
            let v = try JSON.get(m, key, w)
            guard JSON.isBool(v), (v as? Bool) == true else {
                throw BundleError("\(w) has \(key) = \(JSON.describe(v)); this app implements true")
            }
        }
        guard try JSON.get(m, "whitespace_symbol", w) as? String == "\u{2581}" else {
            throw BundleError("\(w) has whitespace_symbol \(JSON.describe(m["whitespace_symbol"])); this app implements \"\u{2581}\"")
        }
        let norm = try JSON.obj(JSON.get(m, "normalization", w), "\(w) normalization")
        guard norm.count == 4, norm["unicode"] as? String == "NFKC",
              JSON.isBool(norm["lowercase"]), norm["lowercase"] as? Bool == true,
              JSON.isBool(norm["collapse_whitespace"]), norm["collapse_whitespace"] as? Bool == true,
              JSON.isBool(norm["strip"]), norm["strip"] as? Bool == true else {
            throw BundleError("\(w) states normalization \(JSON.describe(norm)); this app implements "
                + "{\"unicode\":\"NFKC\",\"lowercase\":true,\"collapse_whitespace\":true,\"strip\":true}")
        }
        contextLength = try JSON.int(JSON.get(m, "context_length", w), "\(w) context_length")
        guard contextLength >= 2 else {
            throw BundleError("\(w) context_length is \(contextLength); it must be >= 2 (BOS and EOS)")
        }
        let sp = try JSON.obj(JSON.get(m, "special_ids", w), "\(w) special_ids")
        padId = try JSON.int(JSON.get(sp, "pad", w), "pad")
        unkId = try JSON.int(JSON.get(sp, "unk", w), "unk")
        bosId = try JSON.int(JSON.get(sp, "bos", w), "bos")
        eosId = try JSON.int(JSON.get(sp, "eos", w), "eos")

        let list = try JSON.arr(JSON.get(m, "pieces", w), "\(w) pieces")
        vocabSize = list.count
        var minScore = Float.greatestFiniteMagnitude
        var anyNormal = false
        for (id, o) in list.enumerated() {
            let pw = "\(w) pieces[\(id)]"
            let p = try JSON.obj(o, pw)
            let piece = try JSON.str(JSON.get(p, "piece", pw), "\(pw) piece")
            let type = try JSON.str(JSON.get(p, "type", pw), "\(pw) type")
            let score = Float(try JSON.num(JSON.get(p, "score", pw), "\(pw) score"))
            pieces.append(piece)
            scores.append(score)
            switch type {
            case "normal":
                anyNormal = true
                minScore = min(minScore, score)
                insert(piece, id)
            case "byte":
                guard let b = Tokenizer.parseBytePiece(piece) else {
                    throw BundleError("\(pw) is a byte piece spelled \"\(piece)\", not <0xAB>")
                }
                byteIds[b] = id
            case "control", "unknown", "unused":
                break
            default:
                throw BundleError("\(pw) has type \"\(type)\"; known: normal, byte, control, unknown, unused")
            }
        }
        guard anyNormal else { throw BundleError("\(w) has no normal pieces") }
        if let missing = byteIds.firstIndex(of: -1) {
            throw BundleError("\(w) lacks the byte piece <0x\(String(format: "%02X", missing))>; byte fallback needs all 256")
        }
        for id in [padId, unkId, bosId, eosId] where id < 0 || id >= vocabSize {
            throw BundleError("\(w) special id \(id) is outside the vocabulary")
        }
        unkScore = minScore - Tokenizer.unkPenalty
    }

    static func parseBytePiece(_ p: String) -> Int? {
        guard p.unicodeScalars.count == 6, p.hasPrefix("<0x"), p.hasSuffix(">") else { return nil }
        return Int(String(p.unicodeScalars.dropFirst(3).prefix(2).map(Character.init)), radix: 16)
    }

    private func insert(_ piece: String, _ id: Int) {
        var n = trie
        for u in piece.unicodeScalars {
            if let next = n.next[u.value] { n = next } else {
                let next = Node()
                n.next[u.value] = next
                n = next
            }
        }
        if n.id < 0 { n.id = id }
    }

    public func piece(_ id: Int) -> String { pieces[id] }

    // MARK: normalization

    /// The normalization rule of tokenizer.json: NFKC, lower case, whitespace runs to one space, strip.
    public static func normalize(_ text: String) -> String {
        let lowered = pythonLower(text.precomposedStringWithCompatibilityMapping)
        var out = String.UnicodeScalarView()
        var pendingSpace = false
        for u in lowered.unicodeScalars {
            if pythonWhitespace.contains(u.value) {
                pendingSpace = !out.isEmpty
            } else {
                if pendingSpace { out.append(" ") }
                pendingSpace = false
                out.append(u)
            }
        }
        return String(out)
    }

    /// Python's str.lower(): each scalar's full lower-case mapping; capital sigma is final sigma when a cased
    /// scalar precedes it and none follows (case-ignorable scalars skipped both ways).
    static func pythonLower(_ s: String) -> String {
        let u = Array(s.unicodeScalars)
        var out = String.UnicodeScalarView()
        for i in 0..<u.count {
            if u[i].value == 0x3A3 {
                out.append(isFinalSigma(u, i) ? "\u{3C2}" : "\u{3C3}")
            } else {
                out.append(contentsOf: u[i].properties.lowercaseMapping.unicodeScalars)
            }
        }
        return String(out)
    }

    static func isFinalSigma(_ u: [Unicode.Scalar], _ i: Int) -> Bool {
        var j = i - 1
        while j >= 0 && u[j].properties.isCaseIgnorable { j -= 1 }
        guard j >= 0 && u[j].properties.isCased else { return false }
        var k = i + 1
        while k < u.count && u[k].properties.isCaseIgnorable { k += 1 }
        return k == u.count || !u[k].properties.isCased
    }

    // MARK: segmentation

    /// The piece ids of a text, untruncated, without BOS/EOS: SentencePiece's encode of normalize(text).
    public func pieceIds(_ text: String) -> [Int] {
        let norm = Tokenizer.normalize(text)
        if norm.isEmpty { return [] }
        var cps: [Unicode.Scalar] = [Tokenizer.whitespaceSymbol]
        for u in norm.unicodeScalars { cps.append(u == " " ? Tokenizer.whitespaceSymbol : u) }
        let n = cps.count
        var best = [Float](repeating: 0, count: n + 1)
        var startsAt = [Int](repeating: -1, count: n + 1)
        var idAt = [Int](repeating: 0, count: n + 1)
        for start in 0..<n {
            let here = best[start]
            var hasSingle = false
            var node = trie
            var end = start
            while end < n, let next = node.next[cps[end].value] {
                node = next
                if node.id >= 0 {
                    let cand = scores[node.id] + here
                    let pos = end + 1
                    if startsAt[pos] == -1 || cand > best[pos] {
                        best[pos] = cand
                        startsAt[pos] = start
                        idAt[pos] = node.id
                    }
                    if end == start { hasSingle = true }
                }
                end += 1
            }
            if !hasSingle {
                let cand = unkScore + here
                let pos = start + 1
                if startsAt[pos] == -1 || cand > best[pos] {
                    best[pos] = cand
                    startsAt[pos] = start
                    idAt[pos] = unkId
                }
            }
        }
        var rev: [Int] = []
        var end = n
        while end > 0 {
            let start = startsAt[end]
            if idAt[end] == unkId {
                var s = String.UnicodeScalarView()
                s.append(contentsOf: cps[start..<end])
                for b in String(s).utf8.reversed() { rev.append(byteIds[Int(b)]) }
            } else {
                rev.append(idAt[end])
            }
            end = start
        }
        return rev.reversed()
    }

    /// BOS + pieces + EOS, truncated to context_length (truncation drops pieces, never EOS); unpadded.
    public func encode(_ text: String) -> [Int] {
        let p = pieceIds(text)
        return [bosId] + p.prefix(contextLength - 2) + [eosId]
    }

    /// encode() padded to context_length with the pad id, and its attention mask.
    public func encodePadded(_ text: String) -> Encoding {
        let row = encode(text)
        var ids = [Int64](repeating: Int64(padId), count: contextLength)
        var mask = [Int64](repeating: 0, count: contextLength)
        for (k, id) in row.enumerated() {
            ids[k] = Int64(id)
            mask[k] = 1
        }
        return Encoding(inputIds: ids, attentionMask: mask)
    }
}
