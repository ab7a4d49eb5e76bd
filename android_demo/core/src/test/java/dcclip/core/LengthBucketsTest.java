package dcclip.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.util.Map;
import org.junit.Test;

/** Picking a text's length bucket, and refusing length_buckets that do not follow the manifest's rule. */
public class LengthBucketsTest {
    private static final String THREE = "{\"length_buckets\": [{\"length\": 16, \"method\": \"forward_16\"}, "
            + "{\"length\": 32, \"method\": \"forward_32\"}, {\"length\": 64, \"method\": \"forward\"}]}";

    @SuppressWarnings("unchecked")
    private static LengthBuckets parse(String json, int context) {
        return LengthBuckets.of((Map<String, Object>) Json.parse(json), context, "artifacts[1]");
    }

    private static Tokenizer.Encoding encoding(int tokens, int context) {
        long[] ids = new long[context], mask = new long[context];
        for (int k = 0; k < tokens; k++) {
            ids[k] = 100 + k;
            mask[k] = 1;
        }
        return new Tokenizer.Encoding(ids, mask);
    }

    @Test
    public void aTextRunsInTheShortestBucketThatHoldsIt() {
        LengthBuckets b = parse(THREE, 64);
        assertArrayEquals(new int[] {16, 32, 64}, b.lengths());
        int[][] cases = {{0, 16}, {1, 16}, {10, 16}, {16, 16}, {17, 32}, {32, 32}, {33, 64}, {64, 64}};
        for (int[] c : cases) {
            LengthBuckets.Choice choice = b.pick(encoding(c[0], 64));
            assertEquals("tokens " + c[0], c[1], choice.length);
            assertEquals(c[1] == 64 ? "forward" : "forward_" + c[1], choice.method);
            assertEquals(c[1], choice.inputIds.length);
            assertEquals(c[1], choice.attentionMask.length);
            if (c[0] > 0) assertEquals(100 + c[0] - 1, choice.inputIds[c[0] - 1]);
        }
    }

    @Test
    public void anArtifactWithoutBucketsRunsTheContextInForward() {
        LengthBuckets b = parse("{}", 64);
        LengthBuckets.Choice c = b.pick(encoding(5, 64));
        assertEquals(64, c.length);
        assertEquals("forward", c.method);
    }

    @Test
    public void theUsedLengthEndsAtTheLastMaskOne() {
        assertEquals(1, LengthBuckets.usedLength(new long[] {0, 0, 0}));
        assertEquals(3, LengthBuckets.usedLength(new long[] {1, 0, 1, 0}));
    }

    @Test
    public void refusesBucketsThatBreakTheRule() {
        String[] bad = {
            "{\"length_buckets\": []}",
            "{\"length_buckets\": 16}",
            "{\"length_buckets\": [{\"length\": 16, \"method\": \"forward_16\"}]}",  // no context bucket
            "{\"length_buckets\": [{\"length\": 32, \"method\": \"forward_32\"}, {\"length\": 16, \"method\": \"forward_16\"}, "
                + "{\"length\": 64, \"method\": \"forward\"}]}",  // not rising
            "{\"length_buckets\": [{\"length\": 16, \"method\": \"../../forward\"}, {\"length\": 64, \"method\": \"forward\"}]}",
            "{\"length_buckets\": [{\"length\": 0, \"method\": \"forward_0\"}, {\"length\": 64, \"method\": \"forward\"}]}",
            "{\"length_buckets\": [{\"length\": 128, \"method\": \"forward_128\"}]}",
            "{\"length_buckets\": [{\"length\": \"16\", \"method\": \"forward_16\"}, {\"length\": 64, \"method\": \"forward\"}]}",
        };
        for (String json : bad) {
            try {
                parse(json, 64);
                fail("accepted " + json);
            } catch (BundleException e) {
                assertTrue(e.getMessage(), e.getMessage().contains("artifacts[1] length_buckets"));
            }
        }
    }

    @Test
    public void theExportedTextArtifactNamesItsBuckets() {
        Manifest m = Manifest.load(Golden.bundle());
        Manifest.Artifact text = m.defaultArtifact("text");
        int[] lengths = text.lengthBuckets.lengths();
        assertEquals(m.contextLength, lengths[lengths.length - 1]);
        assertTrue("the Android text .pte carries length_buckets", text.raw.containsKey("length_buckets"));
    }
}
