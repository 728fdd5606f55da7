plugins {
    id("com.android.library")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "org.gridwork.android"
    compileSdk = 35

    defaultConfig {
        // 24 (Android 7.0): the lowest level JNA 5.x and our NDK build (cargo-ndk --platform 24)
        // support. The uniffi bindings pick the SystemCleaner on API 33+ by themselves.
        minSdk = 24
        consumerProguardFiles("consumer-rules.pro")
        ndk {
            abiFilters += listOf("arm64-v8a", "armeabi-v7a", "x86_64")
        }
    }

    sourceSets {
        getByName("main") {
            // Written by ./build.sh: the generated bindings and the .so of each ABI, from ONE cargo
            // build, so the API checksums in the Kotlin match the libraries.
            java.srcDirs("src/main/kotlin", "src/main/uniffi")
            jniLibs.srcDirs("src/main/jniLibs")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    packaging {
        jniLibs {
            // Keep .so files uncompressed and page-aligned in the APK (16 KB pages, Android 15+).
            useLegacyPackaging = false
        }
    }
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    // The @aar flavour carries libjnidispatch.so for every Android ABI; the plain jar does not.
    implementation("net.java.dev.jna:jna:5.17.0@aar")
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.9.0")
    testImplementation("junit:junit:4.13.2")
}
