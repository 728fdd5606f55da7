// FFI overhead, measured from Kotlin on the JVM: the same calls as bindings/examples/core_get.rs
// makes directly on the core. Not a test: run with bindings/scripts/bench-ffi.sh.
package org.gridwork.core.bench

import org.gridwork.core.*
import java.io.File
import java.nio.file.Files

private fun nsPerCall(calls: Int, block: () -> Unit): Double {
    val t0 = System.nanoTime()
    repeat(calls) { block() }
    return (System.nanoTime() - t0).toDouble() / calls
}

fun main(args: Array<String>) {
    val calls = args.firstOrNull()?.toInt() ?: 10_000
    val dir = Files.createTempDirectory("gw-bench").toFile()
    try {
        GridworkStore.open(File(dir, "bench.db").path, ByteArray(32) { 7 }, "wang", "wang-phone", Role.WORKER, "g1").use { store ->
            store.upsertArea("d1", null, AreaLevel.DISTRICT, "East District")
            store.upsertArea("s1", "d1", AreaLevel.STREET, "River Street")
            store.upsertArea("c1", "s1", AreaLevel.COMMUNITY, "Willow Community")
            store.upsertArea("g1", "c1", AreaLevel.GRID, "Grid 1")
            val id = store.create(benchPerson())
            // Warm up the JIT, JNA and the store's document cache, then measure; best of 5 rounds.
            repeat(3) { nsPerCall(calls) { store.get(id) } }
            val get = (1..5).minOf { nsPerCall(calls) { store.get(id) } }
            repeat(3) { nsPerCall(calls) { store.inScope("g1") } }
            val scope = (1..5).minOf { nsPerCall(calls) { store.inScope("g1") } }
            println("kotlin-ffi get(): %.0f ns/call (%d calls, best of 5)".format(get, calls))
            println("kotlin-ffi in_scope(): %.0f ns/call (%d calls, best of 5)".format(scope, calls))
        }
    } finally {
        dir.deleteRecursively()
    }
}

/** The same person as bindings/examples/core_get.rs: 6 fields, 2 tags, 1 attribute, 500 bytes of notes. */
fun benchPerson() = NewRecord(
    kind = Kind.PERSON, area = "g1",
    fields = mapOf(
        "name" to "陈建国", "sex" to "male", "birth_date" to "1950-01-01",
        "phone" to "+86 139 0000 0000", "id_number" to "110101195001011234",
    ),
    attrs = mapOf("hukou" to "local"),
    tags = listOf("needs care", "lives alone"),
    notes = "x".repeat(500),
)
