// Helpers shared by the JVM tests of the generated Kotlin bindings.
package org.gridwork.core.test

import org.gridwork.core.*
import java.io.File
import java.nio.file.Files
import java.security.SecureRandom

object Fixtures {
    /** A fresh random 32-byte key, as the Android Keystore would hand one out. */
    fun newKey(): ByteArray = ByteArray(32).also { SecureRandom().nextBytes(it) }

    /** A temporary directory, removed with its contents when the JVM exits. */
    fun tempDir(prefix: String): File = Files.createTempDirectory(prefix).toFile().also { dir ->
        Runtime.getRuntime().addShutdownHook(Thread { dir.deleteRecursively() })
    }

    /** d1 > s1 > c1 > {g1, g2}: a district, a street, a community and two grids. */
    fun addAreaTree(store: GridworkStore) {
        store.upsertArea("d1", null, AreaLevel.DISTRICT, "East District")
        store.upsertArea("s1", "d1", AreaLevel.STREET, "River Street")
        store.upsertArea("c1", "s1", AreaLevel.COMMUNITY, "Willow Community")
        store.upsertArea("g1", "c1", AreaLevel.GRID, "Grid 1")
        store.upsertArea("g2", "c1", AreaLevel.GRID, "Grid 2")
    }

    fun openWorker(dir: File, key: ByteArray, user: String = "wang", area: String = "g1"): GridworkStore =
        GridworkStore.open(File(dir, "$user.db").path, key, user, "$user-phone", Role.WORKER, area)

    /** Resident set size of this JVM process in KiB, from /proc/self/status (Linux). */
    fun rssKiB(): Long =
        File("/proc/self/status").readLines().first { it.startsWith("VmRSS:") }
            .split(Regex("\\s+"))[1].toLong()

    fun person(area: String, name: String, vararg fields: Pair<String, String>) =
        NewRecord(kind = Kind.PERSON, area = area, fields = mapOf("name" to name) + fields)
}
