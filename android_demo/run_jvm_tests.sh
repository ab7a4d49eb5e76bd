#!/usr/bin/env bash
# The Android demo's non-UI code (android_demo/core), compiled with javac and tested with JUnit 4 on a plain
# JVM against vectors from the real Python code. No Gradle, no Android SDK, no network.
#
#   android_demo/run_jvm_tests.sh                 make a tiny bundle + vectors (~30 s), compile, test
#   GOLDEN_BUNDLE=DIR android_demo/run_jvm_tests.sh   test against an exported bundle (e.g. runs/demo/bundles/android)
#   REUSE_GOLDEN=1 android_demo/run_jvm_tests.sh   keep android_demo/build/golden if it is there
#   WITH_IOS=1 android_demo/run_jvm_tests.sh       also export an iOS bundle (Core ML, +30 s): tested here and by the Swift tests
#
# Needs: Java 17 (javac) and JUnit 4 from Debian (`apt-get install -y junit4`; or JUNIT_JAR=path/to/junit4.jar
# with HAMCREST_JAR), and the project's Python stack for lowering/golden.py. Ends with "N passed, M failed".
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HERE")"
PY=${PYTHON:-python3}
BUILD="$HERE/build"
GOLDEN="$BUILD/golden"

JUNIT_JAR=${JUNIT_JAR:-/usr/share/java/junit4.jar}
HAMCREST_JAR=${HAMCREST_JAR:-/usr/share/java/hamcrest-core.jar}
for tool in javac java; do
  command -v "$tool" >/dev/null || { echo "run_jvm_tests.sh: $tool not found; install a JDK 17 (apt-get install -y openjdk-17-jdk-headless)" >&2; exit 2; }
done
for jar in "$JUNIT_JAR" "$HAMCREST_JAR"; do
  [ -f "$jar" ] || { echo "run_jvm_tests.sh: $jar not found; install JUnit 4: apt-get install -y junit4 (or set JUNIT_JAR / HAMCREST_JAR)" >&2; exit 2; }
done

# 1. test vectors, from the real Python code (a gitignored directory)
if [ -n "${GOLDEN_BUNDLE:-}" ]; then
  rm -rf "$GOLDEN"
  (cd "$REPO" && $PY -m lowering.golden --out "$GOLDEN" --bundle "$GOLDEN_BUNDLE")
elif [ -z "${REUSE_GOLDEN:-}" ] || [ ! -f "$GOLDEN/cases.json" ]; then
  rm -rf "$GOLDEN"
  (cd "$REPO" && $PY -m lowering.golden --out "$GOLDEN" ${WITH_IOS:+--ios})
fi

# 2. compile the core module, then its tests (one javac each: 2 cores are shared)
rm -rf "$BUILD/classes"
mkdir -p "$BUILD/classes/main" "$BUILD/classes/test"
javac -J-Xss4m --release 17 -Xlint:all -Werror -d "$BUILD/classes/main" $(find "$HERE/core/src/main/java" -name '*.java' | sort)
CP="$BUILD/classes/main:$JUNIT_JAR:$HAMCREST_JAR"
javac --release 17 -d "$BUILD/classes/test" -cp "$CP" $(find "$HERE/core/src/test/java" -name '*.java' | sort)

# 3. run (prints each failure, then "N passed, M failed, K skipped")
java -Djava.awt.headless=true -Ddcclip.golden="$GOLDEN" -cp "$BUILD/classes/test:$CP" dcclip.core.RunAllTests
