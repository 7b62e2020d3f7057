import IdempotencyCore
import Logging
import NIOCore
import NIOEmbedded
import RedisClient
import Testing

@testable import IdempotencyProxy

/// `ProxyHandler` on `EmbeddedChannel`s: the client connection and every upstream connection
/// are channels of one `EmbeddedEventLoop`, and the test plays the upstream with real HTTP
/// bytes. No sockets, no sleeps: what is asserted is the exact byte order on the wire.
@Suite struct ProxyHandlerEmbeddedTests {
    /// A client connection to a proxy whose upstream connections the test answers.
    final class Rig {
        let loop: EmbeddedEventLoop
        let client: EmbeddedChannel
        let store = ScriptedStore()
        /// Set with `longTerm: true`: PostgreSQL behind Redis, both noting calls in one journal.
        let longTerm: ScriptedLongTermStore?
        private(set) var upstreams: [EmbeddedChannel] = []
        let context: LoopContext

        init(longTerm: Bool = false, _ change: (inout ProxyConfiguration) -> Void = { _ in }) throws {
            var configuration = ProxyConfiguration()
            if longTerm {
                configuration.postgresURL = PostgresURL(address: HostPort(host: "db", port: 5432), username: "u", database: "d")
            }
            change(&configuration)
            let longTermStore = longTerm ? ScriptedLongTermStore(journal: store.journal) : nil
            self.longTerm = longTermStore
            let logger = Logger(label: "embedded") { _ in SwiftLogNoOpLogHandler() }
            let loop = EmbeddedEventLoop()
            self.loop = loop
            var made: [EmbeddedChannel] = []
            let pool = UpstreamPool(
                eventLoop: loop, upstream: configuration.upstream, connectTimeout: .seconds(1), logger: logger
            ) {
                let channel = EmbeddedChannel(loop: loop)
                let connection = UpstreamConnection(logger: logger)
                try! channel.pipeline.syncOperations.addHandler(connection)
                try! channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8080)).wait()
                made.append(channel)
                return loop.makeSucceededFuture(connection)
            }
            context = LoopContext(
                eventLoop: loop, configuration: configuration, metrics: ProxyMetrics(), logger: logger, store: store,
                longTermStore: longTermStore, subscriber: SilentPubSub(), pool: pool, waitPollInterval: .milliseconds(100))
            client = EmbeddedChannel(loop: loop)
            try client.pipeline.syncOperations.addHandler(ProxyHandler(loop: context))
            try client.connect(to: SocketAddress(ipAddress: "127.0.0.2", port: 40_000)).wait()
            upstreamsFound = { made }
        }

        private var upstreamsFound: () -> [EmbeddedChannel] = { [] }

        /// The client sends `bytes` in one read.
        func send(_ bytes: String) throws {
            try client.writeInbound(ByteBuffer(string: bytes))
            loop.run()
        }

        /// What the client has been sent so far.
        func received() throws -> String { try Self.drain(client) }

        /// What upstream connection `index` has been sent so far.
        func upstreamReceived(_ index: Int) throws -> String { try Self.drain(upstreamsFound()[index]) }

        func upstreamCount() -> Int { upstreamsFound().count }

        func upstreamChannel(_ index: Int) -> EmbeddedChannel { upstreamsFound()[index] }

        /// `idemproxy_requests_total` for `outcome`.
        func count(_ outcome: String) -> Int {
            metric("idemproxy_requests_total{outcome=\"\(outcome)\",route=\"default\"}")
        }

        /// The value of the metric line `name` (with its labels); -1 when there is none.
        func metric(_ name: String) -> Int {
            metricValue(name, in: String(decoding: context.metrics.render(), as: UTF8.self)) ?? -1
        }

        /// Upstream connection `index` answers.
        func upstreamAnswers(_ index: Int, _ bytes: String) throws {
            try upstreamsFound()[index].writeInbound(ByteBuffer(string: bytes))
            loop.run()
        }

        private static func drain(_ channel: EmbeddedChannel) throws -> String {
            var out = ""
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) { out += String(buffer: buffer) }
            return out
        }
    }

    static let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    @Test func aValidRequestThenGarbageIsAnsweredInOrderThenClosed() throws {
        let rig = try Rig()
        try rig.send("GET /stats HTTP/1.1\r\nHost: t\r\n\r\nGARBAGE\r\n\r\n")
        // Nothing is answered before the upstream has answered the first request.
        #expect(try rig.received() == "")
        #expect(try rig.upstreamReceived(0).hasPrefix("GET /stats HTTP/1.1\r\n"))
        try rig.upstreamAnswers(0, Self.ok)
        let wire = try rig.received()
        let first = try #require(wire.range(of: "HTTP/1.1 200 OK\r\n"))
        let second = try #require(wire.range(of: "HTTP/1.1 400 Bad Request\r\n"))
        #expect(first.upperBound <= second.lowerBound)
        #expect(wire.contains("\r\n\r\nok"))
        #expect(wire.hasSuffix("}\n"), "the problem's body is the last thing sent")
        #expect(!rig.client.isActive)
    }

    @Test func anUnkeyedPostThenGarbageIsForwardedAndAnswered() throws {
        let rig = try Rig()
        try rig.send("POST /charges HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabcGARBAGE\r\n\r\n")
        #expect(try rig.upstreamReceived(0).hasSuffix("\r\n\r\nabc"))
        try rig.upstreamAnswers(0, "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nch")
        let wire = try rig.received()
        #expect(wire.hasPrefix("HTTP/1.1 201 Created\r\n"))
        #expect(wire.contains("HTTP/1.1 400 Bad Request\r\n"))
    }

    /// A request the upstream answers with `answer`, then bytes that are no request: what the
    /// client was sent for each.
    static func problemAfter(_ request: String, answer: String) throws -> (first: String, problem: String) {
        let rig = try Rig()
        try rig.send(request)
        try rig.upstreamAnswers(0, answer)
        let first = try rig.received()
        try rig.send("GARBAGE\r\n\r\n")
        return (first, try rig.received())
    }

    @Test func a400AfterAHeadCarriesItsBody() throws {
        let (head, problem) = try Self.problemAfter(
            "HEAD /x HTTP/1.1\r\nHost: t\r\n\r\n", answer: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        #expect(head.hasSuffix("Content-Length: 5\r\n\r\n"))
        #expect(problem.hasPrefix("HTTP/1.1 400 Bad Request\r\n"))
        #expect(problem.contains("\"status\":400"))
    }

    @Test func a400AfterAnHTTP10RequestIsAnHTTP11Answer() throws {
        let (old, problem) = try Self.problemAfter("GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", answer: Self.ok)
        #expect(old.contains("Connection: keep-alive\r\n"))
        #expect(problem.hasPrefix("HTTP/1.1 400 Bad Request\r\n"))
        #expect(problem.contains("Connection: close\r\n"))
    }

    @Test func pipelinedRequestsWaitForTheOneBefore() throws {
        let rig = try Rig()
        try rig.send("GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n")
        #expect(rig.upstreamCount() == 1)
        let first = try rig.upstreamReceived(0)
        #expect(first.hasPrefix("GET /a HTTP/1.1\r\n"))
        #expect(!first.contains("GET /b"), "the second request waits for the first one's answer")
        try rig.upstreamAnswers(0, Self.ok)
        // The connection went back to the pool and carries the second request.
        let second = try rig.upstreamReceived(0)
        #expect(second.hasPrefix("GET /b HTTP/1.1\r\n"), "got \(second)")
        try rig.upstreamAnswers(0, Self.ok)
        #expect(try rig.received().components(separatedBy: "HTTP/1.1 200 OK").count == 3)
        #expect(rig.client.isActive)
    }

    @Test func continueIsSentOnceTheBodyIsWanted() throws {
        let rig = try Rig()
        try rig.send("POST /charges HTTP/1.1\r\nHost: t\r\nIdempotency-Key: k\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        #expect(try rig.received() == "HTTP/1.1 100 Continue\r\n\r\n")
    }

    @Test func noContinueGoesOutBeforeARefusal() throws {
        let rig = try Rig()
        try rig.send("POST /charges HTTP/1.1\r\nHost: t\r\nIdempotency-Key: \"\"\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        #expect(try rig.received().hasPrefix("HTTP/1.1 400 Bad Request\r\n"))
    }

    // MARK: - every request counted once

    @Test func aClientGoneWhileItsProtectedRequestRunsIsCountedWhenTheAnswerComes() throws {
        let rig = try Rig()
        rig.store.holdClaims = true
        try rig.send("POST /charges HTTP/1.1\r\nHost: t\r\nIdempotency-Key: k\r\nContent-Length: 1\r\n\r\nx")
        try rig.client.close().wait()
        rig.loop.run()
        #expect(rig.count("forwarded") == 0)
        rig.store.answerHeldClaim(.claimed)
        try rig.upstreamAnswers(0, "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nch")
        #expect(rig.count("forwarded") == 1)
        #expect(rig.store.settled == ["complete"], "rule 10: the response is stored although the client left")
        #expect(rig.context.protectedInFlight == 0)
    }

    @Test func aChunkedBodyOverTheLimitIs413CountedOnce() throws {
        let rig = try Rig { $0.maxRequestBody = 4 }
        try rig.send("POST /charges HTTP/1.1\r\nHost: t\r\nIdempotency-Key: k\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n")
        #expect(try rig.received().hasPrefix("HTTP/1.1 413 Payload Too Large\r\n"))
        try rig.send("0\r\n\r\n")
        #expect(rig.count("too_large") == 1)
        #expect(rig.count("bad_request") == 0)
        #expect(rig.context.protectedInFlight == 0)
    }

    @Test func badBytesInAPassthroughUploadAre400CountedOnce() throws {
        let rig = try Rig()
        try rig.send("PUT /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n")
        #expect(try rig.received().hasPrefix("HTTP/1.1 400 Bad Request\r\n"))
        #expect(rig.count("bad_request") == 1)
        #expect(rig.count("passthrough") == 0)
        #expect(!rig.upstreamChannel(0).isActive, "the half-sent request is abandoned upstream")
    }

    @Test func aResponseCutShortUpstreamClosesTheClientAndCountsOnce() throws {
        let rig = try Rig()
        try rig.send("GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
        try rig.upstreamAnswers(0, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        try rig.upstreamChannel(0).close().wait()
        rig.loop.run()
        #expect(!rig.client.isActive)
        #expect(rig.count("upstream_error") == 1)
        #expect(rig.count("passthrough") == 0)
    }

    // MARK: - inflight_wait on the loop's clock

    @Test func aRetryWaitingForTheFirstIsAnsweredWhenItsPollFindsTheReplay() throws {
        let rig = try Rig { $0.inflightWaitMs = 1_000 }
        let stored = StoredResponse(status: 201, headers: [("Content-Length", "2")], body: Array("ch".utf8))
        let owner = [UInt8](repeating: 7, count: 16)
        rig.store.claims = [
            { .existing(IdempotencyRecord(owner: owner, fingerprint: $0.fingerprint, state: .inFlight)) },
            { .existing(IdempotencyRecord(owner: owner, fingerprint: $0.fingerprint, state: .completed(stored))) },
        ]
        try rig.send("POST /charges HTTP/1.1\r\nHost: t\r\nIdempotency-Key: k\r\nContent-Length: 1\r\n\r\nx")
        #expect(try rig.received() == "")
        rig.loop.advanceTime(by: .milliseconds(100))
        #expect(try rig.received().contains("Idempotent-Replayed: true\r\n"))
        #expect(rig.count("replayed") == 1)
    }

    @Test func aRetryWaitingPastInflightWaitGets409() throws {
        let rig = try Rig { $0.inflightWaitMs = 250 }
        let owner = [UInt8](repeating: 7, count: 16)
        let inFlight: (IdempotencyRecord) -> ProtectedRequestMachine.ClaimAnswer = {
            .existing(IdempotencyRecord(owner: owner, fingerprint: $0.fingerprint, state: .inFlight))
        }
        rig.store.claims = Array(repeating: inFlight, count: 10)
        try rig.send("POST /charges HTTP/1.1\r\nHost: t\r\nIdempotency-Key: k\r\nContent-Length: 1\r\n\r\nx")
        rig.loop.advanceTime(by: .milliseconds(200))
        #expect(try rig.received() == "")
        rig.loop.advanceTime(by: .milliseconds(100))
        let wire = try rig.received()
        #expect(wire.hasPrefix("HTTP/1.1 409 Conflict\r\n"))
        #expect(wire.contains("Retry-After: 1\r\n"))
        #expect(rig.store.claimsMade == 4, "claimed at 0, 100, 200 and 250 ms")
    }

    @Test func aProtectedRequestIsAnsweredFromTheStore() throws {
        let rig = try Rig()
        let stored = StoredResponse(status: 201, headers: [("Content-Length", "2")], body: Array("ch".utf8))
        rig.store.claims = [{ record in
            .existing(IdempotencyRecord(owner: [UInt8](repeating: 7, count: 16), fingerprint: record.fingerprint, state: .completed(stored)))
        }]
        try rig.send("POST /charges HTTP/1.1\r\nHost: t\r\nIdempotency-Key: k\r\nContent-Length: 1\r\n\r\nx")
        let wire = try rig.received()
        #expect(wire.hasPrefix("HTTP/1.1 201 Created\r\n"))
        #expect(wire.contains("Idempotent-Replayed: true\r\n"))
        #expect(wire.hasSuffix("\r\n\r\nch"))
        #expect(rig.upstreamCount() == 0)
    }

    // MARK: - claims whose answer never came

    @Test func aClaimWithNoAnswerIs503AndWithdrawnOnceTheStoresClockIsPastItsDeadline() throws {
        let rig = try Rig { $0.redisTimeoutMs = 500 }
        rig.store.claimFailure = .redis(.timeout)
        // The store's clock is short of the deadline twice, then the claim is withdrawn.
        rig.store.withdrawals = [nil, nil, true]
        let sent = WallClock.milliseconds()
        try rig.send("POST /charges HTTP/1.1\r\nHost: t\r\nIdempotency-Key: k\r\nContent-Length: 1\r\n\r\nx")
        #expect(try rig.received().hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"))
        #expect(rig.store.withdrawalDeadlines.count == 1)
        let deadline = try #require(rig.store.withdrawalDeadlines.first)
        #expect(deadline >= sent + 500 && deadline <= WallClock.milliseconds() + 500, "the claim's own deadline")
        rig.loop.advanceTime(by: .milliseconds(200))
        #expect(rig.store.withdrawalDeadlines.count == 2)
        rig.loop.advanceTime(by: .milliseconds(400))
        #expect(rig.store.withdrawalDeadlines == [deadline, deadline, deadline])
        rig.loop.advanceTime(by: .seconds(10))
        #expect(rig.store.withdrawalDeadlines.count == 3, "done once withdrawn")
        #expect(rig.upstreamCount() == 0)
    }

    @Test(arguments: [StoreError.redis(.notConnected("reconnecting")), .lateClaim, .redis(.server("READONLY"))])
    func aClaimThatCertainlyWroteNothingIsNotWithdrawn(failure: StoreError) throws {
        let rig = try Rig()
        rig.store.claimFailure = failure
        try rig.send("POST /charges HTTP/1.1\r\nHost: t\r\nIdempotency-Key: k\r\nContent-Length: 1\r\n\r\nx")
        #expect(try rig.received().hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"))
        rig.loop.advanceTime(by: .seconds(5))
        #expect(rig.store.withdrawalDeadlines.isEmpty)
    }

    @Test func quiescingClosesAnIdleConnectionAndABusyOneAfterItsAnswer() throws {
        let idle = try Rig()
        idle.client.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        idle.loop.run()
        #expect(!idle.client.isActive)

        let busy = try Rig()
        try busy.send("GET /a HTTP/1.1\r\nHost: t\r\n\r\n")
        busy.client.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        busy.loop.run()
        #expect(busy.client.isActive)
        try busy.upstreamAnswers(0, Self.ok)
        #expect(try busy.received().contains("Connection: close\r\n"))
        #expect(!busy.client.isActive)
    }
}
