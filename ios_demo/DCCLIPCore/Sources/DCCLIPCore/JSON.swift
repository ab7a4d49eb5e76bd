import Foundation

/// A bundle (manifest, tokenizer, class embeddings, a file) is missing, malformed, or does not match.
public struct BundleError: Error, CustomStringConvertible, LocalizedError {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
    public var errorDescription: String? { message }
}

/// Typed access to JSONSerialization's output, with messages that name the key.
enum JSON {
    static func parse(_ data: Data, _ where_: String) throws -> Any {
        do {
            return try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            throw BundleError("\(where_) is not valid JSON: \(error.localizedDescription)")
        }
    }

    static func parseFile(_ url: URL) throws -> Any {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw BundleError("cannot read \(url.path): \(error.localizedDescription)")
        }
        return try parse(data, url.path)
    }

    static func obj(_ o: Any?, _ w: String) throws -> [String: Any] {
        guard let m = o as? [String: Any] else { throw BundleError("\(w) must be a JSON object") }
        return m
    }

    static func arr(_ o: Any?, _ w: String) throws -> [Any] {
        guard let a = o as? [Any] else { throw BundleError("\(w) must be a JSON array") }
        return a
    }

    static func str(_ o: Any?, _ w: String) throws -> String {
        guard let s = o as? String else { throw BundleError("\(w) must be a string") }
        return s
    }

    static func isBool(_ o: Any?) -> Bool {
        guard let n = o as? NSNumber else { return false }
        return CFGetTypeID(n) == CFBooleanGetTypeID()
    }

    static func num(_ o: Any?, _ w: String) throws -> Double {
        guard let n = o as? NSNumber, !isBool(o) else { throw BundleError("\(w) must be a number") }
        return n.doubleValue
    }

    static func int(_ o: Any?, _ w: String) throws -> Int {
        guard let n = o as? NSNumber, !isBool(o), n.doubleValue == n.doubleValue.rounded(.towardZero) else {
            throw BundleError("\(w) must be an integer")
        }
        return n.intValue
    }

    static func get(_ m: [String: Any], _ key: String, _ w: String) throws -> Any? {
        guard let v = m[key] else { throw BundleError("\(w) lacks \"\(key)\"") }
        return v is NSNull ? nil : v
    }

    static func floats(_ o: Any?, _ w: String) throws -> [Float] {
        try arr(o, w).enumerated().map { Float(try num($0.element, "\(w)[\($0.offset)]")) }
    }

    static func ints(_ o: Any?, _ w: String) throws -> [Int] {
        try arr(o, w).enumerated().map { try int($0.element, "\(w)[\($0.offset)]") }
    }

    static func describe(_ o: Any?) -> String {
        guard let o = o, !(o is NSNull) else { return "null" }
        if let s = o as? String { return "\"\(s)\"" }
        if JSONSerialization.isValidJSONObject([o]),
           let d = try? JSONSerialization.data(withJSONObject: [o], options: [.sortedKeys]),
           let s = String(data: d, encoding: .utf8) { return String(s.dropFirst().dropLast()) }
        return "\(o)"
    }
}
