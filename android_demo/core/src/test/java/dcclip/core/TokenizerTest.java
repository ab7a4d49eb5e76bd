package dcclip.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/** The Java encoder against the Python BilingualTokenizer (golden.json and cases.json), id for id. */
public class TokenizerTest {
    private static Tokenizer bundleTokenizer() {
        return Tokenizer.load(new File(Golden.bundle(), "tokenizer.json"));
    }

    @Test
    public void goldenJsonTextsEncodeExactly() {
        Tokenizer tok = bundleTokenizer();
        List<Object> texts = Json.arr(Golden.golden().get("texts"), "texts");
        assertTrue("golden.json has texts", texts.size() >= 2);
        for (Object o : texts) {
            Map<String, Object> t = Json.obj(o, "text");
            String text = (String) t.get("text");
            Tokenizer.Encoding e = tok.encodePadded(text);
            assertArrayEquals("input_ids of " + text, Golden.longs(t.get("input_ids")), e.inputIds);
            assertArrayEquals("attention_mask of " + text, Golden.longs(t.get("attention_mask")), e.attentionMask);
        }
    }

    @Test
    public void goldenJsonCoversBothLanguages() {
        List<String> langs = new ArrayList<>();
        for (Object o : Json.arr(Golden.golden().get("texts"), "texts")) langs.add((String) Json.obj(o, "t").get("language"));
        assertTrue(langs.contains("en"));
        assertTrue(langs.contains("zh"));
    }

    private static void checkCases(Tokenizer tok, String key) {
        List<String> failures = new ArrayList<>();
        int n = 0;
        for (Object o : Golden.list(key)) {
            Map<String, Object> c = Json.obj(o, key);
            String text = (String) c.get("text");
            n++;
            String norm = Tokenizer.normalize(text);
            if (!norm.equals(c.get("normalized"))) {
                failures.add("normalize(" + Json.write(text) + ") = " + Json.write(norm) + ", Python: " + Json.write(c.get("normalized")));
                continue;
            }
            int[] pieces = tok.pieceIds(text);
            int[] want = Json.ints(c.get("pieces"), "pieces");
            if (!Arrays.equals(pieces, want)) {
                failures.add("pieces of " + Json.write(text) + " = " + Arrays.toString(pieces) + ", Python: " + Arrays.toString(want));
                continue;
            }
            Tokenizer.Encoding e = tok.encodePadded(text);
            if (!Arrays.equals(tok.encode(text), Json.ints(c.get("ids"), "ids"))
                    || !Arrays.equals(e.inputIds, Golden.longs(c.get("input_ids")))
                    || !Arrays.equals(e.attentionMask, Golden.longs(c.get("attention_mask")))) {
                failures.add("encode(" + Json.write(text) + ") differs");
            }
        }
        assertTrue("cases for " + key, n > 100);
        if (!failures.isEmpty()) {
            fail(failures.size() + " of " + n + " texts differ from Python:\n  "
                    + String.join("\n  ", failures.subList(0, Math.min(10, failures.size()))));
        }
    }

    @Test
    public void manyTextsMatchPythonWithTheBundleTokenizer() {
        checkCases(bundleTokenizer(), "tokenizer");
    }

    @Test
    public void manyTextsMatchPythonWithALargerVocabulary() {
        checkCases(Tokenizer.load(new File(Golden.dir(), "stress/tokenizer.json")), "tokenizer_stress");
    }

    /** Held-apart corpus sentences of every length (many past the 64-token context, so truncated) and a
     *  sentence for each script the corpus holds, with a tokenizer trained on the corpus as stage 1 trains it. */
    @Test
    public void longCorpusSentencesMatchPythonWithACorpusTokenizer() {
        checkCases(Tokenizer.load(new File(Golden.dir(), "corpus/tokenizer.json")), "tokenizer_corpus");
        int longHan = 0, longOther = 0;
        for (Object o : Golden.list("tokenizer_corpus")) {
            Map<String, Object> c = Json.obj(o, "tokenizer_corpus");
            long n = 0;
            for (long m : Golden.longs(c.get("attention_mask"))) n += m;
            if (n < 50) continue;
            String text = (String) c.get("text");
            if (text.codePoints().anyMatch(cp -> Character.UnicodeScript.of(cp) == Character.UnicodeScript.HAN)) longHan++;
            else longOther++;
        }
        assertTrue("Chinese cases of 50+ tokens: " + longHan, longHan >= 20);
        assertTrue("English cases of 50+ tokens: " + longOther, longOther >= 20);
    }

    private static Map<String, Object> caseFor(String text) {
        for (Object o : Golden.list("tokenizer")) {
            Map<String, Object> c = Json.obj(o, "case");
            if (text.equals(c.get("text"))) return c;
        }
        throw new AssertionError("no case for " + text);
    }

    private static void assertCase(String text) {
        Tokenizer tok = bundleTokenizer();
        Map<String, Object> c = caseFor(text);
        assertArrayEquals(text, Golden.longs(c.get("input_ids")), tok.encodePadded(text).inputIds);
    }

    @Test
    public void english() {
        assertCase("A Photo Of An ANKLE BOOT!");
    }

    @Test
    public void chinese() {
        assertCase("一辆红色的汽车停在路边。");
    }

    @Test
    public void mixed() {
        assertCase("mixed 中英文 caption");
        assertCase("我爱dogs和cats");
    }

    @Test
    public void emojiFallBackToUtf8Bytes() {
        assertCase("a dog 🐶 and a cat 🐱");
        assertCase("👨\u200d👩\u200d👧 family");
        Tokenizer tok = bundleTokenizer();
        int[] p = tok.pieceIds("🐶");
        // "▁" then the four UTF-8 bytes F0 9F 90 B6
        assertEquals(5, p.length);
        assertEquals("<0xF0>", tok.piece(p[1]));
        assertEquals("<0xB6>", tok.piece(p[4]));
    }

    @Test
    public void fullWidthFoldsToAscii() {
        assertCase("ｔ－ｓｈｉｒｔ");
        Tokenizer tok = bundleTokenizer();
        assertArrayEquals(tok.encode("t-shirt"), tok.encode("ｔ－ｓｈｉｒｔ"));
    }

    @Test
    public void overLongTextKeepsBosAndEos() {
        String text = "a photo of a t-shirt ".repeat(40);
        assertCase(text);
        Tokenizer tok = bundleTokenizer();
        Tokenizer.Encoding e = tok.encodePadded(text);
        assertEquals(tok.contextLength, e.inputIds.length);
        assertEquals(tok.bosId, e.inputIds[0]);
        assertEquals(tok.eosId, e.inputIds[tok.contextLength - 1]);
        for (long m : e.attentionMask) assertEquals(1, m);
    }

    @Test
    public void emptyTextIsBosEosThenPadding() {
        Tokenizer tok = bundleTokenizer();
        Tokenizer.Encoding e = tok.encodePadded("  \t ");
        assertEquals(tok.bosId, e.inputIds[0]);
        assertEquals(tok.eosId, e.inputIds[1]);
        for (int k = 2; k < e.inputIds.length; k++) {
            assertEquals(tok.padId, e.inputIds[k]);
            assertEquals(0, e.attentionMask[k]);
        }
    }

    /** Lone surrogates: each becomes U+FFFD before normalization, in Java as in Python (cases.json). */
    @Test
    public void loneSurrogatesBecomeTheReplacementCharacterAsInPython() {
        Tokenizer tok = bundleTokenizer();
        List<String> failures = new ArrayList<>();
        int n = 0;
        for (Object o : Golden.list("tokenizer_surrogates")) {
            Map<String, Object> c = Json.obj(o, "tokenizer_surrogates");
            int[] units = Json.ints(c.get("utf16"), "utf16");
            char[] chars = new char[units.length];
            for (int k = 0; k < units.length; k++) chars[k] = (char) units[k];
            String text = new String(chars);
            n++;
            if (!Tokenizer.normalize(text).equals(c.get("normalized"))) {
                failures.add("normalize(" + Arrays.toString(units) + ") = " + Json.write(Tokenizer.normalize(text))
                        + ", Python: " + Json.write(c.get("normalized")));
            } else if (!Arrays.equals(tok.encode(text), Json.ints(c.get("ids"), "ids"))
                    || !Arrays.equals(tok.encodePadded(text).inputIds, Golden.longs(c.get("input_ids")))) {
                failures.add("encode(" + Arrays.toString(units) + ") = " + Arrays.toString(tok.encode(text))
                        + ", Python: " + Json.write(c.get("ids")));
            }
        }
        assertTrue("surrogate cases", n >= 8);
        assertTrue(String.join("\n", failures), failures.isEmpty());
        assertArrayEquals(tok.encode("a\uFFFDb"), tok.encode("a\uD800b"));
        assertEquals("ok \uD83D\uDE00", Tokenizer.replaceLoneSurrogates("ok \uD83D\uDE00")); // a valid pair stays
        assertEquals("\uFFFD\uFFFDx", Tokenizer.replaceLoneSurrogates("\uDE00\uD83Dx"));
    }

    @Test
    public void normalizationRule() {
        assertEquals("a b c", Tokenizer.normalize("  A\t\u3000B\n\u00a0 c  "));
        assertEquals("abc,123", Tokenizer.normalize("ＡＢＣ，１２３"));
        assertEquals("", Tokenizer.normalize(" \u2028 "));
    }

    @Test
    public void refusesATokenizerItDoesNotImplement() {
        String ok = "{\"format_version\":1,\"model_type\":\"unigram\",\"context_length\":8,"
                + "\"special_ids\":{\"pad\":0,\"unk\":1,\"bos\":2,\"eos\":3},"
                + "\"normalization\":{\"unicode\":\"NFKC\",\"lowercase\":true,\"collapse_whitespace\":true,\"strip\":true},"
                + "\"add_dummy_prefix\":true,\"whitespace_symbol\":\"\u2581\",\"byte_fallback\":true,\"pieces\":[]}";
        String[][] bad = {
            {"\"format_version\":1", "\"format_version\":2", "format_version 2"},
            {"\"model_type\":\"unigram\"", "\"model_type\":\"bpe\"", "model_type"},
            {"\"unicode\":\"NFKC\"", "\"unicode\":\"NFC\"", "normalization"},
            {"\"byte_fallback\":true", "\"byte_fallback\":false", "byte_fallback"},
        };
        for (String[] b : bad) {
            try {
                Tokenizer.fromJson(ok.replace(b[0], b[1]), "t.json");
                fail("accepted " + b[1]);
            } catch (BundleException e) {
                assertTrue(e.getMessage(), e.getMessage().contains(b[2]));
            }
        }
        try {
            Tokenizer.fromJson(ok, "t.json");
            fail("accepted a tokenizer without pieces");
        } catch (BundleException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("no normal pieces"));
        }
    }
}
