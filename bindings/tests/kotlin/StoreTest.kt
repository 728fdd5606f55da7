// What an Android app does with the store, through the generated bindings, on the JVM.
package org.gridwork.core.test

import org.gridwork.core.*
import org.gridwork.core.test.Fixtures.addAreaTree
import org.gridwork.core.test.Fixtures.newKey
import org.gridwork.core.test.Fixtures.openWorker
import org.gridwork.core.test.Fixtures.person
import org.gridwork.core.test.Fixtures.tempDir
import org.junit.Test
import java.io.File
import kotlin.test.*

class StoreTest {
    @Test
    fun aGridWorkersDayOffline() {
        val dir = tempDir("gw-day")
        openWorker(dir, newKey()).use { store ->
            addAreaTree(store)
            assertEquals(listOf("d1", "s1", "c1", "g1", "g2"), store.areas().map { it.id })
            assertTrue(store.inScope("g1"))
            assertFalse(store.inScope("g2"))

            // A building and one household (a unit in it).
            val building = store.create(
                NewRecord(
                    kind = Kind.PLACE, area = "g1",
                    fields = mapOf("category" to "building", "name" to "Block 3", "address" to "幸福路12号"),
                )
            )
            val household = store.create(
                NewRecord(
                    kind = Kind.PLACE, area = "g1",
                    fields = mapOf(
                        "category" to "unit", "name" to "Block 3, Unit 201",
                        "parent_place" to building, "lat" to "31.2304", "lon" to "121.4737",
                    ),
                    attrs = mapOf("household_size" to "2"),
                )
            )
            // Its residents, living there.
            val grandma = store.create(
                person("g1", "王秀英", "sex" to "female", "birth_date" to "1941-05-09", "home_place" to household,
                    "id_number" to "110105194105090021")
                    .copy(tags = listOf("lives alone", "needs care"), notes = "Hard of hearing; knock loudly.")
            )
            val grandson = store.create(person("g1", "王磊", "sex" to "male", "phone" to "+86 138 0013 8000"))
            for (resident in listOf(grandma, grandson)) {
                store.link(resident, LinkType.LIVES_AT, household)
            }
            assertEquals(2, store.linksOf(household).count { it.linkType == LinkType.LIVES_AT })

            val g = store.get(grandma)
            assertEquals(Kind.PERSON, g.kind)
            assertEquals("王秀英", g.fields["name"])
            assertEquals(listOf("lives alone", "needs care"), g.tags.sorted())
            assertEquals(listOf(Link(LinkType.LIVES_AT, household)), g.links)
            assertEquals("2", store.get(household).attrs["household_size"])

            store.update(grandson, Update(fields = mapOf("phone" to "139-0000-1111"), addTags = listOf("volunteer")))
            assertEquals("139-0000-1111", store.get(grandson).fields["phone"])
            // The history says what changed, from what to what.
            val last = store.history(grandson).last()
            assertTrue(FieldChange("phone", "+86 138 0013 8000", "139-0000-1111") in last.changes, "${last.changes}")
            assertTrue(FieldChange("tags", null, "volunteer") in last.changes, "${last.changes}")

            // Lists and search, as the app's screens use them.
            val people = store.list(ListQuery(kind = Kind.PERSON, area = "g1"))
            assertEquals(setOf("王秀英", "王磊"), people.items.map { it.title }.toSet())
            // A list masks the ID number as the CLI does; the record itself has it in full.
            assertEquals("****0021", people.items.single { it.id == grandma }.fields["id_number"])
            assertEquals("110105194105090021", store.get(grandma).fields["id_number"])
            // A worker may not move the household out of the grid: nothing moves.
            assertFailsWith<GridworkException> { store.moveHousehold(household, "g2") }
            assertEquals("g1", store.get(grandma).area)
            // Registering her again (as written in Latin letters, same birth date): a candidate.
            val dup = store.duplicateCandidates(person("g1", "Wang Xiuying", "birth_date" to "1941-05-09"))
            assertEquals(listOf(grandma), dup.map { it.record.id })
            assertEquals(listOf(DuplicateReason.SAME_NAME_AND_BIRTH_DATE), dup.single().reasons)
            // An export an app can save and share: CSV with a byte-order mark, ID numbers masked.
            val csv = store.exportRecords(ExportQuery(Kind.PERSON, "g1", null, null, null, false), ExportFormat.CSV)
            assertEquals(listOf(0xEF.toByte(), 0xBB.toByte(), 0xBF.toByte()), csv.take(3))
            val text = csv.drop(3).toByteArray().toString(Charsets.UTF_8)
            assertTrue("王秀英" in text && "****0021" in text && "110105194105090021" !in text, text)
            assertNull(people.nextOffset)
            assertEquals(1, store.list(ListQuery(kind = Kind.PERSON, tag = "needs care")).items.size)
            assertEquals(listOf(grandma), store.search("秀英", Kind.PERSON, 10u).map { it.id })
            assertEquals(2, store.list(ListQuery(kind = Kind.PERSON, area = "d1")).items.size, "subtree")

            // A visit, logged offline: where, who was seen, checklist answers, a photo.
            val visit = store.startVisit("g1", "Monthly check on elderly living alone", GeoPoint(31.2304, 121.4737, 8.0))
            store.addVisited(visit, household)
            store.addVisited(visit, grandma)
            store.answerChecklist(visit, "Smoke detector works?", "yes")
            store.answerChecklist(visit, "Medication sufficient?", "for one week")
            val photo = ByteArray(48_000) { (it * 31 % 251).toByte() }
            val ref = store.attachToVisit(visit, "door.jpg", "image/jpeg", photo)
            assertEquals(64, ref.sha256.length)
            assertEquals(photo.size.toULong(), ref.size)
            store.finishVisit(visit, "All well. Grandson visits on Sundays.")
            val v = store.get(visit)
            assertEquals(setOf(household, grandma), v.visited.toSet())
            assertEquals("yes", v.checklist["Smoke detector works?"])
            assertEquals(listOf(ref), v.attachments)
            assertNotNull(v.fields["ended_at"])
            assertEquals("pending", v.fields["review_state"])
            assertContentEquals(photo, store.attachment(ref.sha256))

            // An event reported on the spot, taken on and resolved by the worker.
            val event = store.create(
                NewRecord(
                    kind = Kind.EVENT, area = "g1",
                    fields = mapOf(
                        "category" to "hazard_report", "title" to "Stairwell light broken",
                        "priority" to "high", "due" to "2020-01-01T00:00:00Z",
                    ),
                )
            )
            store.link(grandma, LinkType.INVOLVED_IN, event)
            assertEquals("reported", store.get(event).fields["status"])
            assertEquals(listOf(event), store.overdueEvents(10u).map { it.id })
            assertEquals(EventStatus.ASSIGNED, store.transition(event, EventAction.Assign("wang"), null))
            assertEquals(listOf(event), store.assignedToMe(10u).map { it.id })
            assertEquals(EventStatus.IN_PROGRESS, store.transition(event, EventAction.Start, "on my way"))
            assertEquals(EventStatus.RESOLVED, store.transition(event, EventAction.Resolve, "bulb replaced"))
            val timeline = store.get(event).timeline.map { it.action }
            assertEquals(listOf("report", "assign", "start", "resolve"), timeline)

            // Delete and restore keep history; everything waits in the outbox for the next sync.
            store.delete(grandson, "moved away")
            assertTrue(store.get(grandson).deleted)
            store.restore(grandson)
            assertEquals(
                listOf("create", "link", "edit", "delete", "restore"),
                store.history(grandson).map { it.action },
            )
            assertTrue(store.history(grandson).all { it.user == "wang" && it.device == "wang-phone" })
            assertTrue(store.outboxLen() > 10u, "offline changes are queued")
            assertTrue(store.quarantined().isEmpty())
            assertTrue(store.conflicts().isEmpty())
            assertTrue(store.exportDocument(grandma).isNotEmpty())
            store.checkIntegrity()
            assertEquals(Identity("wang", "wang-phone", Role.WORKER, "g1"), store.identity())
            assertFalse(store.identityConfirmed(), "made offline: the relay has not confirmed it yet")
        }
        // The file on disk is encrypted: no resident's name in clear text.
        val bytes = File(dir, "wang.db").readBytes()
        assertFalse(String(bytes, Charsets.ISO_8859_1).contains("SQLite format 3"), "SQLCipher header")
        assertFalse(String(bytes, Charsets.UTF_8).contains("王秀英"))
    }

    @Test
    fun reopeningWithTheRightKeyKeepsData_andTheWrongKeyIsRefused() {
        val dir = tempDir("gw-key")
        val key = newKey()
        val id = openWorker(dir, key).use { store ->
            addAreaTree(store)
            store.create(person("g1", "Li Na"))
        }
        openWorker(dir, key).use { store -> assertEquals("Li Na", store.get(id).fields["name"]) }

        val wrong = assertFailsWith<GridworkException.WrongKey> { openWorker(dir, newKey()) }
        assertTrue(wrong.reason.isNotBlank())
        assertIs<GridworkException>(wrong)
        val short = assertFailsWith<GridworkException.InvalidInput> {
            GridworkStore.open(File(dir, "other.db").path, ByteArray(31), "wang", "wang-phone", Role.WORKER, "g1")
        }
        assertTrue(short.reason.contains("32 bytes"), short.reason)
        // A store belongs to one user.
        assertFailsWith<GridworkException.WrongUser> {
            GridworkStore.open(File(dir, "wang.db").path, key, "li", "li-phone", Role.WORKER, "g1")
        }
        // Opened without an identity, it is the one it was made with.
        GridworkStore.openExisting(File(dir, "wang.db").path, key).use { store ->
            assertEquals("wang", store.identity().userId)
            assertEquals("Li Na", store.get(id).fields["name"])
        }
        assertFailsWith<GridworkException.InvalidInput> {
            GridworkStore.openExisting(File(dir, "none.db").path, key)
        }
    }

    @Test
    fun refusalsArriveAsTypedExceptionsWithoutPersonalData() {
        openWorker(tempDir("gw-err"), newKey()).use { store ->
            addAreaTree(store)
            val e = assertFailsWith<GridworkException.InvalidInput> {
                store.create(person("g1", "Zhao Lei", "phone" to "13800138000x"))
            }
            assertTrue(e.reason.contains("phone"), e.reason)
            assertFalse(e.reason.contains("13800138000"), "the value must not leak: ${e.reason}")
            assertFailsWith<GridworkException.InvalidInput> { store.create(person("g1", "Zhao Lei", "sex" to "robot")) }
            assertFailsWith<GridworkException.InvalidInput> { store.create(person("g1", " ")) }
            val id = store.create(person("g1", "Zhao Lei"))
            assertFailsWith<GridworkException.InvalidInput> {
                store.update(id, Update(fields = mapOf("colour" to "blue")))
            }
            assertFailsWith<GridworkException.InvalidInput> {
                store.update(id, Update(fields = mapOf("birth_date" to "1950-02-30")))
            }
            assertFailsWith<GridworkException.NotFound> { store.get("0123456789abcdef0123456789abcdef") }
            assertFailsWith<GridworkException.OutOfScope> { store.create(person("g2", "Someone Else")) }
            val event = store.create(NewRecord(kind = Kind.EVENT, area = "g1", fields = mapOf("title" to "Noise")))
            assertFailsWith<GridworkException.InvalidTransition> { store.transition(event, EventAction.Close, null) }
            assertFailsWith<GridworkException.Forbidden> { store.transition(event, EventAction.Assign("li"), null) }
            val visit = store.startVisit("g1", "check", null)
            store.finishVisit(visit, null)
            assertFailsWith<GridworkException.Forbidden> { store.reviewVisit(visit, ReviewState.APPROVED, null) }
            store.delete(id, null)
            assertFailsWith<GridworkException.Deleted> { store.update(id, Update(notes = "x")) }
            assertFailsWith<GridworkException.Conflict> { store.resolveConflict(visit, "purpose", "x") }
        }
    }

    @Test
    fun aSupervisorWorksInTheGridsBelow_butNeverReviewsItsOwnVisit() {
        val dir = tempDir("gw-sup")
        val key = newKey()
        val supervisor = GridworkStore.open(File(dir, "zhou.db").path, key, "zhou", "zhou-pad", Role.SUPERVISOR, "c1")
        supervisor.use { s ->
            addAreaTree(s)
            assertTrue(s.inScope("g2"))
            val visit = s.startVisit("g2", "handover", null)
            // Only a finished visit is reviewed, and never by its own worker (reviews of a worker's
            // visit go through the relay: SyncTest).
            val unfinished = assertFailsWith<GridworkException.Forbidden> {
                s.reviewVisit(visit, ReviewState.APPROVED, null)
            }
            assertTrue(unfinished.reason.contains("own visit"), unfinished.reason)
            s.finishVisit(visit, null)
            assertEquals(listOf(visit), s.reviewQueue(10u).map { it.id })
            assertFailsWith<GridworkException.Forbidden> { s.reviewVisit(visit, ReviewState.RETURNED, "redo") }
            assertEquals("pending", s.get(visit).fields["review_state"])
            val place = s.create(NewRecord(kind = Kind.PLACE, area = "g1", fields = mapOf("name" to "Shop 5")))
            s.moveRecord(place, "g2")
            assertEquals("g2", s.get(place).area)
        }
    }

    @Test
    fun closedObjectsRefuseCalls() {
        val dir = tempDir("gw-close")
        val store = openWorker(dir, newKey())
        addAreaTree(store)
        store.close()
        assertFailsWith<IllegalStateException> { store.areas() }
        store.close() // closing twice is harmless
        // `use {}` closes too, even when the block throws.
        var escaped: GridworkStore? = null
        assertFailsWith<GridworkException.NotFound> {
            openWorker(dir, newKey(), user = "li").use { s ->
                escaped = s
                s.area("nowhere")
            }
        }
        assertFailsWith<IllegalStateException> { escaped!!.areas() }
    }

    @Test
    fun memoryStaysFlatOver10000Calls() {
        val dir = tempDir("gw-mem")
        val key = newKey()
        openWorker(dir, key).use { store ->
            addAreaTree(store)
            val id = store.create(
                person("g1", "陈建国", "sex" to "male", "birth_date" to "1950-01-01", "phone" to "+86 139 0000 0000")
                    .copy(tags = listOf("needs care"), attrs = mapOf("hukou" to "local"), notes = "x".repeat(500))
            )
            // RSS after each round of 10,000 get() calls. The test JVM runs with a fixed, pre-touched
            // heap (-Xms=-Xmx, AlwaysPreTouch: see test-kotlin.sh), so RSS moves with native memory.
            // The first round warms up JIT and allocator arenas; after it a leak shows as growth per
            // round (one leaked Record, ~1 KiB with its maps, is ~10 MB a round), no leak as a flat line.
            val getRounds = (1..3).map {
                var names = 0
                repeat(10_000) { if (store.get(id).fields["name"] == "陈建国") names++ }
                assertEquals(10_000, names)
                System.gc()
                Fixtures.rssKiB()
            }
            // Objects: 500 more handles on the same store file per round, each closed explicitly.
            val openRounds = (1..3).map {
                repeat(500) { openWorker(dir, key).use { s -> s.outboxLen() } }
                System.gc()
                Fixtures.rssKiB()
            }
            val getGrowth = getRounds.last() - getRounds.first()
            val openGrowth = openRounds.last() - openRounds.first()
            println("memory: VmRSS KiB after each 10,000 get(): $getRounds; growth over the last 20,000 calls: $getGrowth KiB")
            println("memory: VmRSS KiB after each 500 open+close: $openRounds; growth over the last 1,000: $openGrowth KiB")
            assertTrue(getGrowth < 8 * 1024, "RSS grew by $getGrowth KiB over 20,000 get() calls")
            assertTrue(openGrowth < 8 * 1024, "RSS grew by $openGrowth KiB over 1,000 open/close")
        }
    }
}
