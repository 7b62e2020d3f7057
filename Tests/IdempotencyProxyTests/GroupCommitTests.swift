import IdempotencyCore
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import Testing

@testable import IdempotencyProxy

/// Group commit against a real PostgreSQL, directly and through PgBouncer (where statements go
/// unnamed): claims and completions queued in one loop turn go out as few statements, each
/// answered as it would have been alone.
@Suite struct GroupCommitTests {
    typealias ClaimResult = Result<ProtectedRequestMachine.ClaimAnswer, LongTermStoreError>

    @Test(arguments: PostgresPath.allCases)
    func claimsAndCompletionsQueuedTogetherGoOutTogether(path: PostgresPath) async throws {
        let table = TestTable(url: try path.url)
        let metrics = ProxyMetrics()
        // One connection: everything queued behind the first statement goes out as the next.
        let (loop, store) = try await table.loopStore(connections: 1, metrics: metrics)
        let first = [UInt8](repeating: 1, count: IdempotencyRecord.ownerLength)
        let second = [UInt8](repeating: 2, count: IdempotencyRecord.ownerLength)
        let fingerprint = [UInt8](repeating: 7, count: IdempotencyRecord.fingerprintLength)
        let keys = (0..<10).map { "k\($0)" }

        // Ten keys claimed by one owner, five of them again by another, and one claim too late,
        // all in one loop turn.
        let claimed = try await loop.submit { () -> EventLoopFuture<[(String, [UInt8], ClaimResult)]> in
            var answers: [EventLoopFuture<(String, [UInt8], ClaimResult)>] = []
            func claim(_ key: String, _ owner: [UInt8], deadline: Int64) {
                let promise = loop.makePromise(of: (String, [UInt8], ClaimResult).self)
                store.value.claim(key: key, owner: owner, fingerprint: fingerprint, lockTTLMs: 60_000, retentionMs: 3_600_000, deadlineMs: deadline) {
                    promise.succeed((key, owner, $0))
                }
                answers.append(promise.futureResult)
            }
            let deadline = WallClock.milliseconds() + 30_000
            for key in keys { claim(key, first, deadline: deadline) }
            for key in keys.prefix(5) { claim(key, second, deadline: deadline) }
            claim("late", first, deadline: WallClock.milliseconds() - 1)
            return EventLoopFuture.whenAllSucceed(answers, on: loop)
        }.get().get()
        let inFlight = IdempotencyRecord(owner: first, fingerprint: fingerprint, state: .inFlight)
        for (key, owner, result) in claimed {
            switch (key, owner) {
            case ("late", _): #expect(result == .failure(.lateClaim), "\(key)")
            case (_, first): #expect(result == .success(.claimed), "\(key)")
            default:
                guard case .success(.existing(let record, let expiresInMs)) = result else {
                    Issue.record("\(key) claimed again by another owner: \(result)")
                    continue
                }
                #expect(record == inFlight && (expiresInMs ?? 0) > 0, "\(key): the first owner's live claim")
            }
        }
        // The first claim alone, then all the rest but the duplicates, then the duplicates.
        #expect(statements(metrics) == 3)

        let response = StoredResponse(status: 201, headers: [], body: Array("ok".utf8))
        let completed = try await loop.submit { () -> EventLoopFuture<[(String, [UInt8], Result<Bool, LongTermStoreError>)]> in
            var answers: [EventLoopFuture<(String, [UInt8], Result<Bool, LongTermStoreError>)>] = []
            func complete(_ key: String, _ owner: [UInt8]) {
                let promise = loop.makePromise(of: (String, [UInt8], Result<Bool, LongTermStoreError>).self)
                let record = IdempotencyRecord(owner: owner, fingerprint: fingerprint, state: .completed(response), completedAtMs: 1)
                store.value.complete(key: key, record: record, retentionMs: 60_000, lockEndMs: WallClock.milliseconds() + 60_000) {
                    promise.succeed((key, owner, $0))
                }
                answers.append(promise.futureResult)
            }
            for key in keys { complete(key, first) }
            complete("k0", second)
            return EventLoopFuture.whenAllSucceed(answers, on: loop)
        }.get().get()
        for (key, owner, result) in completed {
            #expect(result == .success(owner == first), "\(key): only the owner's completion is stored")
        }
        // The first alone, then the other nine with the other owner's k0 (its first owner's
        // went out before), which the owners' update passes over and the full statement
        // refuses.
        #expect(statements(metrics) == 3 + 3)
        let stored = try await table.integer("SELECT count(*) FROM $TABLE WHERE record IS NOT NULL AND expires_at > now()")
        #expect(stored == 10)
        try await loop.submit { store.value.close() }.get()
    }

    /// The statement reads each row's own deadline where it takes over an expired row: in one
    /// batch, one claim in time and one late.
    @Test func eachRowOfABatchHasItsOwnDeadline() async throws {
        let (table, sql) = try await Self.tableWithExpiredRows(["in-time", "late"])
        let now = WallClock.milliseconds()
        let expiresIn = try await Self.claimedExpiries(table.run(sql.claim, ["late", "in-time"], [Self.ours, Self.ours],
            [Self.fingerprint, Self.fingerprint], [Int64(60_000), 60_000], [now - 1, now + 60_000], [Int64(60_000), 60_000]))
        #expect((expiresIn["in-time"] ?? 0) > 0, "claimed")
        #expect((expiresIn["late"] ?? 1) <= 0, "written expired: late")
        // The late one may be swept once expired; the other only after its lock and retention
        // (60 s each), past what its lock alone would give.
        #expect(try await table.integer("SELECT count(*) FROM $TABLE WHERE record_key = 'late' AND sweep_after <= now()") == 1)
        #expect(try await table.integer("SELECT count(*) FROM $TABLE WHERE record_key = 'in-time' AND sweep_after >= now() + interval '90 seconds'") == 1)
    }

    /// A row whose lock is held past its claim's deadline is written expired once the lock is
    /// free, by that claim's own deadline, not another row's of the batch.
    @Test func aRowLockedPastItsDeadlineIsWrittenExpiredAmongOthersInTime() async throws {
        let (table, sql) = try await Self.tableWithExpiredRows(["a", "x"])
        try await TestTable.withSession(url: table.url) { locker in
            let logger = Logger(label: "test-sql")
            _ = try await locker.query("BEGIN", logger: logger).collect()
            _ = try await locker.query(PostgresQuery(unsafeSQL: "SELECT 1 FROM \"\(table.name)\" WHERE record_key = 'x' FOR UPDATE"), logger: logger).collect()
            let now = WallClock.milliseconds()
            async let claimed = table.run(
                sql.claim, ["a", "x"], [Self.ours, Self.ours], [Self.fingerprint, Self.fingerprint], [Int64(60_000), 60_000],
                [now + 60_000, now + 300], [Int64(60_000), 60_000])
            try await Task.sleep(for: .milliseconds(800))
            _ = try await locker.query("COMMIT", logger: logger).collect()
            let expiresIn = try await Self.claimedExpiries(claimed)
            #expect((expiresIn["a"] ?? 0) > 0, "in time: claimed")
            #expect((expiresIn["x"] ?? 1) <= 0, "its lock came after its deadline: written expired")
        }
    }

    /// A batch of completions stores the rows their owners still hold, live or expired, each
    /// with its own values; leaves another owner's alone, live or expired; and for a key with no
    /// row (swept) leaves an expired tombstone, which the single completion writes over only
    /// once its claim's lock has ended, and which the next claim takes over.
    @Test func aBatchOfCompletionsStoresOnlyTheRowsItsOwnersHold() async throws {
        let table = TestTable()
        let sql = PostgresSQL(table: table.name)
        try await table.query(sql.createTable)
        try await table.query("""
            INSERT INTO $TABLE (record_key, owner, fingerprint, record, expires_at) VALUES
                ('ours', decode('\(Self.oursHex)', 'hex'), decode('00', 'hex'), NULL, now() + interval '1 hour'),
                ('ours-expired', decode('\(Self.oursHex)', 'hex'), decode('00', 'hex'), NULL, now() - interval '1 second'),
                ('theirs', decode('01', 'hex'), decode('00', 'hex'), NULL, now() + interval '1 hour'),
                ('theirs-expired', decode('01', 'hex'), decode('00', 'hex'), NULL, now() - interval '1 second')
            """)
        // Unsorted, each with values of its own: its place in the batch, and a retention in hours.
        let keys = ["theirs", "ours-expired", "gone", "ours", "theirs-expired", "gone-2"]
        let places = keys.indices.map { UInt8($0 + 1) }
        let stored = try await table.run(
            sql.completeOwned, keys, Array(repeating: Self.ours, count: keys.count),
            places.map { ByteBuffer(bytes: [UInt8](repeating: $0, count: 32)) }, places.map { ByteBuffer(bytes: [$0, $0]) },
            places.map { Int64($0) * 3_600_000 }
        ).map { try $0.decode(String.self) }
        #expect(Set(stored) == ["ours", "ours-expired"])
        for (key, place) in zip(keys, places) where Set(stored).contains(key) {
            let hex = String(format: "%02x", place)
            #expect(try await table.integer("""
                SELECT count(*) FROM $TABLE WHERE record_key = '\(key)' AND record = decode('\(hex)\(hex)', 'hex')
                AND fingerprint = decode(repeat('\(hex)', 32), 'hex')
                AND expires_at BETWEEN now() + interval '\(place) hours' - interval '1 minute' AND now() + interval '\(place) hours'
                """) == 1, "\(key): its own record, fingerprint and retention")
        }
        #expect(try await table.integer("SELECT count(*) FROM $TABLE WHERE record_key LIKE 'theirs%' AND record IS NULL AND owner = decode('01', 'hex')") == 2)
        #expect(try await table.integer("""
            SELECT count(*) FROM $TABLE WHERE record_key LIKE 'gone%' AND expires_at <= now() AND length(fingerprint) = 0 AND record IS NULL
            AND owner = decode(repeat('00', \(IdempotencyRecord.ownerLength)), 'hex')
            """) == 2, "tombstones: an owner of zeros, no fingerprint, expired")

        // The single completion on the tombstone: nothing while its claim's lock runs, the
        // record once it has ended.
        func completeGone(lockEnd: Int64) async throws -> Int {
            try await table.run(sql.complete, "gone", Self.ours, Self.fingerprint, ByteBuffer(bytes: [9]), Int64(60_000), lockEnd).count
        }
        #expect(try await completeGone(lockEnd: WallClock.milliseconds() + 60_000) == 0, "a lock still running: nothing written")
        #expect(try await table.integer("SELECT count(*) FROM $TABLE WHERE record_key = 'gone' AND record IS NULL") == 1)
        #expect(try await completeGone(lockEnd: WallClock.milliseconds() - 1_000) == 1, "the lock ended: written")
        let now = WallClock.milliseconds()
        let claimed = try await table.run(sql.claim, ["gone-2"], [ByteBuffer(bytes: [7])], [Self.fingerprint], [Int64(60_000)], [now + 60_000], [Int64(60_000)])
        let (_, owner, _, _, expiresIn) = try #require(claimed.first).decode((String, ByteBuffer, ByteBuffer, ByteBuffer?, ByteBuffer).self)
        #expect(owner == ByteBuffer(bytes: [7]) && (expiresIn.getInteger(at: expiresIn.readerIndex, as: Int64.self) ?? 0) > 0, "taken over")
    }

    /// The single completion, while its claim's lock runs, writes nothing over a tombstone
    /// even when the sweep deletes it between the statement's snapshot and its insert: it
    /// meets the row deleted by the time the insert runs, and must not take that as its own.
    @Test func aTombstoneSweptDuringTheSingleCompletionLeavesNothingWritten() async throws {
        let table = TestTable()
        let sql = PostgresSQL(table: table.name)
        try await table.query(sql.createTable)
        try await table.query("""
            INSERT INTO $TABLE (record_key, owner, fingerprint, record, expires_at)
            VALUES ('gone', decode(repeat('00', \(IdempotencyRecord.ownerLength)), 'hex'), ''::bytea, NULL, 'epoch')
            """)
        try await TestTable.withSession(url: table.url) { sweeper in
            let logger = Logger(label: "test-sql")
            _ = try await sweeper.query("BEGIN", logger: logger).collect()
            _ = try await sweeper.query(PostgresQuery(unsafeSQL: "DELETE FROM \"\(table.name)\" WHERE record_key = 'gone'"), logger: logger).collect()
            async let written = table.run(
                sql.complete, "gone", Self.ours, Self.fingerprint, ByteBuffer(bytes: [9]), Int64(60_000), WallClock.milliseconds() + 60_000)
            try await Task.sleep(for: .milliseconds(500))
            _ = try await sweeper.query("COMMIT", logger: logger).collect()
            #expect(try await written.count == 0, "nothing written while the lock runs")
        }
        #expect(try await table.rowCount() == 0)
    }

    /// A batch of completions the server refuses (here an operator's trigger refusing the
    /// tombstone the upsert proposes for some keys) goes item by item to the single completion
    /// statement, which proposes the record itself: every completion is still stored. So does a
    /// refused batch of one.
    @Test func aRefusedBatchOfCompletionsIsStoredItemByItem() async throws {
        let table = TestTable()
        try await table.query(PostgresSQL(table: table.name).createTable)
        try await table.query("""
            CREATE FUNCTION $TABLE_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.record_key LIKE 'refuse%' AND length(NEW.fingerprint) = 0 THEN
                    RAISE EXCEPTION 'no tombstone for %', NEW.record_key;
                END IF;
                RETURN NEW;
            END $$
            """)
        try await table.query("CREATE TRIGGER refuse BEFORE INSERT ON $TABLE FOR EACH ROW EXECUTE FUNCTION $TABLE_refuse()")
        let metrics = ProxyMetrics()
        let (loop, store) = try await table.loopStore(connections: 1, metrics: metrics)
        let owner = [UInt8](repeating: 4, count: IdempotencyRecord.ownerLength)
        let fingerprint = [UInt8](repeating: 5, count: IdempotencyRecord.fingerprintLength)
        let record = IdempotencyRecord(
            owner: owner, fingerprint: fingerprint, state: .completed(StoredResponse(status: 201, headers: [], body: [1])), completedAtMs: 1)
        // "fine" goes out alone; the other two together, a batch the trigger refuses; then
        // "refuse-alone" on its own.
        var keys = ["fine", "refuse-me", "also-fine"]
        func inOneTurn<T: Sendable>(_ each: @escaping @Sendable (String, EventLoopPromise<T>) -> Void) async throws -> [T] {
            let keys = keys
            return try await loop.submit { () -> EventLoopFuture<[T]> in
                EventLoopFuture.whenAllSucceed(keys.map { key in
                    let promise = loop.makePromise(of: T.self)
                    each(key, promise)
                    return promise.futureResult
                }, on: loop)
            }.get().get()
        }
        let claim: @Sendable (String, EventLoopPromise<ClaimResult>) -> Void = { key, promise in
            store.value.claim(key: key, owner: owner, fingerprint: fingerprint, lockTTLMs: 60_000, retentionMs: 3_600_000, deadlineMs: WallClock.milliseconds() + 30_000) {
                promise.succeed($0)
            }
        }
        let complete: @Sendable (String, EventLoopPromise<Result<Bool, LongTermStoreError>>) -> Void = { key, promise in
            store.value.complete(key: key, record: record, retentionMs: 60_000, lockEndMs: WallClock.milliseconds() + 60_000) {
                promise.succeed($0)
            }
        }
        let claimed = try await inOneTurn(claim)
        #expect(claimed == Array(repeating: .success(.claimed), count: keys.count))
        let completed = try await inOneTurn(complete)
        #expect(completed == Array(repeating: .success(true), count: keys.count))
        #expect(metric(metrics, "idemproxy_postgres_errors_total") == 1, "the batch of two refused")

        keys = ["refuse-alone"]
        #expect(try await inOneTurn(claim) == [.success(.claimed)])
        #expect(try await inOneTurn(complete) == [.success(true)])
        #expect(metric(metrics, "idemproxy_postgres_errors_total") == 2, "the batch of one refused")
        #expect(try await table.integer("SELECT count(*) FROM $TABLE WHERE record IS NOT NULL AND expires_at > now()") == 4)
        try await loop.submit { store.value.close() }.get()
    }

    /// The statements prepared on every connection (those of every protected request) find
    /// their rows through the primary key by the conflict, with no scan for the planner to
    /// choose: a generic plan made while the table is empty (as here) is the plan every later
    /// batch uses, whatever the table has become. The other statements are sent unnamed.
    @Test func thePreparedStatementsScanNoTable() async throws {
        let table = TestTable()
        let sql = PostgresSQL(table: table.name)
        try await table.query(sql.createTable)
        try await table.query(sql.createIndex)
        let prepared = PostgresConnections.Statement.allCases.filter(\.isPrepared)
        #expect(prepared.contains(.claim) && prepared.contains(.completeOwned), "the batches are prepared")
        try await TestTable.withSession(url: table.url) { session in
            let logger = Logger(label: "test-sql")
            _ = try await session.query("SET plan_cache_mode = force_generic_plan", logger: logger).collect()
            for statement in prepared {
                let text = sql.text(of: statement)
                let parameters = (1...9).last { text.contains("$\($0)") } ?? 0
                _ = try await session.query(PostgresQuery(unsafeSQL: "PREPARE s\(statement.rawValue) AS \(text)"), logger: logger).collect()
                let nulls = Array(repeating: "NULL", count: parameters).joined(separator: ", ")
                let plan = try await session.query(
                    PostgresQuery(unsafeSQL: "EXPLAIN EXECUTE s\(statement.rawValue)(\(nulls))"), logger: logger
                ).collect().map { try $0.decode(String.self) }
                let scans = plan.filter { $0.contains(" on \(table.name)") && !$0.contains("Insert on \(table.name)") }
                #expect(scans.isEmpty, "\(statement): \(plan.joined(separator: "\n"))")
            }
        }
    }

    static let ours = ByteBuffer(bytes: [UInt8](repeating: 3, count: IdempotencyRecord.ownerLength))
    static let oursHex = String(repeating: "03", count: IdempotencyRecord.ownerLength)
    static let fingerprint = ByteBuffer(bytes: [UInt8](repeating: 1, count: 32))

    /// A table of its own holding an expired claim of another owner under each of `keys`.
    static func tableWithExpiredRows(_ keys: [String]) async throws -> (TestTable, PostgresSQL) {
        let table = TestTable()
        let sql = PostgresSQL(table: table.name)
        try await table.query(sql.createTable)
        let rows = keys.map { "('\($0)', decode('01', 'hex'), decode('00', 'hex'), NULL, now() - interval '1 second')" }
        try await table.query("INSERT INTO $TABLE (record_key, owner, fingerprint, record, expires_at) VALUES \(rows.joined(separator: ", "))")
        return (table, sql)
    }

    /// The claim statement's rows: each key's remaining life (ms), every one taken over by `ours`.
    static func claimedExpiries(_ rows: [PostgresRow]) throws -> [String: Int64] {
        var expiresIn: [String: Int64] = [:]
        for row in rows {
            let (key, owner, _, _, expiry) = try row.decode((String, ByteBuffer, ByteBuffer, ByteBuffer?, ByteBuffer).self)
            #expect(owner == ours, "\(key): the expired row is taken over")
            expiresIn[key] = expiry.getInteger(at: expiry.readerIndex, as: Int64.self)
        }
        return expiresIn
    }

    /// Statements the store has run (`idemproxy_postgres_statement_duration_seconds`).
    private func statements(_ metrics: ProxyMetrics) -> Int {
        metric(metrics, "idemproxy_postgres_statement_duration_seconds_count")
    }

    /// The value of a series without labels, 0 before it is first counted.
    private func metric(_ metrics: ProxyMetrics, _ name: String) -> Int {
        metricValue(name, in: String(decoding: metrics.render(), as: UTF8.self)) ?? 0
    }
}
