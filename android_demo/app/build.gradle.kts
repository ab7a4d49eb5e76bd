plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

val executorchVersion: String by project

android {
    namespace = "org.dcclip.demo"
    compileSdk = 35

    defaultConfig {
        applicationId = "org.dcclip.demo"
        minSdk = 26 // java.nio.file in :core; ExecuTorch itself needs 23
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
        buildConfigField("String", "EXECUTORCH_VERSION", "\"$executorchVersion\"")
        ndk {
            abiFilters += listOf("arm64-v8a", "x86_64") // the ABIs the ExecuTorch AAR ships
        }
    }

    buildTypes {
        release {
            isMinifyEnabled = false
        }
    }
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    buildFeatures {
        buildConfig = true
    }
    androidResources {
        noCompress += listOf("pte", "json") // the bundle is copied out of the APK byte for byte
    }
}

kotlin {
    compilerOptions {
        jvmTarget.set(org.jetbrains.kotlin.gradle.dsl.JvmTarget.JVM_17)
    }
}

dependencies {
    implementation(project(":core"))
    implementation("org.pytorch:executorch-android:$executorchVersion")
    implementation("androidx.appcompat:appcompat:1.7.0")
    implementation("androidx.activity:activity-ktx:1.10.1")
    implementation("androidx.exifinterface:exifinterface:1.4.1")
}
