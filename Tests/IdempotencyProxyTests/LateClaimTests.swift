import Foundation
import IdempotencyCore
import IdempotencyScripts
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import RedisClient
import TestSupport
import Testing

@testable import IdempotencyProxy

/// docs/behaviour.md, "Claims that land late": a store that stalls across a claim never leaves
/// the key locked for lock_ttl. The claim refuses itself past its deadline, and a claim whose
/// answer never came is withdrawn once the store answers again.
@Suite struct LateClaimTests {
    static let settings = ["redis_timeout": "500ms", "lock_ttl": "60s"]

    /// Ends a store's stall a second from now (`resume`), then retries the key (409 and 503
    /// are retried, as clients do) until an answer that ends it, which must come within 5 s of
    /// the store answering again.
    static func retryAfterTheStall(
        _ h: ProxyHarness, of store: String, resume: () -> Void
    ) async throws -> RawHTTPClient.Response {
        try await Task.sleep(for: .milliseconds(1_000))
        resume()
        let resumed = ContinuousClock.now
        let answer = try await retrying(times: 200, pause: .milliseconds(50), while: { [409, 503].contains($0.status) }) {
            try await h.send("POST", "/charges", key: "k", body: "x")
        }
        let after = ContinuousClock.now - resumed
        #expect(after < .seconds(5), "the retry was answered \(after) after \(store) answered again")
        return answer
    }

    // MARK: - Redis stalled (SIGSTOP) across a claim

    @Test func withoutPostgresTheRetryRunsSoonAfterRedisAnswersAgain() async throws {
        let redis = try RedisServerProcess()
        try await withProxy(Self.settings, redisURL: redis.url) { h in
            redis.pause()
            let stalled = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(stalled.status == 503)
            let retry = try await Self.retryAfterTheStall(h, of: "Redis", resume: redis.resume)
            #expect(retry.status == 201)
            #expect(h.upstream.executions("/charges") == 1)
            #expect(try await h.send("POST", "/charges", key: "k", body: "x").replayed)
        }
    }

    @Test func withPostgresTheRequestRunsOnceAndTheRetryGetsTheReplay() async throws {
        let redis = try RedisServerProcess()
        let table = TestTable()
        try await withProxy(table.settings(Self.settings), redisURL: redis.url) { h in
            redis.pause()
            let first = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(first.status == 201, "protected by PostgreSQL alone")
            let retry = try await Self.retryAfterTheStall(h, of: "Redis", resume: redis.resume)
            #expect(retry.replayed)
            #expect(retry.body == first.body)
            #expect(h.upstream.executions("/charges") == 1)
        }
    }

    /// Redis runs the claim, and its answer is held back past redis_timeout: the claim is in
    /// Redis, nobody waits for it, and without its withdrawal it would hold the key at 409 for
    /// the 60 s of lock_ttl.
    @Test func aClaimThatRanButWhoseAnswerWasLostIsWithdrawn() async throws {
        let relay = try TCPRelay(targetPort: SharedRedis.port)
        defer { relay.stop() }
        // The script cached, so that the claim runs by EVALSHA alone: a NOSCRIPT answer held in
        // the relay would keep the claim from ever running.
        let loader = try await TestRedisClient(port: SharedRedis.port)
        _ = try await loader.send(["SCRIPT", "LOAD", .string(RedisScript.claim.source)])
        await loader.close()
        try await withProxy(["redis_timeout": "1s", "lock_ttl": "60s"], redisURL: "redis://127.0.0.1:\(relay.port)/0") { h in
            relay.holdReplies()
            async let lost = h.send("POST", "/charges", key: "k", body: "x")
            // The claim runs in Redis while its answer waits in the relay: the hazard.
            let redis = try await TestRedisClient(port: SharedRedis.port)
            try await eventually("the claim running in Redis", within: 5, pause: .milliseconds(5)) {
                try await redis.send(["KEYS", .string(h.prefix + "*")]) != .array([])
            }
            await redis.close()
            #expect(try await lost.status == 503)
            let retry = try await Self.retryAfterTheStall(h, of: "Redis", resume: relay.release)
            #expect(retry.status == 201)
            #expect(h.upstream.executions("/charges") == 1)
        }
    }

    /// The same in PostgreSQL: the claim statement commits, its answer is held back past
    /// postgres_timeout (503), and the claim is withdrawn once PostgreSQL answers again.
    @Test func aPostgresClaimThatCommittedButWhoseAnswerWasLostIsWithdrawn() async throws {
        let postgres = try PostgresServerProcess()
        let relay = try TCPRelay(targetPort: postgres.port)
        defer { relay.stop() }
        let table = TestTable(url: postgres.url)
        let throughRelay = postgres.url.replacingOccurrences(of: ":\(postgres.port)/", with: ":\(relay.port)/")
        try await withProxy(table.settings(["postgres_url": throughRelay, "postgres_timeout": "1s", "lock_ttl": "60s"])) { h in
            #expect(try await h.send("POST", "/charges", key: "before", body: "x").status == 201)
            relay.holdReplies()
            async let lost = h.send("POST", "/charges", key: "k", body: "x")
            try await eventually("the claim committed in PostgreSQL", within: 5, pause: .milliseconds(5)) {
                try await table.integer("SELECT count(*) FROM $TABLE WHERE record IS NULL AND expires_at > now()") == 1
            }
            #expect(try await lost.status == 503)
            let retry = try await Self.retryAfterTheStall(h, of: "PostgreSQL", resume: relay.release)
            #expect(retry.status == 201)
            #expect(h.upstream.executions("/charges") == 2)
        }
    }

    // MARK: - PostgreSQL stalled (SIGSTOP) across a claim

    @Test func aPostgresStalledAcrossAClaimDoesNotHoldTheKey() async throws {
        let postgres = try PostgresServerProcess()
        let table = TestTable(url: postgres.url)
        try await withProxy(table.settings(["postgres_timeout": "500ms", "lock_ttl": "60s"])) { h in
            #expect(try await h.send("POST", "/charges", key: "before", body: "x").status == 201)
            postgres.pause()
            let stalled = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(stalled.status == 503)
            let retry = try await Self.retryAfterTheStall(h, of: "PostgreSQL", resume: postgres.resume)
            #expect(retry.status == 201)
            #expect(h.upstream.executions("/charges") == 2)
            #expect(try await table.integer("SELECT count(*) FROM $TABLE WHERE record IS NULL AND expires_at > now()") == 0, "no claim left in flight")
        }
    }

    // MARK: - the deadline in the claim and in the withdrawal, in each store

    @Test func theRedisClaimPastItsDeadlineWritesNothingAndTheWithdrawalWaitsForIt() async throws {
        let redis = try await TestRedisClient(port: SharedRedis.port)
        let key = RedisArgument.string("late-\(UUID().uuidString)")
        let owner = [UInt8](repeating: 3, count: IdempotencyRecord.ownerLength)
        let record = IdempotencyRecord(owner: owner, fingerprint: [UInt8](repeating: 1, count: 32), state: .inFlight).encoded()
        let now = WallClock.milliseconds()
        func claim(deadline: Int64) async throws -> RedisReply {
            try await redis.run(.claim, keys: [key], arguments: [.bytes(record), "60000", .string(String(deadline))])
        }
        func withdraw(deadline: Int64) async throws -> RedisReply {
            try await redis.run(.release, keys: [key], arguments: [.bytes(owner), "none", .string(String(deadline))])
        }
        #expect(try await claim(deadline: now - 1) == .integer(2), "late: refused")
        #expect(try await redis.send(["EXISTS", key]) == .integer(0), "and nothing written")
        #expect(try await claim(deadline: now + 60_000) == .integer(1))
        #expect(try await claim(deadline: WallClock.milliseconds() - 1) == .bulk(ByteBuffer(bytes: record)), "a late retry still meets the claim")
        #expect(try await withdraw(deadline: WallClock.milliseconds() + 30_000) == .integer(-1), "the claim's deadline has not passed: it stays")
        #expect(try await redis.send(["EXISTS", key]) == .integer(1))
        #expect(try await withdraw(deadline: WallClock.milliseconds() - 1) == .integer(1), "past it: withdrawn")
        #expect(try await redis.send(["EXISTS", key]) == .integer(0))
        await redis.close()
    }

    @Test(arguments: PostgresPath.allCases)
    func thePostgresClaimPastItsDeadlineHoldsNothingAndTheWithdrawalWaitsForIt(path: PostgresPath) async throws {
        let table = TestTable(url: try path.url)
        let sql = PostgresSQL(table: table.name)
        try await table.query(sql.createTable)
        let owner = ByteBuffer(bytes: [UInt8](repeating: 3, count: IdempotencyRecord.ownerLength))
        let other = ByteBuffer(bytes: [UInt8](repeating: 4, count: IdempotencyRecord.ownerLength))
        let fingerprint = ByteBuffer(bytes: [UInt8](repeating: 1, count: 32))
        /// The remaining life (ms) the claim statement returns.
        func claim(_ key: String, by owner: ByteBuffer, deadline: Int64) async throws -> Int64 {
            let rows = try await table.run(sql.claim, [key], [owner], [fingerprint], [Int64(60_000)], [deadline], [Int64(60_000)])
            let expiresIn = try rows[0].decode((String, ByteBuffer, ByteBuffer, ByteBuffer?, ByteBuffer).self).4
            return try #require(expiresIn.getInteger(at: expiresIn.readerIndex, as: Int64.self))
        }
        func withdraw(deadline: Int64) async throws -> (Bool, Bool) {
            let rows = try await table.run(sql.withdrawUnanswered, "k", owner, deadline)
            return try rows[0].decode((Bool, Bool).self)
        }
        func live() async throws -> Int { try await table.integer("SELECT count(*) FROM $TABLE WHERE expires_at > now()") }
        let now = WallClock.milliseconds()
        #expect(try await claim("k", by: owner, deadline: now - 1) <= 0, "late: written already expired")
        #expect(try await live() == 0, "so it holds nothing")
        #expect(try await claim("k", by: owner, deadline: WallClock.milliseconds() + 60_000) > 0, "in time: claimed")
        #expect(try await claim("k", by: other, deadline: WallClock.milliseconds() - 1) > 0, "a late retry still meets the live claim")
        #expect(try await withdraw(deadline: WallClock.milliseconds() + 30_000) == (false, false), "before the deadline it stays")
        #expect(try await live() == 1)
        #expect(try await withdraw(deadline: WallClock.milliseconds() - 2_000) == (true, true), "past it (and the margin): withdrawn")
        #expect(try await live() == 0)
        #expect(try await claim("k", by: other, deadline: WallClock.milliseconds() + 60_000) > 0, "the key is free again")
    }
}

extension LateClaimTests {
    /// The same through the store the proxy uses, directly and through PgBouncer (the claim
    /// prepared on a direct server, the withdrawal always unnamed).
    @Test(arguments: PostgresPath.allCases)
    func thePostgresStoreRefusesALateClaimAndWithdrawsAnUnansweredOne(path: PostgresPath) async throws {
        let table = TestTable(url: try path.url)
        let (loop, store) = try await table.loopStore(metrics: ProxyMetrics())
        let owner = [UInt8](repeating: 5, count: IdempotencyRecord.ownerLength)
        let fingerprint = [UInt8](repeating: 1, count: IdempotencyRecord.fingerprintLength)
        func claim(deadline: Int64) async throws -> Result<ProtectedRequestMachine.ClaimAnswer, LongTermStoreError> {
            let promise = loop.makePromise(of: Result<ProtectedRequestMachine.ClaimAnswer, LongTermStoreError>.self)
            loop.execute {
                store.value.claim(key: "k", owner: owner, fingerprint: fingerprint, lockTTLMs: 60_000, retentionMs: 3_600_000, deadlineMs: deadline) {
                    promise.succeed($0)
                }
            }
            return try await promise.futureResult.get()
        }
        func withdraw(deadline: Int64) async throws -> Result<Bool?, LongTermStoreError> {
            let promise = loop.makePromise(of: Result<Bool?, LongTermStoreError>.self)
            loop.execute { store.value.withdrawUnanswered(key: "k", owner: owner, deadlineMs: deadline) { promise.succeed($0) } }
            return try await promise.futureResult.get()
        }
        // Each statement a few times, so that prepared statements have been used, not just made.
        for _ in 0..<3 {
            #expect(try await claim(deadline: WallClock.milliseconds() - 1) == .failure(.lateClaim))
        }
        #expect(try await claim(deadline: WallClock.milliseconds() + 60_000) == .success(.claimed))
        #expect(try await withdraw(deadline: WallClock.milliseconds() + 60_000) == .success(nil), "not due yet")
        #expect(try await withdraw(deadline: WallClock.milliseconds() - 2_000) == .success(true))
        #expect(try await withdraw(deadline: WallClock.milliseconds() - 2_000) == .success(false), "nothing of ours left")
        try await loop.submit { store.value.close() }.get()
    }
}

extension TestTable {
    /// Runs `sql` with these parameters ($1, $2, …) on a connection of its own; its rows.
    func run(_ sql: String, _ values: any PostgresNonThrowingEncodable...) async throws -> [PostgresRow] {
        var binds = PostgresBindings()
        for value in values { binds.append(value) }
        let connection = try await Self.connect(url)
        do {
            let rows = try await connection.query(PostgresQuery(unsafeSQL: sql, binds: binds), logger: Logger(label: "test-sql")).collect()
            try await connection.close()
            return rows
        } catch {
            try? await connection.close()
            throw TestSupportError(String(reflecting: error))
        }
    }
}
