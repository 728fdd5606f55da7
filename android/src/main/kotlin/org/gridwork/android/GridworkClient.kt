// The idiomatic Kotlin layer over the generated bindings (org.gridwork.core): the short, blocking store
// calls as suspend functions on Dispatchers.IO, and sync as a Flow of progress whose cancellation
// cancels the sync. The long calls (sync, bulk import, export) are the bindings' own suspend functions
// (uniffi async); this layer only adds what uniffi cannot: the IO hop and the progress Flow. Plain Kotlin + kotlinx.coroutines (no android.* imports), so the JVM tests compile and run
// it too (bindings/scripts/test-kotlin.sh).
package org.gridwork.android

import kotlinx.coroutines.CoroutineDispatcher
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.callbackFlow
import kotlinx.coroutines.withContext
import org.gridwork.core.*

/**
 * One user's store on this device. Open it once (e.g. in your Application or a DI singleton) with the
 * key from the Android Keystore, and close it when the user signs out.
 *
 * Every store call blocks (SQLite, Automerge), so each function here hops to [io]. Errors arrive as
 * [GridworkException] subclasses (`NotFound`, `InvalidInput`, `WrongKey`, ...).
 */
class GridworkClient(
    val store: GridworkStore,
    private val io: CoroutineDispatcher = Dispatchers.IO,
) : AutoCloseable {

    companion object {
        /** Opens (or creates) the store at [path] with the 32-byte [key]. */
        suspend fun open(
            path: String,
            key: ByteArray,
            identity: Identity,
            io: CoroutineDispatcher = Dispatchers.IO,
        ): GridworkClient = withContext(io) {
            GridworkClient(
                GridworkStore.open(path, key, identity.userId, identity.deviceId, identity.role, identity.area),
                io,
            )
        }
    }

    /** Runs any store call on the IO dispatcher: `client.call { links_of(id) }`. */
    suspend fun <T> call(block: GridworkStore.() -> T): T = withContext(io) { store.block() }

    suspend fun areas(): List<Area> = call { areas() }
    suspend fun create(record: NewRecord): String = call { create(record) }
    suspend fun get(id: String): Record = call { get(id) }
    suspend fun update(id: String, update: Update) = call { update(id, update) }
    suspend fun delete(id: String, reason: String? = null) = call { delete(id, reason) }
    suspend fun restore(id: String) = call { restore(id) }
    suspend fun link(source: String, type: LinkType, target: String) = call { link(source, type, target) }
    suspend fun list(query: ListQuery): Page = call { list(query) }
    suspend fun search(text: String, kind: Kind? = null, limit: UInt = 50u): List<RecordSummary> =
        call { search(text, kind, limit) }
    suspend fun transition(eventId: String, action: EventAction, comment: String? = null): EventStatus =
        call { transition(eventId, action, comment) }
    suspend fun overdueEvents(limit: UInt = 100u): List<RecordSummary> = call { overdueEvents(limit) }
    suspend fun assignedToMe(limit: UInt = 100u): List<RecordSummary> = call { assignedToMe(limit) }
    suspend fun startVisit(area: String, purpose: String, location: GeoPoint? = null): String =
        call { startVisit(area, purpose, location) }
    suspend fun addVisited(visitId: String, recordId: String) = call { addVisited(visitId, recordId) }
    suspend fun answerChecklist(visitId: String, question: String, answer: String) =
        call { answerChecklist(visitId, question, answer) }
    suspend fun attachToVisit(visitId: String, name: String, mime: String, bytes: ByteArray): AttachmentRef =
        call { attachToVisit(visitId, name, mime, bytes) }
    suspend fun finishVisit(visitId: String, notes: String? = null) = call { finishVisit(visitId, notes) }
    suspend fun reviewQueue(limit: UInt = 100u): List<RecordSummary> = call { reviewQueue(limit) }
    suspend fun conflicts(): List<Conflict> = call { conflicts() }
    suspend fun resolveConflict(id: String, field: String, value: String) = call { resolveConflict(id, field, value) }
    suspend fun outboxLen(): ULong = call { outboxLen() }

    /**
     * Syncs and returns the report (the bindings' `suspend fun syncAsync`: no thread is held while it
     * runs). Cancelling the calling coroutine cancels the sync; [onProgress] is called on the sync's
     * thread.
     */
    suspend fun sync(config: SyncConfig, onProgress: (SyncProgress) -> Unit = {}): SyncReport =
        store.syncAsync(config, observer(onProgress))

    /**
     * Syncs, emitting progress. The flow completes when the sync is done and fails with the sync's
     * [GridworkException]; cancelling the collector (leaving the screen, `take(n)`, a timeout) cancels
     * the sync.
     */
    fun syncProgress(config: SyncConfig): Flow<SyncProgress> = callbackFlow {
        val error = try {
            store.syncAsync(config, observer { trySend(it) })
            null
        } catch (e: GridworkException) {
            e
        }
        close(error)
        awaitClose {}
    }.buffer(Channel.UNLIMITED)

    /** A grid's bulk import, in one transaction: all or none (`createManyAsync`). */
    suspend fun createMany(records: List<NewRecord>): List<String> = store.createManyAsync(records)

    /** A list exported as CSV, XLSX or GeoJSON bytes for the app to save and share. */
    suspend fun exportRecords(query: ExportQuery, format: ExportFormat): ByteArray =
        store.exportRecordsAsync(query, format)

    override fun close() = store.close()

    private fun observer(onProgress: (SyncProgress) -> Unit) = object : SyncObserver {
        override fun onProgress(progress: SyncProgress) {
            // An exception thrown back into Rust would abort the sync as an internal error.
            try {
                onProgress(progress)
            } catch (_: Throwable) {
            }
        }
    }
}
