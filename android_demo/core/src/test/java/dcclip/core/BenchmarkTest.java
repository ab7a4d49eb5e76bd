package dcclip.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/** The benchmark JSON: the report's entry schema, statistics as lowering/report.py computes them. */
public class BenchmarkTest {
    @Test
    public void medianAndP90AsTheReportComputesThem() {
        double[] ms = new double[50];
        for (int k = 0; k < 50; k++) ms[k] = 50 - k; // 1..50 in reverse
        Benchmark.Timing t = new Benchmark.Timing(ms);
        assertEquals(25.5, t.medianMs, 0);
        assertEquals(45.0, t.p90Ms, 0); // sorted[round(0.9 * 49)] = sorted[44]
        Benchmark.Timing odd = new Benchmark.Timing(new double[] {3, 1, 2});
        assertEquals(2.0, odd.medianMs, 0);
        assertEquals(3.0, odd.p90Ms, 0);
    }

    @Test
    public void timesEveryRunAfterWarmup() {
        int[] calls = {0};
        Benchmark.Timing t = Benchmark.time(() -> calls[0]++, 3, 7);
        assertEquals(10, calls[0]);
        assertEquals(7, t.sortedMs.length);
    }

    @Test
    public void accuracyAndParity() {
        List<int[]> ranks = Arrays.asList(new int[] {1, 2, 3, 4, 5, 6}, new int[] {0, 1, 2, 3, 4, 5}, new int[] {9, 8, 7, 6, 5, 4});
        Map<String, Object> acc = Benchmark.accuracy(ranks, new int[] {1, 3, 5});
        assertEquals(1.0 / 3, (Double) acc.get("top1"), 1e-12);
        assertEquals(1.0, (Double) acc.get("top5"), 1e-12);
        Map<String, Object> par = Benchmark.parity(Arrays.asList(new float[] {1, 0}, new float[] {0, 2}),
                Arrays.asList(new float[] {2, 0}, new float[] {1, 1}));
        assertEquals(1.0, (Double) par.get("cosine_mean") * 2 - Math.sqrt(0.5), 1e-6);
        assertEquals(Math.sqrt(0.5), (Double) par.get("cosine_min"), 1e-6);
    }

    /** Writes build/device_report_sample.json, which tests/test_apps_jvm.py feeds to lowering.report's reader. */
    @Test
    public void reportHasTheEntrySchemaAndParsesBack() throws Exception {
        Manifest m = Manifest.read(Golden.bundle());
        List<Map<String, Object>> entries = new ArrayList<>();
        for (Manifest.Artifact a : m.artifacts) {
            Map<String, Object> acc = new LinkedHashMap<>();
            acc.put("en", Benchmark.accuracy(Arrays.asList(new int[] {0}), new int[] {0}));
            acc.put("zh", Benchmark.accuracy(Arrays.asList(new int[] {1}), new int[] {0}));
            entries.add(Benchmark.entry(a, new Benchmark.Timing(new double[] {2.5, 1.5, 3.5}), 12345L, acc,
                    Benchmark.parity(Arrays.asList(new float[] {1, 0}), Arrays.asList(new float[] {1, 0}))));
        }
        Map<String, Object> device = new LinkedHashMap<>();
        device.put("model", "JVM test");
        device.put("threads", 2L);
        String json = Benchmark.report(device, entries);
        Map<String, Object> r = Json.obj(Json.parse(json), "report");
        assertEquals(1L, r.get("format_version"));
        List<Object> arts = Json.arr(r.get("artifacts"), "artifacts");
        assertEquals(m.artifacts.size(), arts.size());
        Map<String, Object> e = Json.obj(arts.get(0), "entry");
        assertEquals(Arrays.asList(Benchmark.ENTRY_FIELDS), new ArrayList<>(e.keySet()));
        assertEquals(m.artifacts.get(0).name(), e.get("name"));
        assertEquals(2.5, (Double) e.get("latency_ms_median"), 0);
        assertEquals("device", e.get("source"));
        Map<String, Object> zh = Json.obj(Json.obj(e.get("accuracy"), "acc").get("zh"), "zh");
        assertEquals(0.0, (Double) zh.get("top1"), 0);
        File out = new File(Golden.dir(), "device_report_sample.json");
        Files.write(out.toPath(), json.getBytes(StandardCharsets.UTF_8));
    }

    @Test
    public void emptyAccuracyIsNull() {
        Map<String, Object> acc = Benchmark.accuracy(new ArrayList<>(), new int[0]);
        assertNull(acc.get("top1"));
    }

    @Test
    public void jsonRoundTrip() {
        String text = "{\"a\": [1, -2.5e-3, true, false, null, \"\\u4e2d\\ud83d\\udc36\\n\"], \"b\": {}, \"c\": NaN,"
                + " \"d\": -Infinity, \"big\": 123456789012345678901234567890}";
        Map<String, Object> m = Json.obj(Json.parse(text), "t");
        List<Object> a = Json.arr(m.get("a"), "a");
        assertEquals(1L, a.get(0));
        assertEquals(-2.5e-3, (Double) a.get(1), 0);
        assertEquals("中🐶\n", a.get(5));
        assertTrue(Double.isNaN((Double) m.get("c")));
        assertEquals(Double.NEGATIVE_INFINITY, (Double) m.get("d"), 0);
        assertTrue(m.get("big") instanceof Double);
        Map<String, Object> back = Json.obj(Json.parse(Json.write(m)), "back");
        assertEquals(a, back.get("a"));
        for (String bad : new String[] {"{", "[1,]", "{\"a\" 1}", "\"x", "01x", "[1] 2"}) {
            try {
                Json.parse(bad);
                throw new AssertionError("parsed " + bad);
            } catch (IllegalArgumentException expected) {
                assertTrue(expected.getMessage().startsWith("invalid JSON"));
            }
        }
    }
}
