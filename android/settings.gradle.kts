// The Gridwork Android library: the Rust core (libgridwork_ffi.so per ABI, built by ./build.sh) plus
// its generated Kotlin bindings and a small coroutine layer. Open this folder in Android Studio, or
// include it from an app's settings.gradle.kts:
//   include(":gridwork"); project(":gridwork").projectDir = file("../gridwork/android")
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
    plugins {
        id("com.android.library") version "8.7.3"
        id("org.jetbrains.kotlin.android") version "2.1.0"
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "gridwork-android"
