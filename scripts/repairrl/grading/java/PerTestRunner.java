import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.runner.Description;
import org.junit.runner.JUnitCore;
import org.junit.runner.Request;
import org.junit.runner.Result;
import org.junit.runner.notification.Failure;
import org.junit.runner.notification.RunListener;

/**
 * Runs JUnit 4 tests one by one and prints one status line per requested test, in the format of pytest's
 * `-rA` summary that swebench's parse_log_pytest reads: `PASSED com.x.FooTest#testBar`.
 *
 * Every status line starts with the run's nonce (`<nonce> PASSED com.x.FooTest#testBar`): the grader counts
 * only lines that carry it, so code under test cannot pass a test by printing a status line. The nonce comes
 * from the file named by the system property `repairrl.nonceFile`, which main reads and deletes before it loads
 * any test class (so before any static initializer of the working copy runs); it is then kept in a private
 * field, out of sight of plain means (not in argv, the environment or a file), though not of reflection.
 * Without the property the lines carry no nonce.
 *
 * Each argument is `fully.qualified.Class#method`. A test that cannot be found or loaded is reported FAILED,
 * so a missing test never passes silently. Failure traces are indented so no trace line can be mistaken for
 * a status line.
 *
 * With the system property `repairrl.testTimeoutMs` above 0, each test runs on its own daemon thread and is
 * given that long: a test still running then is reported `TIMEOUT <id>` and `FAILED <id>`, and the next test
 * starts. Java cannot stop the thread, so it is interrupted and left behind; the JVM still exits, because the
 * thread is a daemon and main ends with System.exit.
 */
public final class PerTestRunner {

    private static final long TIMEOUT_MS = Long.getLong("repairrl.testTimeoutMs", 0L);
    // Status lines go to the stream the JVM started with, whatever the code under test does to System.out.
    private static final PrintStream OUT = System.out;
    // "<nonce> ", set by main before any test class is loaded.
    private static String tag = "";

    private PerTestRunner() {}

    public static void main(String[] args) throws IOException {
        String nonceFile = System.getProperty("repairrl.nonceFile");
        if (nonceFile != null) {
            Path path = Paths.get(nonceFile);
            tag = new String(Files.readAllBytes(path), StandardCharsets.US_ASCII).trim() + " ";
            Files.delete(path);
        }
        int failed = 0;
        for (String testId : args) {
            String status = TIMEOUT_MS > 0 ? runWithTimeout(testId) : run(testId);
            if (!status.equals("PASSED") && !status.equals("SKIPPED")) {
                failed++;
            }
            OUT.println(tag + status + " " + testId);
            OUT.flush();
        }
        System.exit(failed == 0 ? 0 : 1);
    }

    private static String runWithTimeout(final String testId) {
        final AtomicReference<String> status = new AtomicReference<>("FAILED");
        Thread worker = new Thread(() -> status.set(run(testId)), "repairrl-test");
        worker.setDaemon(true);
        worker.start();
        try {
            worker.join(TIMEOUT_MS);
        } catch (InterruptedException interrupted) {
            Thread.currentThread().interrupt();
        }
        if (worker.isAlive()) {
            worker.interrupt();
            OUT.println("    test timed out after " + TIMEOUT_MS + " ms");
            OUT.println(tag + "TIMEOUT " + testId);
            return "FAILED";
        }
        return status.get();
    }

    /** Stack frames of JUnit, reflection and this runner: noise in a log that a person or a model reads. */
    private static boolean isHarnessFrame(String line) {
        return line.startsWith("at org.junit.")
                || line.startsWith("at java.base/jdk.internal.reflect.")
                || line.startsWith("at java.base/java.lang.reflect.")
                || line.startsWith("at PerTestRunner.");
    }

    private static String run(String testId) {
        int hash = testId.indexOf('#');
        if (hash <= 0 || hash == testId.length() - 1) {
            OUT.println("    not a test id (expected Class#method): " + testId);
            return "ERROR";
        }
        Class<?> testClass;
        try {
            testClass = Class.forName(testId.substring(0, hash), false, PerTestRunner.class.getClassLoader());
        } catch (ClassNotFoundException | LinkageError error) {
            OUT.println("    cannot load test class: " + error);
            return "FAILED";
        }
        final List<Failure> failures = new ArrayList<>();
        final boolean[] skipped = {false};
        JUnitCore core = new JUnitCore();
        core.addListener(new RunListener() {
            @Override
            public void testFailure(Failure failure) {
                failures.add(failure);
            }

            @Override
            public void testAssumptionFailure(Failure failure) {
                skipped[0] = true;
            }

            @Override
            public void testIgnored(Description description) {
                skipped[0] = true;
            }
        });
        Result result = core.run(Request.method(testClass, testId.substring(hash + 1)));
        for (Failure failure : failures) {
            for (String line : failure.getTrace().split("\n")) {
                if (!isHarnessFrame(line.trim())) {
                    OUT.println("    " + line);
                }
            }
        }
        if (!failures.isEmpty()) {
            return "FAILED";
        }
        if (skipped[0]) {
            return "SKIPPED";
        }
        return result.getRunCount() > 0 ? "PASSED" : "FAILED";
    }
}
