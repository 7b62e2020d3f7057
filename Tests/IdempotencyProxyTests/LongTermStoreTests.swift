import Foundation
import IdempotencyCore
import LoadKit
import NIOCore
import Logging
import NIOPosix
import PostgresNIO
import TestSupport
import Testing

@testable import IdempotencyProxy

/// The long-term store (docs/behaviour.md §3) against a real PostgreSQL and a real Redis: every test has a table of its own in
/// the shared server, or a server of its own when it stops or pauses it.
@Suite struct LongTermStoreTests {
    /// For the race tests, whose upstream takes 6 s so that the competing steps fit in it even
    /// on a busy machine.
    static let slowUpstream = ["upstream_timeout": "15s", "lock_ttl": "30s"]

    // MARK: - long-term claims, retention: what PostgreSQL remembers

    @Test func withoutTheLongTermStoreARequestRunsAgainOnceRedisForgetsIt() async throws {
        try await withProxy { h in
            #expect(try await h.send("POST", "/charges", key: "k", body: "x").status == 201)
            try await h.forgetRedisRecords()
            let retry = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(!retry.replayed)
            #expect(h.upstream.executions("/charges") == 2, "the hazard the long-term store removes")
        }
    }

    @Test(arguments: PostgresPath.allCases)
    func aRecordIsReplayedFromPostgresAfterRedisForgetsItAndCopiedBack(path: PostgresPath) async throws {
        let table = TestTable(url: try path.url)
        try await withProxy(table.settings()) { h in
            let first = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(first.status == 201)
            try await h.forgetRedisRecords()
            #expect(try await h.recordCount() == 0)

            let retry = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(retry.replayed)
            #expect(retry.status == 201)
            #expect(retry.body == first.body)
            #expect(h.upstream.executions("/charges") == 1)
            #expect(try h.counter("idemproxy_replays_total{store=\"postgres\"}") == 1)
            // Copied back: the next retry is Redis's.
            #expect(try await h.recordCount() == 1)
            #expect(try await h.send("POST", "/charges", key: "k", body: "x").replayed)
            #expect(try h.counter("idemproxy_replays_total{store=\"redis\"}") == 1)
            #expect(try h.counter("idemproxy_replays_total{store=\"postgres\"}") == 1)
            // Another body with the key: 422, from PostgreSQL as well.
            try await h.forgetRedisRecords()
            #expect(try await h.send("POST", "/charges", key: "k", body: "y").status == 422)
            #expect(try await h.recordCount() == 0, "a 422 from PostgreSQL leaves no Redis claim behind")
        }
    }

    @Test func afterResponseTTLPostgresStillReplays() async throws {
        let table = TestTable()
        try await withProxy(table.settings(["response_ttl": "1s", "retention": "1h"])) { h in
            let first = try await h.send("POST", "/charges", key: "k", body: "x")
            try await Task.sleep(for: .milliseconds(1_300))
            #expect(try await h.recordCount() == 0, "Redis let the record expire")
            let retry = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(retry.replayed)
            #expect(retry.body == first.body)
            #expect(h.upstream.executions("/charges") == 1)
        }
    }

    @Test func afterRetentionARecordIsNeverReplayedEvenBeforeTheSweep() async throws {
        let table = TestTable()
        try await withProxy(table.settings(["response_ttl": "1s", "retention": "1s"]), sweepInterval: .seconds(3_600)) { h in
            #expect(try await h.send("POST", "/charges", key: "k", body: "x").status == 201)
            try await Task.sleep(for: .milliseconds(1_300))
            #expect(try await table.rowCount() == 1, "not swept yet: the lookup must check the expiry itself")
            let retry = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(!retry.replayed)
            #expect(retry.status == 201)
            #expect(h.upstream.executions("/charges") == 2)
        }
    }

    @Test func aCopyBackNeverOutlivesTheRecordsRetention() async throws {
        let table = TestTable()
        try await withProxy(table.settings(["response_ttl": "10s", "retention": "10s"])) { (h: ProxyHarness) async throws in
            #expect(try await h.send("POST", "/charges", key: "k", body: "x").status == 201)
            try await h.forgetRedisRecords()
            try await Task.sleep(for: .seconds(1))
            // Replayed from PostgreSQL with less than 9 s of retention left: Redis keeps the
            // copy that long, not response_ttl.
            #expect(try await h.send("POST", "/charges", key: "k", body: "x").replayed)
            let ttl = try await h.redisTTLs()
            #expect(ttl.count == 1)
            #expect(ttl.allSatisfy { $0 > 0 && $0 <= 9_000 }, "copy-back TTLs \(ttl) ms")
        }
    }

    // MARK: - long-term claims: a claim Redis lost

    @Test(arguments: PostgresPath.allCases)
    func aClaimSurvivesRedisLosingIt(path: PostgresPath) async throws {
        let table = TestTable(url: try path.url)
        let prefix = "test:\(UUID().uuidString.prefix(8)):"
        try await withDemoUpstream { upstream in
            try await withProxy(table.settings(Self.slowUpstream), upstream: upstream, prefix: prefix) { a in
                try await withProxy(table.settings(Self.slowUpstream), upstream: upstream, prefix: prefix) { b in
                    // The upstream takes 6 s: time for the retry to find the claim in flight,
                    // and to be counted, even on a busy machine.
                    async let first = a.send("POST", "/charges?delay=6000", key: "k", body: "x")
                    try await upstream.waitUntilExecuting("/charges")
                    try await a.forgetRedisRecords()

                    let retry = try await b.send("POST", "/charges?delay=6000", key: "k", body: "x")
                    #expect(retry.status == 409)
                    #expect(retry.header("Retry-After") != nil)
                    #expect(try await b.recordCount() == 0, "the 409 from PostgreSQL leaves no Redis claim behind")

                    let firstAnswer = try await first
                    #expect(firstAnswer.status == 201)
                    let later = try await b.send("POST", "/charges?delay=6000", key: "k", body: "x")
                    #expect(later.replayed)
                    #expect(later.body == firstAnswer.body)
                    #expect(upstream.executions("/charges") == 1)
                }
            }
        }
    }

    @Test func aRetryWaitingOnAClaimOnlyPostgresHoldsGetsTheReplay() async throws {
        let table = TestTable()
        try await withProxy(table.settings(["inflight_wait": "5s"])) { h in
            async let first = h.send("POST", "/charges?delay=600", key: "k", body: "x")
            try await h.upstream.waitUntilExecuting("/charges")
            try await h.forgetRedisRecords()
            let waiting = try await h.send("POST", "/charges?delay=600", key: "k", body: "x")
            #expect(waiting.replayed)
            #expect(try await waiting.body == first.body)
            #expect(h.upstream.executions("/charges") == 1)
        }
    }

    // MARK: - long-term settling: owner-checked settling

    @Test func anExpiredClaimThatNobodyTookOverIsStillCompleted() async throws {
        let table = TestTable()
        try await withProxy(table.settings(Self.slowUpstream)) { h in
            async let first = h.send("POST", "/charges?delay=6000", key: "k", body: "x")
            try await h.upstream.waitUntilExecuting("/charges")
            let expired = try await table.query("UPDATE $TABLE SET expires_at = now() - interval '1 second' WHERE record IS NULL RETURNING 1")
            #expect(expired.count == 1, "the claim was still in flight when it expired")
            #expect(try await first.status == 201)
            #expect(try await table.integer("SELECT count(*) FROM $TABLE WHERE record IS NOT NULL AND expires_at > now() + interval '29 days'") == 1)
        }
    }

    @Test func anExpiredClaimTakenOverIsNotOverwrittenByItsFirstOwner() async throws {
        let table = TestTable()
        try await withProxy(table.settings(Self.slowUpstream)) { h in
            async let first = h.send("POST", "/charges?delay=6000", key: "k", body: "x")
            try await h.upstream.waitUntilExecuting("/charges")
            // The first claim's lock_ttl ends (as if the upstream took that long) and Redis
            // forgets it: a retry takes the key over and runs. The upstream takes 6 s, time
            // enough for the retry's claim to come first even on a busy machine.
            try await table.query("UPDATE $TABLE SET expires_at = now() - interval '1 second'")
            try await h.forgetRedisRecords()
            async let second = h.send("POST", "/charges?delay=6000", key: "k", body: "x")
            try await h.upstream.waitUntilExecuting("/charges", count: 2)

            let firstAnswer = try await first
            let secondAnswer = try await second
            #expect(firstAnswer.status == 201)
            #expect(secondAnswer.status == 201)
            #expect(try h.counter("idemproxy_completions_lost_total") >= 1)
            // Retries get the newer owner's answer, from either store.
            let retry = try await h.send("POST", "/charges?delay=6000", key: "k", body: "x")
            #expect(retry.body == secondAnswer.body)
            try await h.forgetRedisRecords()
            #expect(try await h.send("POST", "/charges?delay=6000", key: "k", body: "x").body == secondAnswer.body)
        }
    }

    /// The completion statement itself: it writes over an expired row of another request (a
    /// claim that was never settled), as a claim would take it over, but never a live one; and
    /// over an expired row or none only once its own lock has ended (before, the claim was
    /// removed on purpose: a forced delete, a retry that took the key and released it).
    @Test func aCompletionTakesOverAnExpiredRowButNeverALiveOne() async throws {
        let table = TestTable()
        try await withProxy(table.settings()) { (h: ProxyHarness) async throws in
            try await table.query("""
                INSERT INTO $TABLE (record_key, owner, fingerprint, record, expires_at) VALUES
                    ('expired', decode('01', 'hex'), decode('00', 'hex'), NULL, now() - interval '1 second'),
                    ('live', decode('01', 'hex'), decode('00', 'hex'), NULL, now() + interval '1 hour'),
                    ('expired-early', decode('01', 'hex'), decode('00', 'hex'), NULL, now() - interval '1 second')
                """)
            let sql = PostgresSQL(table: table.name)
            try await TestTable.withSession(url: table.url) { session in
                let lockEnded = WallClock.milliseconds() - 1_000
                let lockRunning = WallClock.milliseconds() + 60_000
                for (key, lockEnd) in [("expired", lockEnded), ("live", lockEnded), ("expired-early", lockRunning), ("gone-early", lockRunning)] {
                    var binds = PostgresBindings()
                    binds.append(key)
                    binds.append(ByteBuffer(bytes: [2]))
                    binds.append(ByteBuffer(bytes: [0]))
                    binds.append(ByteBuffer(bytes: [9, 9]))
                    binds.append(Int64(60_000))
                    binds.append(lockEnd)
                    _ = try await session.query(PostgresQuery(unsafeSQL: sql.complete, binds: binds), logger: Logger(label: "test-sql")).collect()
                }
            }
            #expect(try await table.integer("SELECT count(*) FROM $TABLE WHERE record_key = 'expired' AND owner = decode('02', 'hex') AND record IS NOT NULL") == 1)
            #expect(try await table.integer("SELECT count(*) FROM $TABLE WHERE record_key = 'live' AND owner = decode('01', 'hex') AND record IS NULL") == 1)
            #expect(try await table.integer("SELECT count(*) FROM $TABLE WHERE record_key = 'expired-early' AND record IS NULL") == 1)
            #expect(try await table.integer("SELECT count(*) FROM $TABLE WHERE record_key = 'gone-early'") == 0)
        }
    }

    @Test(arguments: PostgresPath.allCases)
    func aFiveHundredReleasesTheClaimInBothStores(path: PostgresPath) async throws {
        let table = TestTable(url: try path.url)
        try await withProxy(table.settings()) { (h: ProxyHarness) async throws in
            #expect(try await h.send("POST", "/status/503", key: "k", body: "x").status == 503)
            #expect(try await table.rowCount() == 0)
            #expect(try await h.recordCount() == 0)
            #expect(try await h.send("POST", "/status/503", key: "k", body: "x").status == 503)
            #expect(h.upstream.executions("/status/503") == 2)
        }
    }

    /// `postgres_synchronous_commit = false` holds for completions, in their own transactions,
    /// directly and through a transaction pooler; claims and releases keep the server's own
    /// setting, also on a connection that has just run a completion (nothing leaks into the
    /// session). A trigger on the table records the setting each write ran under.
    @Test(arguments: PostgresPath.allCases, [true, false])
    func asynchronousCommitIsTheCompletionsOwn(path: PostgresPath, synchronous: Bool) async throws {
        let table = TestTable(url: try path.url)
        try await table.query(PostgresSQL(table: table.name).createTable)
        try await table.query("CREATE TABLE $TABLE_modes (kind text NOT NULL, mode text NOT NULL)")
        try await table.query("""
            CREATE FUNCTION $TABLE_mode() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP = 'DELETE' THEN
                    INSERT INTO $TABLE_modes VALUES ('release', current_setting('synchronous_commit'));
                    RETURN OLD;
                END IF;
                -- A completion's upsert proposes a tombstone (no fingerprint), which its
                -- conflict turns into the update.
                IF TG_OP = 'INSERT' AND length(NEW.fingerprint) = 0 THEN
                    RETURN NEW;
                END IF;
                INSERT INTO $TABLE_modes
                VALUES (CASE WHEN NEW.record IS NULL THEN 'claim' ELSE 'completion' END, current_setting('synchronous_commit'));
                RETURN NEW;
            END $$
            """)
        try await table.query("CREATE TRIGGER mode BEFORE INSERT OR UPDATE OR DELETE ON $TABLE FOR EACH ROW EXECUTE FUNCTION $TABLE_mode()")
        let serverMode = try #require(try await table.query("SHOW synchronous_commit").first).decode(String.self)
        try await withProxy(table.settings(["postgres_synchronous_commit": "\(synchronous)"])) { (h: ProxyHarness) async throws in
            for key in ["a", "b", "c", "d"] { #expect(try await h.send("POST", "/charges", key: key, body: "x").status == 201) }
            // A 5xx releases its claim: a delete.
            #expect(try await h.send("POST", "/status/503", key: "e", body: "x").status == 503)
        }
        func count(_ kind: String, mode: String) async throws -> Int {
            try await table.integer("SELECT count(*) FROM $TABLE_modes WHERE kind = '\(kind)' AND mode = '\(mode)'")
        }
        #expect(try await table.integer("SELECT count(*) FROM $TABLE_modes") == 5 + 4 + 1, "five claims, four completions, a release")
        #expect(try await count("claim", mode: serverMode) == 5)
        #expect(try await count("completion", mode: synchronous ? serverMode : "off") == 4)
        #expect(try await count("release", mode: serverMode) == 1)
        #expect(try await table.integer("SELECT count(*) FROM $TABLE WHERE record IS NOT NULL") == 4)
    }

    // MARK: - failure matrix: the failure matrix

    @Test func redisDownIsProtectedByPostgresAlone() async throws {
        let table = TestTable()
        let closed = try ClosedPort()
        let settings = table.settings(["redis_url": "redis://127.0.0.1:\(closed.port)/0", "redis_timeout": "200ms"])
        try await withProxy(settings, waitUntilReady: false) { h in
            let first = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(first.status == 201)
            let retry = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(retry.replayed)
            #expect(retry.body == first.body)
            #expect(try await h.send("POST", "/charges", key: "k", body: "other").status == 422)
            #expect(h.upstream.executions("/charges") == 1)
            #expect(try h.metric("redis_error") == 0)
            #expect(try h.admin("/readyz").status == 503)

            async let slow = h.send("POST", "/charges?delay=4000", key: "slow", body: "x")
            try await h.upstream.waitUntilExecuting("/charges", count: 2)
            #expect(try await h.send("POST", "/charges?delay=4000", key: "slow", body: "x").status == 409)
            #expect(try await slow.status == 201)
        }
    }

    @Test func postgresDownClosedAnswers503AndLeavesNothingInRedis() async throws {
        let closed = try ClosedPort()
        let table = TestTable(url: "postgres://postgres:pw@127.0.0.1:\(closed.port)/postgres")
        try await withProxy(table.settings(["postgres_timeout": "300ms"]), waitUntilReady: false) { h in
            let r = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(r.status == 503)
            #expect(r.isProblem)
            #expect(r.header("Retry-After") == "1")
            #expect(r.text.contains("PostgreSQL"))
            #expect(h.upstream.executions("/charges") == 0)
            #expect(try await h.recordCount() == 0, "the Redis claim was released")
            #expect(try h.metric("postgres_error") == 1)
            #expect(try h.counter("idemproxy_postgres_errors_total") >= 1)
            let ready = try h.admin("/readyz")
            #expect(ready.status == 503)
            #expect(ready.text.contains("PostgreSQL"))
        }
    }

    @Test func postgresDownInRedisModeIsProtectedByRedisAlone() async throws {
        let closed = try ClosedPort()
        let table = TestTable(url: "postgres://postgres:pw@127.0.0.1:\(closed.port)/postgres")
        try await withProxy(table.settings(["on_postgres_error": "redis"]), waitUntilReady: false) { h in
            let first = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(first.status == 201)
            let retry = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(retry.replayed)
            #expect(h.upstream.executions("/charges") == 1)
        }
    }

    @Test func bothStoresDownFollowOnRedisError() async throws {
        let redisPort = try ClosedPort()
        let postgresPort = try ClosedPort()
        let table = TestTable(url: "postgres://postgres:pw@127.0.0.1:\(postgresPort.port)/postgres")
        var settings = table.settings([
            "redis_url": "redis://127.0.0.1:\(redisPort.port)/0", "redis_timeout": "200ms", "postgres_timeout": "200ms",
        ])
        try await withProxy(settings, waitUntilReady: false) { (h: ProxyHarness) async throws in
            let r = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(r.status == 503)
            #expect(r.text.contains("Redis"))
            #expect(try h.metric("redis_error") == 1)
        }
        settings["on_redis_error"] = "open"
        try await withProxy(settings, waitUntilReady: false) { (h: ProxyHarness) async throws in
            #expect(try await h.send("POST", "/charges", key: "k", body: "x").status == 201)
            #expect(!(try await h.send("POST", "/charges", key: "k", body: "x").replayed))
            #expect(h.upstream.executions("/charges") == 2)
        }
    }

    @Test func pausedPostgresHitsPostgresTimeoutThenIsUsedAgain() async throws {
        let postgres = try PostgresServerProcess()
        let table = TestTable(url: postgres.url)
        try await withProxy(table.settings(["postgres_timeout": "400ms"])) { h in
            #expect(try await h.send("POST", "/charges", key: "before", body: "x").status == 201)
            postgres.pause()
            let clock = ContinuousClock()
            let start = clock.now
            let paused = try await h.send("POST", "/charges", key: "paused", body: "x")
            postgres.resume()
            #expect(paused.status == 503)
            #expect(clock.now - start < .seconds(3))
            #expect(h.upstream.executions("/charges") == 1)
            try await expectProtectedAgainWithin5s(h)
        }
    }

    @Test func postgresRestartedIsUsedAgainWithin5s() async throws {
        let postgres = try PostgresServerProcess()
        let table = TestTable(url: postgres.url)
        try await withProxy(table.settings(["postgres_timeout": "400ms"])) { h in
            #expect(try await h.send("POST", "/charges", key: "before", body: "x").status == 201)
            postgres.stop()
            #expect(try await h.send("POST", "/charges", key: "down", body: "x").status == 503)
            try postgres.start()
            try await expectProtectedAgainWithin5s(h)
            // What PostgreSQL kept across its restart is replayed.
            try await h.forgetRedisRecords()
            #expect(try await h.send("POST", "/charges", key: "before", body: "x").replayed)
        }
    }

    /// Six protected requests in a row succeed within 5 s (every event loop reconnected).
    private func expectProtectedAgainWithin5s(_ h: ProxyHarness) async throws {
        #expect(try await h.protectedStreak(6, within: .seconds(5)).streak == 6, "PostgreSQL was not used again within 5 s")
        #expect(try h.admin("/readyz").status == 200)
    }

    // MARK: - retention: the sweep

    /// Both proxies sweep the table; while another session holds the sweep lock, neither does.
    /// The rows are written without `sweep_after` (its default, the epoch, as an earlier
    /// version writes them), so the live ones kept show that the sweep checks `expires_at` too.
    /// Through PgBouncer the lock holder connects directly: a session-level lock means nothing
    /// behind a transaction pooler, which is why the sweep's lock is transaction-scoped.
    @Test(arguments: PostgresPath.allCases)
    func twoProxiesSweepOneTableAndNeitherWhileTheLockIsHeld(path: PostgresPath) async throws {
        let table = TestTable(url: try path.url)
        try await withProxy(table.settings(), sweepInterval: .milliseconds(200)) { a in
            try await withProxy(table.settings(), sweepInterval: .milliseconds(200)) { (b: ProxyHarness) async throws in
                // Someone else holds the sweep lock: nobody sweeps.
                var left = -1
                try await TestTable.withSession(url: SharedPostgres.url) { holder in
                    try await holder.run("SELECT pg_advisory_lock(\(0x6964_656D), hashtext('\(table.name)'))")
                    try await table.query("""
                        INSERT INTO $TABLE (record_key, owner, fingerprint, record, expires_at)
                        SELECT 'expired-' || i, decode('00', 'hex'), decode('00', 'hex'), NULL::bytea, now() - interval '1 second' FROM generate_series(1, 2500) i
                        UNION ALL
                        SELECT 'live-' || i, decode('00', 'hex'), decode('00', 'hex'), NULL::bytea, now() + interval '1 hour' FROM generate_series(1, 10) i
                        """)
                    try await Task.sleep(for: .milliseconds(800))
                    #expect(try await table.rowCount() == 2_510)

                    try await holder.run("SELECT pg_advisory_unlock_all()")
                    left = try await retrying(times: 100, pause: .milliseconds(100), while: { $0 > 10 }) {
                        try await table.rowCount()
                    }
                }
                #expect(left == 10, "expired rows deleted, in batches, live ones kept")
                #expect(try await table.integer("SELECT count(*) FROM $TABLE WHERE record_key LIKE 'live-%'") == 10)
            }
        }
    }

    // MARK: - the table: the table

    /// A table without the columns the statements need, and one without its primary key
    /// (found only by running the statements: `ON CONFLICT` has no constraint to use, 42P10).
    @Test(arguments: [
        ("(record_key text PRIMARY KEY, payload text)", ["cannot be used", "owner bytea"]),
        ("(record_key text, owner bytea, fingerprint bytea, record bytea, expires_at timestamptz)", ["cannot be created or used", "42P10"]),
    ])
    func aTableThatCannotBeUsedStopsTheStart(columns: String, why: [String]) async throws {
        let table = TestTable()
        try await table.query("CREATE TABLE $TABLE \(columns)")
        await #expect {
            try await withProxy(table.settings()) { _ in }
        } throws: { error in
            let text = "\(error)"
            return text.contains(table.name) && why.allSatisfy { text.contains($0) }
        }
    }

    /// The sweep's index is on `sweep_after`, none on `expires_at`, and completions are written
    /// in place (docs/performance.md, "A completion as a HOT update").
    @Test(arguments: PostgresPath.allCases)
    func theTableAndItsIndexAreCreatedAsConfigPostgresSQLSays(path: PostgresPath) async throws {
        let table = TestTable(url: try path.url)
        try await withProxy(table.settings()) { (h: ProxyHarness) async throws in
            #expect(try await table.indexes(on: "sweep_after") == 1)
            #expect(try await table.indexes(on: "expires_at") == 0)
            #expect(try await table.fillfactor() == 70)
            try await h.expectCompletionsWrittenInPlace(table)
        }
        // The operators' schema file makes the same table.
        let other = TestTable(url: try path.url)
        try await TestTable.withSession(url: other.url) { session in try await other.createAsConfigPostgresSQLSays(on: session) }
        #expect(try await other.indexes(on: "sweep_after") == 1)
        #expect(try await other.fillfactor() == 70)
        try await withProxy(other.settings()) { (h: ProxyHarness) async throws in
            #expect(try await h.send("POST", "/charges", key: "k", body: "x").status == 201)
            #expect(try await other.rowCount() == 1)
        }
    }

    @Test func aRoleWithOnlyTheRightsConfigPostgresSQLNamesUsesAnOperatorsTable() async throws {
        let table = TestTable()
        let role = "r_" + table.name
        try await TestTable.withSession(url: table.url) { admin in
            try await table.createAsConfigPostgresSQLSays(on: admin)
            try await admin.run("CREATE ROLE \(role) LOGIN PASSWORD 'pw'")
            try await admin.run("GRANT SELECT, INSERT, UPDATE, DELETE ON \(table.name) TO \(role)")
        }
        let parsed = try PostgresURL.parse(table.url)
        let url = "postgres://\(role):pw@127.0.0.1:\(parsed.address.port)/\(parsed.database)"
        try await withProxy(TestTable(url: url, name: table.name).settings()) { h in try await h.expectReplayedFromPostgres() }
    }

    @Test func aTableNamedLikeAKeywordWorks() async throws {
        let table = TestTable(name: "order")
        try await withProxy(table.settings()) { (h: ProxyHarness) async throws in
            #expect(try await h.send("POST", "/charges", key: "k-\(UUID().uuidString)", body: "x").status == 201)
        }
    }

    @Test func twoProxiesWithRedisDownRunAKeyOnceBetweenThem() async throws {
        let table = TestTable()
        let closed = try ClosedPort()
        let settings = table.settings(["redis_url": "redis://127.0.0.1:\(closed.port)/0", "redis_timeout": "200ms"])
        let prefix = "test:\(UUID().uuidString.prefix(8)):"
        try await withDemoUpstream { upstream in
            try await withProxy(settings, upstream: upstream, prefix: prefix, waitUntilReady: false) { a in
                try await withProxy(settings, upstream: upstream, prefix: prefix, waitUntilReady: false) { b in
                    // The upstream takes 3 s, so the two start together even on a busy machine.
                    async let first = a.send("POST", "/charges?delay=3000", key: "k", body: "x")
                    async let second = b.send("POST", "/charges?delay=3000", key: "k", body: "x")
                    let statuses = try await [first.status, second.status].sorted()
                    #expect(statuses == [201, 409])
                    #expect(upstream.executions("/charges") == 1)
                }
            }
        }
    }

    @Test func postgresLostWhileTheUpstreamWorksStillAnswersAndRedisKeepsTheRecord() async throws {
        let postgres = try PostgresServerProcess()
        let table = TestTable(url: postgres.url)
        try await withProxy(table.settings(["postgres_timeout": "400ms"])) { h in
            async let first = h.send("POST", "/charges?delay=500", key: "k", body: "x")
            try await h.upstream.waitUntilExecuting("/charges")
            postgres.stop()
            let answer = try await first
            #expect(answer.status == 201)
            let retry = try await h.send("POST", "/charges?delay=500", key: "k", body: "x")
            #expect(retry.replayed)
            #expect(retry.body == answer.body)
            #expect(h.upstream.executions("/charges") == 1)
        }
    }

    // MARK: - exactly once with Redis restarted empty

    @Test(arguments: PostgresPath.allCases)
    func exactlyOnceThroughTwoProxiesWithRedisRestartedEmptyMidRun(path: PostgresPath) async throws {
        let redis = try RedisServerProcess()
        let table = TestTable(url: try path.url)
        let prefix = "test:\(UUID().uuidString.prefix(8)):"
        try await withDemoUpstream { upstream in
            try await withProxy(table.settings(), upstream: upstream, redisURL: redis.url, prefix: prefix) { a in
                try await withProxy(table.settings(), upstream: upstream, redisURL: redis.url, prefix: prefix) { b in
                    var options = LoadOptions(target: HTTPTarget(host: "127.0.0.1", port: a.port, path: "/charges"))
                    options.moreTargets = [HTTPTarget(host: "127.0.0.1", port: b.port, path: "/charges")]
                    options.requests = 1_500
                    options.concurrency = 8
                    options.loseRate = 0.25
                    options.maxRetries = 30
                    options.statsTarget = HTTPTarget(host: "127.0.0.1", port: upstream.port, path: "/stats")
                    async let report = LoadRunner(options: options).run(group: MultiThreadedEventLoopGroup.singleton)
                    let chargedBeforeRestart = try await retrying(times: 1_000, pause: .milliseconds(10), while: { $0 < 300 }) {
                        upstream.snapshot().charges
                    }
                    redis.stop()
                    try redis.start()
                    #expect(chargedBeforeRestart < 1_500, "Redis restarted mid-run, not after it")
                    let result = try await report
                    #expect(result.losses > 0)
                    #expect(result.duplicates == 0)
                    #expect(result.mismatches == 0)
                    #expect(result.unanswered == 0)
                    #expect(result.passed)
                    #expect(upstream.snapshot().charges == 1_500)
                }
            }
        }
    }
}

extension LongTermStoreTests {
    /// PgBouncer killed and started again under the exactly-once load: requests in its gap get
    /// 503 and are retried; nothing runs twice and every key is answered.
    @Test func exactlyOnceWithPgBouncerRestartedMidRun() async throws {
        let bouncer = try PgBouncerProcess(inFrontOf: SharedPostgres.url)
        let table = TestTable(url: bouncer.url)
        try await withProxy(table.settings(["postgres_timeout": "1s"])) { h in
            async let report = LoadRunner(options: h.exactlyOnceLoad(requests: 1_000, maxRetries: 40))
                .run(group: MultiThreadedEventLoopGroup.singleton)
            let chargedBeforeRestart = try await retrying(times: 1_000, pause: .milliseconds(10), while: { $0 < 200 }) {
                h.upstream.snapshot().charges
            }
            bouncer.stop()
            try await Task.sleep(for: .milliseconds(500))
            try bouncer.start()
            #expect(chargedBeforeRestart < 1_000, "PgBouncer restarted mid-run, not after it")
            let result = try await report
            #expect(result.duplicates == 0)
            #expect(result.mismatches == 0)
            #expect(result.unanswered == 0, "\(bouncer.log.suffix(2_000))")
            #expect(result.passed)
            #expect(h.upstream.snapshot().charges == 1_000)
        }
    }
}

extension TestTable {
    /// Runs `config/postgres.sql`, the operators' schema file, for this table, as psql would
    /// (statement by statement), on `session`.
    func createAsConfigPostgresSQLSays(on session: PostgresConnection) async throws {
        let file = try String(contentsOfFile: "config/postgres.sql", encoding: .utf8)
            .replacingOccurrences(of: "idempotency_records", with: name)
        let code = file.split(separator: "\n").filter { !$0.hasPrefix("--") }.joined(separator: "\n")
        for statement in code.split(separator: ";").map(String.init) where !statement.allSatisfy(\.isWhitespace) {
            try await session.run(statement)
        }
    }

    /// One connection held across statements (a session-level advisory lock lives with it),
    /// closed however `body` ends.
    static func withSession(url: String, _ body: (PostgresConnection) async throws -> Void) async throws {
        let connection = try await connect(url)
        do {
            try await body(connection)
        } catch {
            try? await connection.close()
            throw error
        }
        try await connection.close()
    }
}

extension PostgresConnection {
    func run(_ sql: String) async throws {
        do {
            _ = try await query(PostgresQuery(unsafeSQL: sql), logger: Logger(label: "test-sql")).collect()
        } catch {
            throw TestSupportError(String(reflecting: error))
        }
    }
}
