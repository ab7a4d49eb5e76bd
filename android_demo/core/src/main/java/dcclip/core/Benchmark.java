package dcclip.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The benchmark mode's measuring and its JSON, in the report's entry schema, so that
 * {@code python -m lowering.report --bundle B --device-json FILE} merges what the phone measured:
 *
 * <pre>
 * {"format_version": 1, "source": "device", "device": {...},
 *  "artifacts": [{"name", "tower", "backend", "precision", "size_bytes", "latency_ms_median", "latency_ms_p90",
 *                 "peak_memory_bytes", "accuracy": {"en": {"top1", "top5"}, "zh": {...}} | null,
 *                 "parity": {...} | null, "source": "device"}]}
 * </pre>
 * Latency follows lowering/report.py: warm-up runs, then batch-1 runs timed one by one; the median, and the
 * p90 as the sorted times' element round(0.9 * (n - 1)).
 */
public final class Benchmark {
    public static final int FORMAT_VERSION = 1;
    public static final String[] ENTRY_FIELDS = {"name", "tower", "backend", "precision", "size_bytes",
        "latency_ms_median", "latency_ms_p90", "peak_memory_bytes", "accuracy", "parity", "source"};

    private Benchmark() {}

    /** Milliseconds of each timed run, sorted. */
    public static final class Timing {
        public final double[] sortedMs;
        public final double medianMs, p90Ms;

        public Timing(double[] ms) {
            if (ms.length == 0) throw new IllegalArgumentException("no timed runs");
            sortedMs = ms.clone();
            Arrays.sort(sortedMs);
            int n = sortedMs.length;
            medianMs = n % 2 == 1 ? sortedMs[n / 2] : (sortedMs[n / 2 - 1] + sortedMs[n / 2]) / 2.0;
            p90Ms = sortedMs[Math.min(n - 1, (int) Math.rint(0.9 * (n - 1)))];
        }
    }

    public static Timing time(Runnable run, int warmup, int runs) {
        if (runs < 1) throw new IllegalArgumentException("runs must be >= 1, got " + runs);
        for (int k = 0; k < warmup; k++) run.run();
        double[] ms = new double[runs];
        for (int k = 0; k < runs; k++) {
            long t = System.nanoTime();
            run.run();
            ms[k] = (System.nanoTime() - t) / 1e6;
        }
        return new Timing(ms);
    }

    /** Top-1 and top-5 accuracy of predicted rankings against labels: {"top1": .., "top5": ..}. */
    public static Map<String, Object> accuracy(List<int[]> rankings, int[] labels) {
        if (rankings.size() != labels.length) throw new IllegalArgumentException("one ranking per label");
        int top1 = 0, top5 = 0;
        for (int k = 0; k < labels.length; k++) {
            int[] r = rankings.get(k);
            if (r.length > 0 && r[0] == labels[k]) top1++;
            for (int j = 0; j < Math.min(5, r.length); j++) if (r[j] == labels[k]) { top5++; break; }
        }
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("top1", labels.length == 0 ? null : (double) top1 / labels.length);
        m.put("top5", labels.length == 0 ? null : (double) top5 / labels.length);
        return m;
    }

    /** Cosine figures of the device's embeddings against golden.json's (PyTorch) ones. */
    public static Map<String, Object> parity(List<float[]> device, List<float[]> reference) {
        if (device.size() != reference.size() || device.isEmpty()) {
            throw new IllegalArgumentException("parity needs as many device as reference embeddings, at least one");
        }
        double sum = 0, min = Double.POSITIVE_INFINITY;
        for (int k = 0; k < device.size(); k++) {
            double c = Scoring.cosine(device.get(k), reference.get(k));
            sum += c;
            min = Math.min(min, c);
        }
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("reference", "golden.json (eager PyTorch, fp32)");
        m.put("n", (long) device.size());
        m.put("cosine_mean", sum / device.size());
        m.put("cosine_min", min);
        return m;
    }

    /** One report entry; accuracy and parity may be null. */
    public static Map<String, Object> entry(Manifest.Artifact a, Timing t, Long peakMemoryBytes,
                                            Map<String, Object> accuracy, Map<String, Object> parity) {
        Map<String, Object> e = new LinkedHashMap<>();
        e.put("name", a.name());
        e.put("tower", a.tower);
        e.put("backend", a.backend);
        e.put("precision", a.precision);
        e.put("size_bytes", a.sizeBytes);
        e.put("latency_ms_median", t.medianMs);
        e.put("latency_ms_p90", t.p90Ms);
        e.put("peak_memory_bytes", peakMemoryBytes);
        e.put("accuracy", accuracy);
        e.put("parity", parity);
        e.put("source", "device");
        return e;
    }

    /** The whole file: device description (model, OS, threads, runs) and the entries. */
    public static String report(Map<String, Object> device, List<Map<String, Object>> entries) {
        Map<String, Object> r = new LinkedHashMap<>();
        r.put("format_version", (long) FORMAT_VERSION);
        r.put("source", "device");
        r.put("device", device);
        r.put("artifacts", new ArrayList<Object>(entries));
        return Json.writePretty(r);
    }
}
