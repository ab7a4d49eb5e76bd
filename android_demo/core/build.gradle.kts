// Plain Java: tokenizer, preprocessing, manifest, scoring, benchmark JSON. No Android types, so the same
// classes run in the app and on any JVM (run_jvm_tests.sh compiles and tests them without Gradle).
plugins {
    `java-library`
}

java {
    toolchain.languageVersion.set(JavaLanguageVersion.of(17))
}

dependencies {
    testImplementation("junit:junit:4.13.2")
}

tasks.test {
    // the vectors made by `python3 -m lowering.golden` (run it first, or run ../run_jvm_tests.sh)
    systemProperty("dcclip.golden", file("../build/golden").absolutePath)
    systemProperty("java.awt.headless", "true")
    exclude("**/RunAllTests.class", "**/Golden.class")
}
