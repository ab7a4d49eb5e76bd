import XCTest
@testable import DCCLIPCore

/// Mirrors TokenizerTest.java: the Swift encoder against the Python BilingualTokenizer, id for id.
final class TokenizerTests: XCTestCase {
    override func setUpWithError() throws { try Golden.require() }

    func bundleTokenizer() throws -> Tokenizer {
        try Tokenizer.load(Golden.bundle.appendingPathComponent("tokenizer.json"))
    }

    func testGoldenJsonTextsEncodeExactly() throws {
        let tok = try bundleTokenizer()
        let texts = try Golden.golden()["texts"] as! [[String: Any]]
        XCTAssertGreaterThanOrEqual(texts.count, 2)
        for t in texts {
            let text = t["text"] as! String
            let e = tok.encodePadded(text)
            XCTAssertEqual(e.inputIds, Golden.int64s(t["input_ids"]), text)
            XCTAssertEqual(e.attentionMask, Golden.int64s(t["attention_mask"]), text)
        }
        let langs = Set(texts.map { $0["language"] as! String })
        XCTAssertTrue(langs.contains("en") && langs.contains("zh"))
    }

    func checkCases(_ tok: Tokenizer, _ key: String) {
        var failures: [String] = []
        let cases = Golden.list(key)
        XCTAssertGreaterThan(cases.count, 100)
        for c in cases {
            let text = c["text"] as! String
            let norm = Tokenizer.normalize(text)
            if norm != c["normalized"] as! String {
                failures.append("normalize(\(text.debugDescription)) = \(norm.debugDescription), Python: \((c["normalized"] as! String).debugDescription)")
                continue
            }
            let pieces = tok.pieceIds(text)
            if pieces != Golden.ints(c["pieces"]) {
                failures.append("pieces of \(text.debugDescription) = \(pieces), Python: \(Golden.ints(c["pieces"]))")
                continue
            }
            let e = tok.encodePadded(text)
            if tok.encode(text) != Golden.ints(c["ids"]) || e.inputIds != Golden.int64s(c["input_ids"])
                || e.attentionMask != Golden.int64s(c["attention_mask"]) {
                failures.append("encode(\(text.debugDescription)) differs")
            }
        }
        XCTAssertTrue(failures.isEmpty, "\(failures.count) of \(cases.count) texts differ from Python:\n  "
            + failures.prefix(10).joined(separator: "\n  "))
    }

    func testManyTextsMatchPythonWithTheBundleTokenizer() throws {
        checkCases(try bundleTokenizer(), "tokenizer")
    }

    /// Lone surrogates become U+FFFD before normalization (Python, Java): decoding the UTF-16 code units into a
    /// Swift String already does it, and the ids match Python's (cases.json "tokenizer_surrogates").
    func testLoneSurrogatesBecomeTheReplacementCharacterAsInPython() throws {
        let tok = try bundleTokenizer()
        let cases = Golden.list("tokenizer_surrogates")
        XCTAssertGreaterThanOrEqual(cases.count, 8)
        for c in cases {
            let units = Golden.ints(c["utf16"]).map { UInt16($0) }
            let text = String(decoding: units, as: UTF16.self)
            XCTAssertEqual(Tokenizer.normalize(text), c["normalized"] as? String, "\(units)")
            XCTAssertEqual(tok.encode(text), Golden.ints(c["ids"]), "\(units)")
            XCTAssertEqual(tok.encodePadded(text).inputIds, Golden.int64s(c["input_ids"]), "\(units)")
        }
    }

    func testManyTextsMatchPythonWithALargerVocabulary() throws {
        checkCases(try Tokenizer.load(Golden.dir.appendingPathComponent("stress/tokenizer.json")), "tokenizer_stress")
    }

    /// Mirrors longCorpusSentencesMatchPythonWithACorpusTokenizer (Java): held-apart corpus sentences of every
    /// length, many past the 64-token context, and a sentence per script the corpus holds.
    func testLongCorpusSentencesMatchPythonWithACorpusTokenizer() throws {
        checkCases(try Tokenizer.load(Golden.dir.appendingPathComponent("corpus/tokenizer.json")), "tokenizer_corpus")
        var longHan = 0, longOther = 0
        for c in Golden.list("tokenizer_corpus") {
            let n = Golden.int64s(c["attention_mask"]).reduce(0, +)
            if n < 50 { continue }
            let text = c["text"] as! String
            if text.unicodeScalars.contains(where: { (0x4E00...0x9FFF).contains($0.value) || (0x3400...0x4DBF).contains($0.value) }) {
                longHan += 1
            } else {
                longOther += 1
            }
        }
        XCTAssertGreaterThanOrEqual(longHan, 20)
        XCTAssertGreaterThanOrEqual(longOther, 20)
    }

    func assertCase(_ text: String) throws {
        let tok = try bundleTokenizer()
        let c = Golden.list("tokenizer").first { $0["text"] as? String == text }!
        XCTAssertEqual(tok.encodePadded(text).inputIds, Golden.int64s(c["input_ids"]), text)
    }

    func testEnglish() throws { try assertCase("A Photo Of An ANKLE BOOT!") }
    func testChinese() throws { try assertCase("一辆红色的汽车停在路边。") }
    func testMixed() throws {
        try assertCase("mixed 中英文 caption")
        try assertCase("我爱dogs和cats")
    }

    func testEmojiFallBackToUtf8Bytes() throws {
        try assertCase("a dog 🐶 and a cat 🐱")
        try assertCase("👨\u{200D}👩\u{200D}👧 family")
        let tok = try bundleTokenizer()
        let p = tok.pieceIds("🐶")
        XCTAssertEqual(p.count, 5)
        XCTAssertEqual(tok.piece(p[1]), "<0xF0>")
        XCTAssertEqual(tok.piece(p[4]), "<0xB6>")
    }

    func testFullWidthFoldsToAscii() throws {
        try assertCase("ｔ－ｓｈｉｒｔ")
        let tok = try bundleTokenizer()
        XCTAssertEqual(tok.encode("t-shirt"), tok.encode("ｔ－ｓｈｉｒｔ"))
    }

    func testOverLongTextKeepsBosAndEos() throws {
        let text = String(repeating: "a photo of a t-shirt ", count: 40)
        try assertCase(text)
        let tok = try bundleTokenizer()
        let e = tok.encodePadded(text)
        XCTAssertEqual(e.inputIds.count, tok.contextLength)
        XCTAssertEqual(e.inputIds.first, Int64(tok.bosId))
        XCTAssertEqual(e.inputIds.last, Int64(tok.eosId))
        XCTAssertTrue(e.attentionMask.allSatisfy { $0 == 1 })
    }

    func testEmptyTextIsBosEosThenPadding() throws {
        let tok = try bundleTokenizer()
        let e = tok.encodePadded("  \t ")
        XCTAssertEqual(Array(e.inputIds.prefix(2)), [Int64(tok.bosId), Int64(tok.eosId)])
        XCTAssertTrue(e.inputIds.dropFirst(2).allSatisfy { $0 == Int64(tok.padId) })
        XCTAssertTrue(e.attentionMask.dropFirst(2).allSatisfy { $0 == 0 })
    }

    func testNormalizationRule() {
        XCTAssertEqual(Tokenizer.normalize("  A\t\u{3000}B\n\u{A0} c  "), "a b c")
        XCTAssertEqual(Tokenizer.normalize("ＡＢＣ，１２３"), "abc,123")
        XCTAssertEqual(Tokenizer.normalize(" \u{2028} "), "")
        XCTAssertEqual(Tokenizer.normalize("xΣ8l ΟΔΥΣΣΕΥΣ"), "xς8l οδυσσευς")
    }

    func testRefusesATokenizerItDoesNotImplement() throws {
        let ok = """
        {"format_version":1,"model_type":"unigram","context_length":8,"special_ids":{"pad":0,"unk":1,"bos":2,"eos":3},
        "normalization":{"unicode":"NFKC","lowercase":true,"collapse_whitespace":true,"strip":true},
        "add_dummy_prefix":true,"whitespace_symbol":"\u{2581}","byte_fallback":true,"pieces":[]}
        """
        let bad: [(String, String, String)] = [
            ("\"format_version\":1", "\"format_version\":2", "format_version 2"),
            ("\"model_type\":\"unigram\"", "\"model_type\":\"bpe\"", "model_type"),
            ("\"unicode\":\"NFKC\"", "\"unicode\":\"NFC\"", "normalization"),
            ("\"byte_fallback\":true", "\"byte_fallback\":false", "byte_fallback"),
            ("\"pieces\":[]", "\"pieces\":[]", "no normal pieces"),
        ]
        for (from, to, says) in bad {
            let json = try JSONSerialization.jsonObject(with: Data(ok.replacingOccurrences(of: from, with: to).utf8))
            XCTAssertThrowsError(try Tokenizer(json: json, where_: "t.json")) { e in
                XCTAssertTrue("\(e)".contains(says), "\(e)")
            }
        }
    }
}
