// Devices and one real relay on loopback: offline edits of the same person merge, the same field in
// conflict is resolved once and the resolution syncs everywhere; a supervisor reviews a worker's visit;
// the identity comes from the relay (a store made from a token, an offline store corrected, a second
// store refused), a refused change is discarded, a revoked device wipes its store. Progress and
// cancellation too. A follow-up schedule from the relay makes a tagged resident due; a visit fulfils it.
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
        private var devices = 0
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
            admin("area", "add", "g2", "--parent", "c1", "--level", "grid", "--name", "Grid 2")
            for (user in listOf("wang", "li")) {
                admin("user", "add", user, "--name", user.replaceFirstChar { it.uppercase() }, "--role", "worker", "--area", "g1")
            }
            admin("user", "add", "zhou", "--name", "Zhou", "--role", "supervisor", "--area", "c1")
            admin("schedule", "add", "alone", "--area", "c1", "--kind", "person", "--tag", "lives alone",
                "--every", "weekly", "--name", "Living alone: weekly visit")
            // A city form for objects in grid 2 (no other test makes objects there).
            val form = File(data, "form.json")
            form.writeText("""{"id":"g2-objects","area":"g2","kind":"object","fields":[
                {"key":"hazard_level","label_zh":"隐患等级","label_en":"Hazard level","type":"choice",
                 "options":["low","high"],"required":true},
                {"key":"checked_on","label_zh":"检查日期","label_en":"Checked on","type":"date"}]}""")
            admin("form", "add", "--file", form.path)
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

    /** A new device of `user` on the relay: its id and token (a token binds to one store). */
    @Synchronized
    private fun newDevice(user: String): Pair<String, String> {
        val id = "$user-${++devices}"
        return id to admin("device", "add", "--user", user, "--id", id).lines().last().trim()
    }

    /** A worker's store made offline, with a device of its own on the relay and its sync config. */
    private fun device(dir: File, user: String, role: Role = Role.WORKER, area: String = "g1"): Pair<GridworkStore, SyncConfig> {
        val (id, token) = newDevice(user)
        val store = GridworkStore.open(File(dir, "$id.db").path, newKey(), user, id, role, area)
        return store to SyncConfig(serverUrl = url, token = token)
    }

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
        val (wangStore, wangConfig) = device(dir, "wang")
        val (liStore, liConfig) = device(dir, "li")
        val config = { user: String -> if (user == "wang") wangConfig else liConfig }
        wangStore.use { wang ->
            liStore.use { li ->
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
                // Stored from the relay's view of the record; checked against the document on demand.
                assertEquals(1uL, li.uncheckedViews(), "stored from the relay's view")
                assertEquals(1uL, li.checkViews(100u))
                assertEquals(0uL, li.uncheckedViews())
                assertEquals(0uL, li.viewRepairs())

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
        val (store, wangConfig) = device(dir, "wang")
        val config = { _: String -> wangConfig }
        store.use { wang ->
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

    @Test
    fun aSupervisorReviewsAWorkersVisitThroughTheRelay() {
        val dir = tempDir("gw-review")
        val (wang, wangConfig) = device(dir, "wang")
        val (zhou, zhouConfig) = device(dir, "zhou", Role.SUPERVISOR, "c1")
        wang.use { w ->
            zhou.use { z ->
                w.sync(wangConfig, null)
                val visit = w.startVisit("g1", "weekly check", null)
                w.finishVisit(visit, "All well.")
                w.sync(wangConfig, null)
                z.sync(zhouConfig, null)
                assertEquals(listOf(visit), z.reviewQueue(10u).map { it.id })
                // A visit log is its worker's account: the supervisor reviews it, does not edit it.
                assertFailsWith<GridworkException.Forbidden> { z.update(visit, Update(notes = "rewritten")) }
                assertFailsWith<GridworkException.InvalidInput> { z.reviewVisit(visit, ReviewState.RETURNED, null) }
                z.reviewVisit(visit, ReviewState.RETURNED, "add the photo of the meter")
                z.sync(zhouConfig, null)
                w.sync(wangConfig, null)
                assertEquals("returned", w.get(visit).fields["review_state"])
                assertEquals("zhou", w.get(visit).fields["reviewer"])
                // New for the worker after the sync: the returned visit, with the comment.
                val news = w.newForMe(480)
                val returned = news.single { it.what == NewForMeKind.VISIT_RETURNED }
                assertEquals(visit, returned.recordId)
                assertEquals("add the photo of the meter", returned.comment)
                w.markNewForMeSeen(news.map { it.key })
                assertTrue(w.newForMe(480).isEmpty())
            }
        }
    }

    @Test
    fun aScheduleFromTheRelayMakesATaggedResidentDue_andAVisitFulfilsIt() {
        val dir = tempDir("gw-followups")
        val (wang, wangConfig) = device(dir, "wang")
        wang.use { w ->
            w.sync(wangConfig, null)
            val schedule = w.schedules().single()
            assertEquals("alone", schedule.id)
            assertEquals(Every.Days(7u), schedule.every)
            val alone = w.create(person("g1", "李华").copy(tags = listOf("lives alone")))
            w.create(person("g1", "Not Tagged"))
            val beijing = 480
            val due = w.followups(FollowupQuery(area = null, states = listOf(), now = null, utcOffsetMinutes = beijing))
            assertEquals(listOf(alone), due.map { it.recordId })
            assertEquals(DueState.OVERDUE, due.single().state)
            assertNull(due.single().dueAt, "never visited: due now")
            val visit = w.startVisit("g1", "weekly check", null)
            w.addVisited(visit, alone)
            w.finishVisit(visit, null)
            val after = w.followups(FollowupQuery(area = "g1", states = listOf(), now = null, utcOffsetMinutes = beijing)).single()
            assertEquals(DueState.LATER, after.state)
            assertNotNull(after.lastVisit)
            // Statistics: the same function the relay runs over its views.
            val stats = w.statistics(StatsQuery(area = null, from = null, until = null, at = null))
            // (The relay is shared with the other tests: wang's grid holds their records too.)
            val people = w.list(ListQuery(kind = Kind.PERSON, limit = 1000u)).items.size.toULong()
            assertEquals(people, stats.recordsPerKind["person"])
            assertTrue((stats.visitsPerWorker["wang"] ?: 0uL) >= 1uL, "${stats.visitsPerWorker}")
            assertTrue(stats.coverage.single().upToDate >= 1uL, "${stats.coverage}")
            val overdueNextMonth = w.followups(
                FollowupQuery(area = null, states = listOf(DueState.OVERDUE), now = System.currentTimeMillis() / 1000 + 30 * 86_400L, utcOffsetMinutes = beijing))
            assertEquals(listOf(alone), overdueNextMonth.map { it.recordId })
            assertFailsWith<GridworkException.NotFound> {
                w.followups(FollowupQuery(area = "g2", states = listOf(), now = null, utcOffsetMinutes = beijing))
            }
        }
    }

    @Test
    fun aCityFormFromTheRelayDrawsTheFormAndChecksItsValues() {
        val dir = tempDir("gw-forms")
        val (zhou, config) = device(dir, "zhou", Role.SUPERVISOR, "c1")
        zhou.use { z ->
            z.sync(config, null)
            val fields = z.formFields(Kind.OBJECT, "g2")
            assertEquals(listOf("hazard_level", "checked_on"), fields.map { it.key })
            assertEquals(FormType.CHOICE, fields[0].ty)
            assertEquals(listOf("low", "high"), fields[0].options)
            assertTrue(fields[0].required)
            assertEquals("隐患等级", fields[0].labelZh)
            assertTrue(z.formFields(Kind.OBJECT, "g1").isEmpty(), "the form covers grid 2 only")
            val well = NewRecord(kind = Kind.OBJECT, area = "g2", fields = mapOf("name" to "Well cover"))
            assertFailsWith<GridworkException.InvalidInput>("required by the form") { z.create(well) }
            assertFailsWith<GridworkException.InvalidInput>("not an option") {
                z.create(well.copy(attrs = mapOf("hazard_level" to "medium")))
            }
            val id = z.create(well.copy(attrs = mapOf("hazard_level" to "high", "checked_on" to "2026-11-20")))
            val read = z.recordForm(id)
            assertEquals(listOf(ValueState.VALID, ValueState.VALID), read.map { it.state })
            assertEquals("high", read[0].value)
            val report = z.sync(config, null)
            assertEquals(0uL, report.rejected, "the relay takes what the form allows")
        }
    }

    @Test
    fun aResidentRegisteredTwiceIsMerged_andTheDifferenceIsAConflict() {
        val dir = tempDir("gw-dups")
        val (wang, config) = device(dir, "wang")
        wang.use { w ->
            w.sync(config, null)
            val kept = w.create(person("g1", "赵敏", "birth_date" to "1901-02-03", "phone" to "13800000011"))
            val away = w.create(person("g1", "Zhao Min", "birth_date" to "1901-02-03", "sex" to "female"))
            val pair = w.duplicates("g1").single { setOf(it.a.id, it.b.id) == setOf(kept, away) }
            assertEquals(listOf(DuplicateReason.SAME_NAME_AND_BIRTH_DATE), pair.reasons)
            val report = w.mergeRecords(kept, away)
            assertEquals(listOf("sex"), report.filled)
            assertEquals(listOf("name"), report.conflicts)
            assertTrue(w.get(away).deleted)
            val conflict = w.conflicts().single { it.recordId == kept }
            assertEquals(away, conflict.values.single { it.mergedFrom != null }.mergedFrom)
            w.resolveConflict(kept, "name", "赵敏")
            assertTrue(w.conflicts().none { it.recordId == kept })
            assertTrue(w.duplicates("g1").none { it.a.id == kept || it.b.id == kept })
            assertEquals(0uL, w.sync(config, null).rejected, "the relay takes the merge")
        }
    }

    @Test
    fun aStoreMadeFromATokenTakesItsIdentity_andASecondStoreIsRefused() {
        val dir = tempDir("gw-relay-init")
        val (id, token) = newDevice("wang")
        val config = SyncConfig(serverUrl = url, token = token)
        // Claims that disagree with the token make no store.
        val wrongRole = assertFailsWith<GridworkException.InvalidInput> {
            GridworkStore.createFromRelay(File(dir, "claims.db").path, newKey(), config, role = Role.SUPERVISOR)
        }
        assertTrue(wrongRole.reason.contains("role"), wrongRole.reason)
        assertFalse(File(dir, "claims.db").exists())
        GridworkStore.createFromRelay(File(dir, "wang.db").path, newKey(), config, userId = "wang", area = "g1").use { store ->
            assertEquals(Identity("wang", id, Role.WORKER, "g1"), store.identity())
            assertTrue(store.identityConfirmed())
            assertEquals(listOf("d1", "s1", "c1", "g1"), store.areas().map { it.id })
            store.create(person("g1", "韩梅"))
            assertEquals(1uL, store.sync(config, null).pushed)
        }
        // The token is bound to that store now.
        val inUse = assertFailsWith<GridworkException.DeviceInUse> {
            GridworkStore.createFromRelay(File(dir, "copy.db").path, newKey(), config)
        }
        assertTrue(inUse.reason.contains("operator"), inUse.reason)
        GridworkStore.open(File(dir, "offline-copy.db").path, newKey(), "wang", id, Role.WORKER, "g1").use { copy ->
            assertFailsWith<GridworkException.DeviceInUse> { copy.sync(config, null) }
            assertFalse(copy.identityConfirmed())
        }
        // A store of another user presenting this user's (new) token is refused before any push.
        val (_, other) = newDevice("wang")
        GridworkStore.open(File(dir, "li.db").path, newKey(), "li", "li-x", Role.WORKER, "g1").use { li ->
            assertFailsWith<GridworkException.WrongUser> { li.sync(SyncConfig(serverUrl = url, token = other), null) }
        }
    }

    @Test
    fun anOfflineStoreIsCorrected_andItsRefusedChangeIsDiscarded() {
        val dir = tempDir("gw-quarantine")
        // Made offline believing it supervises the community.
        val (store, config) = device(dir, "wang", Role.SUPERVISOR, "c1")
        store.use { s ->
            Fixtures.addAreaTree(s)
            val id = s.create(person("g1", "Moved Too Far"))
            s.moveRecord(id, "g2")
            s.update(id, Update(notes = "Moved in with her son."))
            val report = s.sync(config, null)
            assertEquals(1uL, report.pushed)
            assertEquals(1uL, report.rejected)
            assertEquals(Role.WORKER, s.identity().role)
            assertEquals("g1", s.identity().area)
            assertTrue(s.identityConfirmed())
            val q = s.quarantined().single()
            assertEquals(QuarantineOrigin.REFUSED, q.origin)
            assertEquals("out_of_scope", q.reason)
            assertEquals(id, q.recordId)
            assertTrue(q.message.contains("kept only on this device"), q.message)
            assertEquals(1uL, s.outboxLen(), "the later edit waits")
            val discarded = s.discardQuarantined(q.hash)
            assertEquals(1, discarded.reapplied.size)
            assertTrue(discarded.dropped.isEmpty())
            assertFalse(discarded.recordRemoved)
            assertEquals("g1", s.get(id).area)
            assertEquals("Moved in with her son.", s.get(id).notes)
            val again = s.sync(config, null)
            assertEquals(1uL, again.pushed)
            assertTrue(s.quarantined().isEmpty())
            assertEquals(0uL, s.outboxLen())
        }
    }

    @Test
    fun aRevokedDeviceWipesItsStore() {
        val dir = tempDir("gw-revoke")
        val (deviceId, token) = newDevice("li")
        val config = SyncConfig(serverUrl = url, token = token)
        val key = newKey()
        val path = File(dir, "li.db").path
        GridworkStore.open(path, key, "li", deviceId, Role.WORKER, "g1").use { store ->
            store.sync(config, null)
            val id = store.create(person("g1", "Kept Until Revoked"))
            admin("device", "revoke", deviceId)
            assertFailsWith<GridworkException.Revoked> { store.sync(config, null) }
            assertFailsWith<GridworkException.NotFound> { store.get(id) }
            assertEquals(0uL, store.outboxLen())
            assertFailsWith<GridworkException.Wiped> { store.create(person("g1", "After")) }
        }
        val wiped = assertFailsWith<GridworkException.Wiped> { GridworkStore.openExisting(path, key) }
        assertTrue(wiped.reason.contains("revoked"), wiped.reason)
    }
}
