// The dcclip-mobile Android demo: `core` is plain Java (no Android types; its tests also run on a plain JVM,
// see run_jvm_tests.sh), `app` is the Android app on the ExecuTorch Android library.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}
dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}
rootProject.name = "dcclip-android-demo"
include(":core", ":app")
