import Foundation

/// A text artifact's length buckets (manifest artifacts[].length_buckets): the program holds one method per
/// length, "forward" at the context length and "forward_<L>" below it, sharing one copy of the weights. A text
/// runs through the shortest bucket that holds its tokens, its ids and mask cut to that length. The same rule as
/// lowering.encoders.shortest_bucket / used_length in Python and LengthBuckets.java on Android. Core ML packages
/// carry no buckets: they take the context length.
public struct LengthBuckets {
    public let lengths: [Int] // rising; the last is the context length

    public struct Choice {
        public let length: Int
        public let method: String
        public let inputIds: [Int64]
        public let attentionMask: [Int64]
    }

    /// The artifact's buckets; an artifact without the key has one, the context length in "forward".
    static func of(_ artifact: [String: Any], contextLength: Int, _ w: String) throws -> LengthBuckets {
        guard let raw = artifact["length_buckets"], !(raw is NSNull) else { return LengthBuckets(lengths: [contextLength]) }
        let expected = BundleError("\(w) length_buckets must be a list of {\"length\", \"method\"} with lengths rising "
            + "to the context length \(contextLength) and methods named \"forward_<length>\" (\"forward\" for the "
            + "context length); re-export the bundle")
        guard let list = raw as? [Any], !list.isEmpty else { throw expected }
        var out: [Int] = []
        for item in list {
            guard let b = item as? [String: Any], let n = b["length"] as? NSNumber, !JSON.isBool(b["length"]),
                  n.doubleValue == n.doubleValue.rounded(.towardZero), let method = b["method"] as? String else {
                throw expected
            }
            let length = n.intValue
            guard length >= 1, length <= contextLength, out.last.map({ length > $0 }) ?? true,
                  method == methodName(length, contextLength) else { throw expected }
            out.append(length)
        }
        guard out.last == contextLength else { throw expected }
        return LengthBuckets(lengths: out)
    }

    static func methodName(_ length: Int, _ contextLength: Int) -> String {
        length == contextLength ? "forward" : "forward_\(length)"
    }

    /// Positions a right-padded text uses: up to its last mask 1 (1 for a text with none).
    public static func usedLength(_ mask: [Int64]) -> Int {
        guard let last = mask.lastIndex(where: { $0 != 0 }) else { return 1 }
        return last + 1
    }

    public func pick(_ e: Tokenizer.Encoding) throws -> Choice {
        let context = lengths[lengths.count - 1]
        guard e.inputIds.count == context, e.attentionMask.count == context else {
            throw BundleError("a text encoding of \(e.inputIds.count) ids; this artifact takes \(context) (encodePadded)")
        }
        let used = LengthBuckets.usedLength(e.attentionMask)
        let length = lengths.first(where: { used <= $0 }) ?? context
        return Choice(length: length, method: LengthBuckets.methodName(length, context),
                      inputIds: Array(e.inputIds.prefix(length)), attentionMask: Array(e.attentionMask.prefix(length)))
    }
}
