package dcclip.core;

import org.junit.runner.JUnitCore;
import org.junit.runner.Result;
import org.junit.runner.notification.Failure;

/** Runs every test class with JUnit 4 and ends with "N passed, M failed" (exit status 1 on a failure). */
public final class RunAllTests {
    static final Class<?>[] CLASSES = {TokenizerTest.class, PreprocessTest.class, ManifestTest.class,
        ScoringTest.class, BenchmarkTest.class, ClassifierTest.class, HostileBundleTest.class, LengthBucketsTest.class};

    public static void main(String[] args) {
        Result r = JUnitCore.runClasses(CLASSES);
        for (Failure f : r.getFailures()) {
            System.out.println("FAILED " + f.getTestHeader() + ": " + f.getMessage());
            if (!(f.getException() instanceof AssertionError)) f.getException().printStackTrace(System.out);
        }
        int failed = r.getFailureCount(), skipped = r.getIgnoreCount() + r.getAssumptionFailureCount();
        System.out.println((r.getRunCount() - failed - r.getAssumptionFailureCount()) + " passed, " + failed
                + " failed, " + skipped + " skipped (" + CLASSES.length + " classes, " + r.getRunTime() / 1000.0 + " s)");
        System.exit(failed == 0 ? 0 : 1);
    }
}
