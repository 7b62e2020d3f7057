import IdempotencyCore
import NIOCore
import Testing

@testable import IdempotencyProxy

/// The PostgreSQL rows of the failure matrix (docs/behaviour.md, "With a long-term store") on
/// an embedded loop: `ProxyHandler` and `ProtectedRequest` with scripted stores, the upstream
/// played with real HTTP bytes. The live `LongTermStoreTests` run the same rows against real
/// servers; these pin the order of the store calls and run in milliseconds without them.
@Suite struct LongTermEmbeddedTests {
    typealias Rig = ProxyHandlerEmbeddedTests.Rig

    static let post = "POST /charges HTTP/1.1\r\nHost: t\r\nIdempotency-Key: k\r\nContent-Length: 1\r\n\r\nx"
    static let created = "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nch"
    static let stored = StoredResponse(status: 201, headers: [("Content-Length", "2")], body: Array("ch".utf8))

    @Test func bothStoresClaimThenPostgresSettlesFirst() throws {
        let rig = try Rig(longTerm: true)
        try rig.send(Self.post)
        #expect(rig.store.journal.calls == ["redis claim", "postgres claim"])
        try rig.upstreamAnswers(0, Self.created)
        #expect(rig.store.journal.calls == ["redis claim", "postgres claim", "postgres complete", "redis complete"])
        #expect(try rig.received().hasPrefix("HTTP/1.1 201 Created\r\n"))
        #expect(rig.count("forwarded") == 1)
    }

    @Test func redisDownPostgresAloneProtectsAndKeepsTheResponse() throws {
        let rig = try Rig(longTerm: true)
        rig.store.claimFailure = .redis(.notConnected("reconnecting"))
        try rig.send(Self.post)
        try rig.upstreamAnswers(0, Self.created)
        #expect(rig.store.journal.calls == ["redis claim", "postgres claim", "postgres complete"])
        #expect(try rig.received().hasPrefix("HTTP/1.1 201 Created\r\n"))
    }

    @Test func aRecordPostgresCompletedIsReplayedAndCopiedBackToRedis() throws {
        let rig = try Rig(longTerm: true)
        rig.longTerm?.claims = [{ owner, fingerprint in
            .success(.existing(
                IdempotencyRecord(owner: [UInt8](repeating: 7, count: 16), fingerprint: fingerprint, state: .completed(Self.stored)),
                expiresInMs: 60_000))
        }]
        try rig.send(Self.post)
        #expect(rig.store.journal.calls == ["redis claim", "postgres claim", "redis complete"])
        let wire = try rig.received()
        #expect(wire.hasPrefix("HTTP/1.1 201 Created\r\n"))
        #expect(wire.contains("Idempotent-Replayed: true\r\n"))
        #expect(rig.upstreamCount() == 0)
        #expect(rig.metric("idemproxy_replays_total{store=\"postgres\"}") == 1)
    }

    @Test func aRecordPostgresCannotReadIs503AndNeverForwarded() throws {
        let rig = try Rig(longTerm: true) { $0.onPostgresError = .redis }
        rig.longTerm?.claims = [{ _, _ in .failure(.malformedRecord("short")) }]
        try rig.send(Self.post)
        #expect(rig.store.journal.calls == ["redis claim", "postgres claim", "redis withdraw"])
        let wire = try rig.received()
        #expect(wire.hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"))
        #expect(wire.contains("long-term-record-unreadable"))
        #expect(rig.upstreamCount() == 0)
    }

    @Test func postgresDownWithClosedReleasesTheRedisClaimThen503() throws {
        let rig = try Rig(longTerm: true)
        rig.longTerm?.claims = [{ _, _ in .failure(.unavailable("connection refused")) }]
        try rig.send(Self.post)
        #expect(rig.store.journal.calls == ["redis claim", "postgres claim", "redis release"])
        #expect(try rig.received().contains("long-term-store-unavailable"))
        rig.loop.advanceTime(by: .seconds(5))
        #expect(rig.longTerm?.withdrawalDeadlines == [], "a claim never sent is not withdrawn")
    }

    @Test func aPostgresClaimThatTimedOutIsWithdrawnAfterTheAnswer() throws {
        let rig = try Rig(longTerm: true) { $0.postgresTimeoutMs = 500 }
        rig.longTerm?.claims = [{ _, _ in .failure(.timeout) }]
        try rig.send(Self.post)
        #expect(try rig.received().hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"))
        #expect(rig.store.journal.calls.prefix(3) == ["redis claim", "postgres claim", "redis release"])
        #expect(rig.longTerm?.withdrawalDeadlines.count == 1, "the claim may have committed: it is withdrawn")
    }

    @Test func postgresDownWithRedisFallbackIsProtectedByRedisAlone() throws {
        let rig = try Rig(longTerm: true) { $0.onPostgresError = .redis }
        rig.longTerm?.claims = [{ _, _ in .failure(.unavailable("connection refused")) }]
        try rig.send(Self.post)
        try rig.upstreamAnswers(0, Self.created)
        #expect(rig.store.journal.calls == ["redis claim", "postgres claim", "redis complete"])
        #expect(try rig.received().hasPrefix("HTTP/1.1 201 Created\r\n"))
    }

    @Test func aClaimPostgresGaveToANewerRequestGivesRedisNoCompletion() throws {
        let rig = try Rig(longTerm: true)
        rig.longTerm?.completions = [.success(false)]
        try rig.send(Self.post)
        try rig.upstreamAnswers(0, Self.created)
        #expect(rig.store.journal.calls == ["redis claim", "postgres claim", "postgres complete", "redis withdraw"])
        #expect(try rig.received().hasPrefix("HTTP/1.1 201 Created\r\n"))
        #expect(rig.metric("idemproxy_completions_lost_total") == 1)
    }

    @Test func aPostgresSettlementThatFailsIsTriedAgainBeforeTheAnswer() throws {
        let rig = try Rig(longTerm: true)
        rig.longTerm?.completions = [.failure(.unavailable("restarting")), .failure(.server(sqlState: "57P03", message: "starting up"))]
        try rig.send(Self.post)
        try rig.upstreamAnswers(0, Self.created)
        #expect(try rig.received() == "", "no answer while PostgreSQL is being tried again")
        rig.loop.advanceTime(by: .milliseconds(100))
        #expect(try rig.received() == "")
        rig.loop.advanceTime(by: .milliseconds(200))
        #expect(rig.store.journal.calls.suffix(4) == ["postgres complete", "postgres complete", "postgres complete", "redis complete"])
        #expect(try rig.received().hasPrefix("HTTP/1.1 201 Created\r\n"))
        #expect(rig.metric("idemproxy_completions_lost_total") == 0)
    }

    @Test func aPostgresSettlementThatTimedOutIsNotTriedAgain() throws {
        let rig = try Rig(longTerm: true)
        rig.longTerm?.completions = [.failure(.timeout)]
        try rig.send(Self.post)
        try rig.upstreamAnswers(0, Self.created)
        #expect(rig.store.journal.calls == ["redis claim", "postgres claim", "postgres complete", "redis complete"])
        #expect(try rig.received().hasPrefix("HTTP/1.1 201 Created\r\n"))
    }

    @Test func anUnreadableRedisRecordIsAnsweredByPostgres() throws {
        let rig = try Rig(longTerm: true) { $0.onRedisError = .open }
        rig.store.claimFailure = .malformedRecord("short")
        try rig.send(Self.post)
        try rig.upstreamAnswers(0, Self.created)
        #expect(rig.store.journal.calls == ["redis claim", "postgres claim", "postgres complete"])
        #expect(rig.count("forwarded") == 1, "protected by PostgreSQL, not forwarded unprotected")
    }

    @Test func anUnreadableRedisRecordWithoutPostgresIs503EvenWhenOpen() throws {
        let rig = try Rig { $0.onRedisError = .open }
        rig.store.claimFailure = .malformedRecord("short")
        try rig.send(Self.post)
        let wire = try rig.received()
        #expect(wire.hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"))
        #expect(wire.contains("record-unreadable"))
        #expect(rig.upstreamCount() == 0)
    }
}
