// The coroutine layer of the Android module (android/src/main/kotlin), run on the JVM.
package org.gridwork.core.test

import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeoutOrNull
import org.gridwork.android.GridworkClient
import org.gridwork.core.*
import org.gridwork.core.test.Fixtures.addAreaTree
import org.gridwork.core.test.Fixtures.newKey
import org.gridwork.core.test.Fixtures.person
import org.gridwork.core.test.Fixtures.tempDir
import org.junit.Test
import java.io.File
import java.net.ServerSocket
import kotlin.test.*

class AndroidLayerTest {
    private fun deadRelay(retries: UInt) = SyncConfig(
        serverUrl = "http://127.0.0.1:${ServerSocket(0).use { it.localPort }}",
        token = "t",
        maxRetries = retries,
    )

    @Test
    fun suspendCallsRunTheStoreOffTheCallersThread() = runBlocking<Unit> {
        val dir = tempDir("gw-client")
        val identity = Identity("wang", "wang-phone", Role.WORKER, "g1")
        GridworkClient.open(File(dir, "wang.db").path, newKey(), identity).use { client ->
            addAreaTree(client.store)
            val id = client.create(person("g1", "刘芳"))
            assertEquals("刘芳", client.get(id).fields["name"])
            assertEquals(listOf(id), client.search("刘芳").map { it.id })
            val thread = client.call { Thread.currentThread().name }
            assertTrue(thread.startsWith("DefaultDispatcher-worker"), thread)
            assertFailsWith<GridworkException.NotFound> { client.get("0123456789abcdef0123456789abcdef") }
        }
    }

    @Test
    fun cancellingTheProgressFlowCancelsTheSync() = runBlocking<Unit> {
        GridworkClient(Fixtures.openWorker(tempDir("gw-flow"), newKey())).use { client ->
            // Against a relay that is not there, the sync keeps retrying until cancelled.
            val seen = withTimeoutOrNull(400) { client.syncProgress(deadRelay(1000u)).toList() }
            assertNull(seen, "the flow was still running")
            // The sync behind it stopped: a new one may start (it is refused while one runs).
            var error: GridworkException? = null
            for (attempt in 1..40) {
                error = assertFails { client.sync(deadRelay(0u)) } as? GridworkException
                if (error !is GridworkException.InvalidInput) break
                delay(50)
            }
            assertIs<GridworkException.Network>(error, "got $error")
        }
    }

    @Test
    fun bulkImportAndExportAreSuspendFunctions() = runBlocking<Unit> {
        GridworkClient(Fixtures.openWorker(tempDir("gw-bulk"), newKey())).use { client ->
            addAreaTree(client.store)
            val ids = client.createMany((1..200).map { person("g1", "居民$it") })
            assertEquals(200, ids.toSet().size)
            assertEquals(200, client.list(ListQuery(kind = Kind.PERSON, limit = 500u)).items.size)
            // All or none: one bad record, nothing stored.
            assertFailsWith<GridworkException.InvalidInput> {
                client.createMany(listOf(person("g1", "好"), person("g1", "坏", "sex" to "robot")))
            }
            assertEquals(200, client.list(ListQuery(kind = Kind.PERSON, limit = 500u)).items.size)
            val csv = client.exportRecords(ExportQuery(Kind.PERSON, null, null, null, null, false), ExportFormat.CSV)
            assertEquals(201, csv.drop(3).toByteArray().toString(Charsets.UTF_8).trim().lines().size, "a header and 200 rows")
        }
    }

    @Test
    fun cancellingTheCallerCancelsASuspendedSync() = runBlocking<Unit> {
        GridworkClient(Fixtures.openWorker(tempDir("gw-cancel2"), newKey())).use { client ->
            val t0 = System.nanoTime()
            assertNull(withTimeoutOrNull(300) { client.sync(deadRelay(1000u)) })
            assertTrue((System.nanoTime() - t0) / 1_000_000 < 3_000)
        }
    }
}
