import IdempotencyCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import PostgresNIO
import TestSupport
import Testing

@testable import IdempotencyProxy

/// Who sends the next batch (`CommitTurnLine`), as rows: each step a member taking or leaving
/// the turn at a time (ms), and what it answers.
@Suite struct CommitTurnLineTests {
    enum Step: Sendable {
        /// Takes at `ms`: may it send?
        case take(Int, ms: UInt64, sends: Bool)
        /// Leaves at `ms`: who is handed the turn?
        case leave(Int, ms: UInt64, handed: Int?)
    }

    struct Row: Sendable, CustomTestStringConvertible {
        let rule: String
        let steps: [Step]
        var testDescription: String { rule }
    }

    @Test(arguments: [
        Row(rule: "a free turn is taken at once", steps: [.take(0, ms: 0, sends: true)]),
        Row(rule: "the holder takes again without waiting", steps: [.take(0, ms: 0, sends: true), .take(0, ms: 1, sends: true)]),
        Row(rule: "another waits while the turn is held", steps: [.take(0, ms: 0, sends: true), .take(1, ms: 1, sends: false)]),
        Row(
            rule: "the holder leaving hands the turn to the one waiting",
            steps: [.take(0, ms: 0, sends: true), .take(1, ms: 1, sends: false), .leave(0, ms: 2, handed: 1), .take(0, ms: 3, sends: false)]),
        Row(rule: "a holder leaving with nobody waiting frees the turn", steps: [.take(0, ms: 0, sends: true), .leave(0, ms: 1, handed: nil), .take(1, ms: 2, sends: true)]),
        Row(
            rule: "those waiting are handed the turn in the order they asked, each once",
            steps: [
                .take(0, ms: 0, sends: true), .take(2, ms: 1, sends: false), .take(1, ms: 2, sends: false), .take(2, ms: 3, sends: false),
                .leave(0, ms: 4, handed: 2), .leave(2, ms: 5, handed: 1), .leave(1, ms: 6, handed: nil),
            ]),
        Row(
            rule: "one that leaves the line is not handed the turn",
            steps: [.take(0, ms: 0, sends: true), .take(1, ms: 1, sends: false), .leave(1, ms: 2, handed: nil), .leave(0, ms: 3, handed: nil)]),
        Row(
            rule: "a turn held past patience is gone around, and the holder keeps it",
            steps: [
                .take(0, ms: 0, sends: true), .take(1, ms: 100, sends: false), .take(1, ms: 101, sends: true),
                .take(1, ms: 102, sends: true), .leave(1, ms: 103, handed: nil), .leave(0, ms: 104, handed: nil), .take(1, ms: 105, sends: true),
            ]),
        Row(
            rule: "patience counts from when the turn was handed, not first taken",
            steps: [.take(0, ms: 0, sends: true), .take(1, ms: 1, sends: false), .leave(0, ms: 90, handed: 1), .take(0, ms: 150, sends: false)]),
        Row(
            rule: "one that went around and left waits again behind a holder within patience",
            steps: [
                .take(0, ms: 0, sends: true), .take(1, ms: 150, sends: true), .leave(1, ms: 151, handed: nil), .leave(0, ms: 152, handed: nil),
                .take(0, ms: 153, sends: true), .take(1, ms: 154, sends: false),
            ]),
        Row(
            rule: "a time read a moment before the holder took the turn is no wait at all",
            steps: [.take(0, ms: 10, sends: true), .take(1, ms: 9, sends: false)]),
    ])
    func line(_ row: Row) {
        var line = CommitTurnLine(patience: 100_000_000)
        for (index, step) in row.steps.enumerated() {
            switch step {
            case .take(let member, let ms, let sends):
                #expect(line.take(member, now: ms * 1_000_000) == sends, "step \(index)")
            case .leave(let member, let ms, let handed):
                #expect(line.leave(member, now: ms * 1_000_000) == handed, "step \(index)")
            }
        }
    }
}

/// Which event loops share a turn: each pair of them, whatever the number of loops.
@Suite struct CommitTurnPairsTests {
    @Test(arguments: [(1, [[0]]), (2, [[0, 1]]), (3, [[0, 1], [2]]), (4, [[0, 1], [2, 3]]), (16, (0..<8).map { [2 * $0, 2 * $0 + 1] })])
    func eachPairOfLoopsSharesATurn(loops: Int, pairs: [[Int]]) throws {
        var loader = ConfigLoader()
        loader.applySet("postgres_url=postgres://proxy:secret@127.0.0.1:5432/app")
        let configuration = try loader.finish().get()
        let wiring = PostgresWiring(url: configuration.postgresURL!, tls: .disable, configuration: configuration, loops: loops)
        #expect(wiring.turns.count == pairs.count)
        for pair in pairs {
            #expect(pair.allSatisfy { wiring.turn(ofLoop: $0) === wiring.turn(ofLoop: pair[0]) }, "\(pair)")
        }
        for (first, second) in zip(pairs, pairs.dropFirst()) {
            #expect(wiring.turn(ofLoop: first[0]) !== wiring.turn(ofLoop: second[0]), "\(first) and \(second)")
        }
    }
}

/// The turn between two loops' stores against a real PostgreSQL: a batch held on the server
/// (a row another transaction is inserting) keeps the other loop's batch back until it is
/// answered, or, with patience spent, no longer.
@Suite struct CommitTurnLiveTests {
    typealias Store = (any EventLoop, NIOLoopBound<PostgresRecordStore>)
    typealias ClaimResult = Result<ProtectedRequestMachine.ClaimAnswer, LongTermStoreError>

    @Test func aLoopWaitsForTheTurnWhileAnothersBatchIsOutAndIsHandedItAfter() async throws {
        let table = TestTable()
        let stores = try await table.loopStores(turn: CommitTurn(patience: .hours(1)), settings: ["postgres_timeout": "20s"], metrics: ProxyMetrics())
        let (a, b) = try await withRowHeld("a", of: table, stores: stores) {
            let a = Self.claim("a", on: stores[0])
            try await waitUntilBlocked(table)
            let b = Self.claim("b", on: stores[1])
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await table.integer("SELECT count(*) FROM $TABLE WHERE record_key = 'b'") == 0, "b's claim waits for the turn")
            return (a, b)
        }
        try await eventually("b's claim answered once a's is", within: 10) { b.answered.withLockedValue { $0 } }
        #expect(try await a.result.get() == .success(.claimed))
        #expect(try await b.result.get() == .success(.claimed))
        await Self.close(stores)
    }

    /// b's claim joins the line while a's batch is stuck, and nothing else comes: it goes
    /// around once the patience has passed.
    @Test func aLoopInLineGoesAroundABatchHeldPastPatience() async throws {
        let table = TestTable()
        let stores = try await table.loopStores(turn: CommitTurn(), settings: ["postgres_timeout": "20s"], metrics: ProxyMetrics())
        let a = try await withRowHeld("a", of: table, stores: stores) {
            let a = Self.claim("a", on: stores[0])
            try await waitUntilBlocked(table)
            let b = Self.claim("b", on: stores[1])
            try await eventually("b's claim answered", within: 10) { b.answered.withLockedValue { $0 } }
            #expect(try await b.result.get() == .success(.claimed))
            #expect(!a.answered.withLockedValue { $0 }, "b is answered while a's batch still holds the turn")
            return a
        }
        #expect(try await a.result.get() == .success(.claimed))
        await Self.close(stores)
    }

    @Test func aClaimWaitingForTheTurnFailsAtOnceWhenItsStoreCloses() async throws {
        let table = TestTable()
        let stores = try await table.loopStores(turn: CommitTurn(patience: .hours(1)), settings: ["postgres_timeout": "20s"], metrics: ProxyMetrics())
        let a = try await withRowHeld("a", of: table, stores: stores) {
            let a = Self.claim("a", on: stores[0])
            try await waitUntilBlocked(table)
            // Queued on the loop before the close: b's claim waits in line when the store closes.
            let b = Self.claim("b", on: stores[1])
            try await stores[1].0.submit { stores[1].1.value.close() }.get()
            try await eventually("b's claim answered", within: 10) { b.answered.withLockedValue { $0 } }
            let answer = try await b.result.get()
            #expect({ if case .failure(.unavailable) = answer { true } else { false } }(), "b's claim: \(answer)")
            return a
        }
        #expect(try await a.result.get() == .success(.claimed))
        await Self.close(stores)
    }

    private static func close(_ stores: [Store]) async {
        for store in stores { try? await store.0.submit { store.1.value.close() }.get() }
    }

    /// Both stores' connections opened (a claim each), then `key` inserted by a transaction of
    /// the test's own, left open while `body` runs: a claim of `key` waits for it. Rolled back
    /// after, whether `body` throws or not.
    private func withRowHeld<T>(_ key: String, of table: TestTable, stores: [Store], _ body: () async throws -> T) async throws -> T {
        for (index, store) in stores.enumerated() { #expect(try await Self.claim("warm\(index)", on: store).result.get() == .success(.claimed)) }
        let blocker = try await TestTable.connect(table.url)
        let logger = Logger(label: "test-sql")
        do {
            _ = try await blocker.query("BEGIN", logger: logger)
            _ = try await blocker.query(
                PostgresQuery(unsafeSQL: "INSERT INTO \(table.name) (record_key, owner, fingerprint, expires_at) VALUES ('\(key)', '\\x01', '\\x02', now() + interval '1 hour')"),
                logger: logger)
            let result = try await body()
            _ = try await blocker.query("ROLLBACK", logger: logger)
            try await blocker.close()
            return result
        } catch {
            try? await blocker.close()
            throw error
        }
    }

    /// A statement on the table waits for a lock.
    private func waitUntilBlocked(_ table: TestTable) async throws {
        try await eventually("a claim waiting for the held row") {
            try await table.integer("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND position('\(table.name)' in query) > 0") == 1
        }
    }

    /// A claim sent from the store's loop; `answered` is set when it is.
    private static func claim(_ key: String, on store: Store) -> (result: EventLoopFuture<ClaimResult>, answered: NIOLockedValueBox<Bool>) {
        let answered = NIOLockedValueBox(false)
        let result = store.0.flatSubmit {
            let promise = store.0.makePromise(of: ClaimResult.self)
            store.1.value.claim(
                key: key, owner: [UInt8](repeating: 1, count: IdempotencyRecord.ownerLength),
                fingerprint: [UInt8](repeating: 7, count: IdempotencyRecord.fingerprintLength), lockTTLMs: 60_000, retentionMs: 3_600_000,
                deadlineMs: WallClock.milliseconds() + 60_000
            ) {
                answered.withLockedValue { $0 = true }
                promise.succeed($0)
            }
            return promise.futureResult
        }
        return (result, answered)
    }
}
