// Two devices, one real relay on loopback: offline edits of the same person merge, the same field in
// conflict is resolved once and the resolution syncs everywhere. Progress and cancellation too.
//
// Needs -Dgridwork.server=<path to the gridwork-server binary>.
package org.gridwork.core.test

import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import org.gridwork.android.GridworkClient
import org.gridwork.core.*
import org.gridwork.core.test.Fixtures.newKey
import org.gridwork.core.test.Fixtures.person
import org.gridwork.core.test.Fixtures.tempDir
import org.junit.AfterClass
import org.junit.BeforeClass
import org.junit.Test
import java.io.File
import java.net.InetSocketAddress
import java.net.ServerSocket
import java.net.Socket
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit
import kotlin.test.*

class SyncTest {
    companion object {
        private lateinit var server: Process
        private lateinit var data: File
        private lateinit var url: String
        private val tokens = mutableMapOf<String, String>()
        private val binary: String by lazy {
            System.getProperty("gridwork.server") ?: error("set -Dgridwork.server=<path to gridwork-server>")
        }

        private fun admin(vararg args: String): String {
            val p = ProcessBuilder(listOf(binary, "admin", "--data", data.path) + args)
                .redirectError(ProcessBuilder.Redirect.INHERIT)
                .start()
            val out = p.inputStream.bufferedReader().readText()
            check(p.waitFor(60, TimeUnit.SECONDS) && p.exitValue() == 0) { "admin ${args.joinToString(" ")} failed" }
            return out.trim()
        }

        private fun freePort(): Int = ServerSocket(0).use { it.localPort }

        @BeforeClass
        @JvmStatic
        fun startRelay() {
            data = tempDir("gw-relay")
            admin("area", "add", "d1", "--level", "district", "--name", "East District")
            admin("area", "add", "s1", "--parent", "d1", "--level", "street", "--name", "River Street")
            admin("area", "add", "c1", "--parent", "s1", "--level", "community", "--name", "Willow Community")
            admin("area", "add", "g1", "--parent", "c1", "--level", "grid", "--name", "Grid 1")
            for (user in listOf("wang", "li")) {
                admin("user", "add", user, "--name", user.replaceFirstChar { it.uppercase() }, "--role", "worker", "--area", "g1")
                tokens[user] = admin("device", "add", "--user", user, "--id", "$user-phone").lines().last().trim()
            }
            val port = freePort()
            url = "http://127.0.0.1:$port"
            server = ProcessBuilder(binary, "serve", "--data", data.path, "--listen", "127.0.0.1:$port")
                .redirectErrorStream(true)
                .redirectOutput(File(data, "server.log"))
                .start()
            // Also stop it when the JVM is killed mid-run (e.g. by the script's timeout).
            val relay = server
            Runtime.getRuntime().addShutdownHook(Thread { relay.destroyForcibly() })
            val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30)
            while (true) {
                try {
                    Socket().use { it.connect(InetSocketAddress("127.0.0.1", port), 200) }
                    break
                } catch (e: Exception) {
                    check(server.isAlive) { "relay exited: " + File(data, "server.log").readText() }
                    check(System.nanoTime() < deadline) { "relay did not listen on $port" }
                    Thread.sleep(100)
                }
            }
        }

        @AfterClass
        @JvmStatic
        fun stopRelay() {
            if (!::server.isInitialized) return
            server.destroy()
            if (!server.waitFor(10, TimeUnit.SECONDS)) server.destroyForcibly().waitFor()
        }
    }

    private fun device(dir: File, user: String): GridworkStore =
        GridworkStore.open(File(dir, "$user.db").path, newKey(), user, "$user-phone", Role.WORKER, "g1")

    private fun config(user: String) = SyncConfig(serverUrl = url, token = tokens.getValue(user))

    /** Collects every progress report, as the app's progress bar would. */
    private class Recorder : SyncObserver {
        val seen = CopyOnWriteArrayList<SyncProgress>()
        override fun onProgress(progress: SyncProgress) {
            seen += progress
        }
    }

    @Test
    fun twoDevicesEditTheSamePersonOffline_mergeAndResolveTheConflict() {
        val dir = tempDir("gw-sync")
        device(dir, "wang").use { wang ->
            device(dir, "li").use { li ->
                // First sync: each device gets the area tree from the relay.
                val progress = Recorder()
                wang.sync(config("wang"), progress)
                li.sync(config("li"), null)
                assertEquals(listOf("d1", "s1", "c1", "g1"), wang.areas().map { it.id })
                assertEquals(SyncPhase.CONNECTING, progress.seen.first().phase)
                assertEquals(SyncPhase.DONE, progress.seen.last().phase)

                // Wang registers a resident and syncs; Li receives it.
                val id = wang.create(person("g1", "张伟", "phone" to "+86 131 0000 0001"))
                assertTrue(wang.outboxLen() > 0u)
                val pushed = wang.sync(config("wang"), null)
                assertEquals(0uL, wang.outboxLen())
                assertTrue(pushed.pushed >= 1u, "pushed ${pushed.pushed}")
                li.sync(config("li"), null)
                assertEquals("张伟", li.get(id).fields["name"])

                // Offline, both edit him: the same field (phone) and different ones.
                wang.update(id, Update(fields = mapOf("phone" to "+86 131 1111 1111"), addTags = listOf("needs care")))
                li.update(id, Update(fields = mapOf("phone" to "+86 131 2222 2222", "birth_date" to "1950-07-01")))

                val recorder = Recorder()
                wang.sync(config("wang"), recorder)
                assertTrue(recorder.seen.any { it.phase == SyncPhase.PUSHING }, "${recorder.seen}")
                li.sync(config("li"), null)
                wang.sync(config("wang"), null)

                for (device in listOf(wang, li)) {
                    val p = device.get(id)
                    assertEquals("1950-07-01", p.fields["birth_date"], "different fields both survive")
                    assertEquals(listOf("needs care"), p.tags)
                    assertEquals(listOf("phone"), p.conflictedFields)
                    val conflict = device.conflicts().single()
                    assertEquals(id, conflict.recordId)
                    assertEquals(
                        setOf("+86 131 1111 1111", "+86 131 2222 2222"),
                        conflict.values.map { it.value }.toSet(),
                    )
                    assertEquals(setOf("wang", "li"), conflict.values.map { it.user }.toSet())
                }
                // Both replicas show the same winner.
                assertEquals(wang.get(id).fields["phone"], li.get(id).fields["phone"])
                assertEquals(
                    wang.conflicts().single().values.single { it.winner }.value,
                    li.conflicts().single().values.single { it.winner }.value,
                )

                // Li settles it; the resolution is an edit that syncs.
                li.resolveConflict(id, "phone", "+86 131 1111 1111")
                assertTrue(li.conflicts().isEmpty())
                li.sync(config("li"), null)
                wang.sync(config("wang"), null)
                for (device in listOf(wang, li)) {
                    assertTrue(device.conflicts().isEmpty())
                    assertEquals("+86 131 1111 1111", device.get(id).fields["phone"])
                    assertTrue(device.get(id).conflictedFields.isEmpty())
                }
                assertEquals(
                    listOf("create", "edit", "edit", "resolve"),
                    wang.history(id).map { it.action },
                )
                assertTrue(wang.quarantined().isEmpty())
            }
        }
    }

    @Test
    fun aBackgroundSyncReportsProgressAndCanBeCancelled() {
        val dir = tempDir("gw-cancel")
        device(dir, "wang").use { wang ->
            // Completes: wait() returns the report, as often as asked.
            wang.startSync(config("wang"), Recorder()).use { handle ->
                val report = handle.wait()
                assertTrue(handle.isFinished())
                assertEquals(report, handle.wait())
            }

            // Cancelled deterministically: the observer holds the sync at its first report until the
            // app has pressed cancel; the next request then stops it.
            val cancelPressed = CountDownLatch(1)
            val observer = object : SyncObserver {
                override fun onProgress(progress: SyncProgress) {
                    cancelPressed.await(10, TimeUnit.SECONDS)
                }
            }
            wang.startSync(config("wang"), observer).use { handle ->
                handle.cancel()
                cancelPressed.countDown()
                assertFailsWith<GridworkException.Cancelled> { handle.wait() }
            }

            // Cancelling a sync stuck retrying an unreachable relay returns promptly.
            val dead = SyncConfig(serverUrl = "http://127.0.0.1:${freePort()}", token = "x", maxRetries = 1000u)
            wang.startSync(dead, null).use { handle ->
                assertNull(handle.waitTimeout(300u), "still retrying")
                val t0 = System.nanoTime()
                handle.cancel()
                assertFailsWith<GridworkException.Cancelled> { handle.wait() }
                val ms = (System.nanoTime() - t0) / 1_000_000
                assertTrue(ms < 5_000, "cancel took $ms ms")
            }

            // The Android layer's Flow: progress from connecting to done, then completes.
            val phases = runBlocking { GridworkClient(wang).syncProgress(config("wang")).toList() }.map { it.phase }
            assertEquals(SyncPhase.CONNECTING, phases.first())
            assertEquals(SyncPhase.DONE, phases.last())
            val failed = runCatching {
                runBlocking { GridworkClient(wang).syncProgress(SyncConfig(serverUrl = url, token = "nope")).toList() }
            }.exceptionOrNull()
            assertIs<GridworkException.Unauthorized>(failed)

            // Wrong token.
            val bad = SyncConfig(serverUrl = url, token = "not-a-token")
            assertFailsWith<GridworkException.Unauthorized> { wang.sync(bad, null) }
        }
    }
}
