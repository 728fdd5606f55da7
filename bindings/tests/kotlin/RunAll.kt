// Runs the JVM tests with JUnit 4 and prints one line per test and a closing `N passed, M failed`.
package org.gridwork.core.test

import org.junit.runner.Description
import org.junit.runner.JUnitCore
import org.junit.runner.Request
import org.junit.runner.notification.Failure
import org.junit.runner.notification.RunListener
import kotlin.system.exitProcess

fun main(args: Array<String>) {
    val classes = listOf(StoreTest::class.java, AndroidLayerTest::class.java, SyncTest::class.java)
        .filter { args.isEmpty() || it.simpleName in args }
    var passed = 0
    var failed = 0
    val core = JUnitCore()
    core.addListener(object : RunListener() {
        private var current: Failure? = null
        private var started = 0L
        override fun testStarted(description: Description) {
            current = null
            started = System.nanoTime()
            println("RUN   ${description.testClass.simpleName}.${description.methodName}")
        }
        override fun testFailure(failure: Failure) {
            current = failure
        }
        override fun testAssumptionFailure(failure: Failure) {
            current = failure
        }
        override fun testFinished(description: Description) {
            val ms = (System.nanoTime() - started) / 1_000_000
            val name = "${description.testClass.simpleName}.${description.methodName}"
            val failure = current
            if (failure == null) {
                passed++
                println("PASS  $name (${ms} ms)")
            } else {
                failed++
                println("FAIL  $name (${ms} ms): ${failure.exception}")
                failure.exception.printStackTrace(System.out)
            }
        }
    })
    for (c in classes) {
        val result = core.run(Request.aClass(c))
        // Failures outside a test (e.g. @BeforeClass) do not reach testFinished.
        for (f in result.failures) {
            if (f.description.methodName == null) {
                failed++
                println("FAIL  ${c.simpleName} (class setup): ${f.exception}")
                f.exception.printStackTrace(System.out)
            }
        }
    }
    println("kotlin: $passed passed, $failed failed")
    exitProcess(if (failed == 0 && passed > 0) 0 else 1)
}
