// Mirrors bindings/tests/kotlin/StoreTest.kt (and the sync test, against a relay given in the
// environment). Runs on a Mac: `xcodebuild test -scheme Gridwork -destination 'platform=iOS Simulator,name=iPhone 15'`
// after ios/build-xcframework.sh. Not compiled on Linux (no Swift toolchain there).
import Foundation
import Security
import XCTest

@testable import Gridwork

final class GridworkTests: XCTestCase {
    private var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    /// A fresh random 32-byte key, as the Keychain would hold one.
    private func newKey() -> Data {
        var bytes = [UInt8](repeating: 0, count: 32)
        XCTAssertEqual(SecRandomCopyBytes(kSecRandomDefault, bytes.count, &bytes), errSecSuccess)
        return Data(bytes)
    }

    private func openWorker(_ key: Data, user: String = "wang") throws -> GridworkStore {
        try GridworkStore.open(
            path: dir.appendingPathComponent("\(user).db").path, key: key,
            userId: user, deviceId: "\(user)-pad", role: .worker, area: "g1")
    }

    private func addAreaTree(_ store: GridworkStore) throws {
        _ = try store.upsertArea(id: "d1", parent: nil, level: .district, name: "East District")
        _ = try store.upsertArea(id: "s1", parent: "d1", level: .street, name: "River Street")
        _ = try store.upsertArea(id: "c1", parent: "s1", level: .community, name: "Willow Community")
        _ = try store.upsertArea(id: "g1", parent: "c1", level: .grid, name: "Grid 1")
        _ = try store.upsertArea(id: "g2", parent: "c1", level: .grid, name: "Grid 2")
    }

    private func person(_ name: String, _ fields: [String: String] = [:]) -> NewRecord {
        NewRecord(kind: .person, area: "g1", fields: fields.merging(["name": name]) { a, _ in a })
    }

    func testAGridWorkersDayOffline() throws {
        let store = try openWorker(newKey())
        try addAreaTree(store)
        XCTAssertEqual(try store.areas().map(\.id), ["d1", "s1", "c1", "g1", "g2"])

        let household = try store.create(record: NewRecord(
            kind: .place, area: "g1",
            fields: ["category": "unit", "name": "Block 3, Unit 201", "address": "幸福路12号"]))
        let grandma = try store.create(record: NewRecord(
            kind: .person, area: "g1",
            fields: ["name": "王秀英", "sex": "female", "birth_date": "1941-05-09", "home_place": household],
            tags: ["lives alone"]))
        let grandson = try store.create(record: person("王磊", ["phone": "+86 138 0013 8000"]))
        for resident in [grandma, grandson] {
            try store.link(source: resident, linkType: .livesAt, target: household)
        }
        XCTAssertEqual(try store.linksOf(id: household).count, 2)
        XCTAssertEqual(try store.get(id: grandma).fields["name"], "王秀英")
        XCTAssertEqual(try store.list(query: ListQuery(kind: .person, area: "g1")).items.count, 2)
        XCTAssertEqual(try store.search(text: "秀英", kind: .person, limit: 10).map(\.id), [grandma])

        let visit = try store.startVisit(
            area: "g1", purpose: "Monthly check", location: GeoPoint(lat: 31.2304, lon: 121.4737, accuracy: 8))
        try store.addVisited(visitId: visit, recordId: household)
        try store.answerChecklist(visitId: visit, question: "Smoke detector works?", answer: "yes")
        let photo = Data((0..<48_000).map { UInt8($0 * 31 % 251) })
        let ref = try store.attachToVisit(visitId: visit, name: "door.jpg", mime: "image/jpeg", bytes: photo)
        try store.finishVisit(visitId: visit, notes: "All well.")
        let v = try store.get(id: visit)
        XCTAssertEqual(v.visited, [household])
        XCTAssertEqual(v.attachments, [ref])
        XCTAssertEqual(try store.attachment(sha256: ref.sha256), photo)

        let event = try store.create(record: NewRecord(
            kind: .event, area: "g1",
            fields: ["category": "hazard_report", "title": "Stairwell light broken", "priority": "high"]))
        XCTAssertEqual(try store.transition(eventId: event, action: .assign(assignee: "wang"), comment: nil), .assigned)
        XCTAssertEqual(try store.transition(eventId: event, action: .start, comment: nil), .inProgress)
        XCTAssertEqual(try store.assignedToMe(limit: 10).map(\.id), [event])
        XCTAssertGreaterThan(try store.outboxLen(), 5)
        try store.checkIntegrity()
    }

    func testWrongKeyAndInvalidInputAreTypedErrors() throws {
        let key = newKey()
        try addAreaTree(try openWorker(key))
        XCTAssertThrowsError(try openWorker(newKey())) { error in
            guard case GridworkError.WrongKey = error else { return XCTFail("got \(error)") }
        }
        let store = try openWorker(key)
        XCTAssertThrowsError(try store.create(record: person("Zhao Lei", ["phone": "13800138000x"]))) { error in
            guard case let GridworkError.InvalidInput(reason) = error else { return XCTFail("got \(error)") }
            XCTAssertTrue(reason.contains("phone"))
            XCTAssertFalse(reason.contains("13800138000"))
        }
        XCTAssertThrowsError(try store.get(id: "0123456789abcdef0123456789abcdef")) { error in
            guard case GridworkError.NotFound = error else { return XCTFail("got \(error)") }
        }
        XCTAssertThrowsError(try store.create(record: NewRecord(kind: .person, area: "g2", fields: ["name": "X"]))) { error in
            guard case GridworkError.OutOfScope = error else { return XCTFail("got \(error)") }
        }
    }

    func testManyCallsAndObjectsAreReleased() throws {
        let key = newKey()
        let store = try openWorker(key)
        try addAreaTree(store)
        let id = try store.create(record: person("陈建国"))
        for _ in 0..<10_000 {
            _ = try store.get(id: id)
        }
        // Objects are freed by deinit when the last reference goes.
        for _ in 0..<500 {
            autoreleasepool { _ = try? openWorker(key).outboxLen() }
        }
    }

    private final class Recorder: SyncObserver, @unchecked Sendable {
        private let lock = NSLock()
        private var seen: [SyncProgress] = []
        func onProgress(progress: SyncProgress) {
            lock.lock(); seen.append(progress); lock.unlock()
        }
        var phases: [SyncPhase] { lock.lock(); defer { lock.unlock() }; return seen.map(\.phase) }
    }

    /// Needs a relay: GRIDWORK_RELAY_URL and GRIDWORK_TOKEN_WANG / GRIDWORK_TOKEN_LI of two workers of g1
    /// whose devices are `wang-pad` and `li-pad` (see bindings/tests/kotlin/SyncTest.kt for the setup).
    func testTwoDevicesMergeAndResolveAConflict() throws {
        let env = ProcessInfo.processInfo.environment
        guard let url = env["GRIDWORK_RELAY_URL"], let wangToken = env["GRIDWORK_TOKEN_WANG"],
              let liToken = env["GRIDWORK_TOKEN_LI"] else {
            throw XCTSkip("no relay configured")
        }
        let wang = try openWorker(newKey(), user: "wang")
        let li = try openWorker(newKey(), user: "li")
        let wangConfig = SyncConfig(serverUrl: url, token: wangToken)
        let liConfig = SyncConfig(serverUrl: url, token: liToken)
        let recorder = Recorder()
        _ = try wang.sync(config: wangConfig, observer: recorder)
        XCTAssertEqual(recorder.phases.first, .connecting)
        XCTAssertEqual(recorder.phases.last, .done)
        _ = try li.sync(config: liConfig, observer: nil)

        let id = try wang.create(record: person("张伟"))
        _ = try wang.sync(config: wangConfig, observer: nil)
        _ = try li.sync(config: liConfig, observer: nil)
        try wang.update(id: id, update: Update(fields: ["phone": "+86 131 1111 1111"]))
        try li.update(id: id, update: Update(fields: ["phone": "+86 131 2222 2222", "birth_date": "1950-07-01"]))
        _ = try wang.sync(config: wangConfig, observer: nil)
        _ = try li.sync(config: liConfig, observer: nil)
        _ = try wang.sync(config: wangConfig, observer: nil)
        for device in [wang, li] {
            XCTAssertEqual(try device.get(id: id).fields["birth_date"], "1950-07-01")
            XCTAssertEqual(try device.conflicts().count, 1)
        }
        try li.resolveConflict(id: id, field: "phone", value: "+86 131 1111 1111")
        _ = try li.sync(config: liConfig, observer: nil)
        _ = try wang.sync(config: wangConfig, observer: nil)
        for device in [wang, li] {
            XCTAssertTrue(try device.conflicts().isEmpty)
            XCTAssertEqual(try device.get(id: id).fields["phone"], "+86 131 1111 1111")
        }

        // Cancel a sync stuck retrying an unreachable relay.
        let handle = try wang.startSync(
            config: SyncConfig(serverUrl: "http://127.0.0.1:9", token: "x", maxRetries: 1000), observer: nil)
        XCTAssertNil(try handle.waitTimeout(timeoutMs: 300))
        handle.cancel()
        XCTAssertThrowsError(try handle.wait()) { error in
            guard case GridworkError.Cancelled = error else { return XCTFail("got \(error)") }
        }
    }
}
