import Testing

@testable import IdempotencyCore

/// SPEC §3 as tables: each row is one rule, driven through the machine from its first event to
/// the action under test. No I/O, no clock: time is a number the row chooses.
@Suite struct ProtectedRequestMachineTests {
    typealias Machine = ProtectedRequestMachine
    typealias Action = ProtectedRequestMachine.Action
    typealias Reply = ProtectedRequestMachine.Reply

    static let mine = [UInt8](repeating: 1, count: 32)
    static let other = [UInt8](repeating: 2, count: 32)
    static let owner = [UInt8](repeating: 9, count: 16)
    static let response = StoredResponse(status: 201, headers: [("A", "b")], body: Array("ok".utf8))
    static let ms: UInt64 = 1_000_000

    static func configuration(_ change: (inout ProxyConfiguration) -> Void = { _ in }) -> ProxyConfiguration {
        var c = ProxyConfiguration()
        c.maxRequestBody = 100
        c.maxStoredResponse = 100
        change(&c)
        return c
    }

    static func existing(_ fp: [UInt8], _ state: IdempotencyRecord.State) -> Machine.ClaimResult {
        .existing(IdempotencyRecord(owner: owner, fingerprint: fp, state: state))
    }

    static func problem(_ p: Problem, _ outcome: RequestOutcome, closing: Bool = false) -> Action {
        .answer(Reply(.problem(p), outcome, closesConnection: closing))
    }

    /// A machine that has sent its first claim at time 0.
    static func claiming(_ c: ProxyConfiguration) -> Machine {
        var m = Machine(configuration: c)
        _ = m.headReceived(keyHeaderValues: ["k"], declaredBodyLength: 1)
        #expect(m.bodyEnded(now: 0) { mine } == .claim)
        return m
    }

    /// A machine whose request is upstream.
    static func forwarding(_ c: ProxyConfiguration) -> Machine {
        var m = claiming(c)
        #expect(m.claimAnswered(.claimed, now: 0) == .forward(protected: true))
        return m
    }

    // MARK: - rules 1–3: the head and the body

    struct HeadRow: Sendable, CustomTestStringConvertible {
        let rule: String
        var requireKey = false
        let keys: [String]
        var declaredLength: Int? = 10
        let action: Action
        var testDescription: String { rule }
    }

    @Test(arguments: [
        HeadRow(rule: "rule 1: no key is passed through", keys: [], action: .passThrough),
        HeadRow(
            rule: "rule 1: no key with require_key is 400", requireKey: true, keys: [],
            action: problem(.missingKey(header: "Idempotency-Key"), .badRequest)),
        HeadRow(rule: "rule 2: a bare key is collected", keys: ["abc-1"], action: .collectBody(key: "abc-1")),
        HeadRow(rule: "rule 2: an sf-string names the same key", keys: ["\"abc-1\""], action: .collectBody(key: "abc-1")),
        HeadRow(
            rule: "rule 2: two key headers are 400", keys: ["a", "b"],
            action: problem(.invalidKey("The request has 2 Idempotency-Key headers; send exactly one."), .badRequest)),
        HeadRow(
            rule: "rule 2: an empty key is 400", keys: ["\"\""],
            action: problem(.invalidKey("The Idempotency-Key header is empty."), .badRequest)),
        HeadRow(
            rule: "rule 2: a key over max_key_length is 400", keys: [String(repeating: "k", count: 256)],
            action: problem(.invalidKey("The Idempotency-Key is 256 characters long; the limit is 255."), .badRequest)),
        HeadRow(
            rule: "rule 2: a key with a control character is 400", keys: ["k\u{7f}ey"],
            action: problem(.invalidKey("The Idempotency-Key header may only contain printable ASCII characters."), .badRequest)),
        HeadRow(
            rule: "rule 3: a declared body over the limit is 413 and closes", keys: ["k"], declaredLength: 101,
            action: problem(.bodyTooLarge(limit: 100), .tooLarge, closing: true)),
        HeadRow(rule: "rule 3: a body of exactly the limit is collected", keys: ["k"], declaredLength: 100, action: .collectBody(key: "k")),
        HeadRow(rule: "rule 3: a chunked body is collected", keys: ["k"], declaredLength: nil, action: .collectBody(key: "k")),
    ])
    func head(_ row: HeadRow) {
        var m = Machine(configuration: Self.configuration { $0.requireKey = row.requireKey })
        #expect(m.headReceived(keyHeaderValues: row.keys, declaredBodyLength: row.declaredLength) == row.action)
    }

    @Test func rule3_aChunkedBodyGrowingOverTheLimitIs413() {
        var m = Machine(configuration: Self.configuration())
        _ = m.headReceived(keyHeaderValues: ["k"], declaredBodyLength: nil)
        #expect(m.bodyReceived(totalLength: 100) == .nothing)
        #expect(m.bodyReceived(totalLength: 101) == Self.problem(.bodyTooLarge(limit: 100), .tooLarge, closing: true))
        // Answered: the end of the body claims nothing.
        #expect(m.bodyEnded(now: 0) { Self.mine } == .nothing)
    }

    // MARK: - rules 4, 6, 7, 9, 11: the claim's answer

    struct ClaimRow: Sendable, CustomTestStringConvertible {
        let rule: String
        var inflightWaitMs: Int64 = 0
        var waitReplicas = 0
        var onRedisError = ProxyConfiguration.OnRedisError.closed
        var fingerprint = true
        let claim: Machine.ClaimResult
        var now: UInt64 = 0
        let action: Action
        var testDescription: String { rule }
    }

    @Test(arguments: [
        ClaimRow(rule: "rule 5: a free key is claimed and forwarded", claim: .claimed, action: .forward(protected: true)),
        ClaimRow(
            rule: "redis_wait_replicas: a claim first waits for replicas, within 3/4 of redis_timeout", waitReplicas: 2,
            claim: .claimed, action: .waitForReplicas(count: 2, timeoutMs: 750)),
        ClaimRow(
            rule: "rule 6: same request, completed: replay", claim: existing(mine, .completed(response)),
            action: .answer(Reply(.replay(response), .replayed))),
        ClaimRow(rule: "rule 7: same request in flight: 409", claim: existing(mine, .inFlight), action: problem(.inFlight, .conflict)),
        ClaimRow(
            rule: "rule 7: in flight with inflight_wait: wait until the deadline", inflightWaitMs: 500,
            claim: existing(mine, .inFlight), now: 100 * ms, action: .waitForFirst(until: 500 * ms)),
        ClaimRow(
            rule: "rule 7: in flight at the inflight_wait deadline: 409", inflightWaitMs: 500, claim: existing(mine, .inFlight),
            now: 500 * ms, action: problem(.inFlight, .conflict)),
        ClaimRow(rule: "rule 7: different request, completed: 422", claim: existing(other, .completed(response)), action: problem(.mismatch, .mismatch)),
        ClaimRow(rule: "rule 7: different request in flight: 422", claim: existing(other, .inFlight), action: problem(.mismatch, .mismatch)),
        ClaimRow(
            rule: "rule 9: same request, too large to replay: 502", claim: existing(mine, .completedWithoutBody(status: 200)),
            action: problem(.responseNotReplayable, .replayed)),
        ClaimRow(
            rule: "rule 9: different request, response not kept: 422", claim: existing(other, .completedWithoutBody(status: 200)),
            action: problem(.mismatch, .mismatch)),
        ClaimRow(
            rule: "fingerprint = false: any request with the key replays", fingerprint: false,
            claim: existing([UInt8](repeating: 0, count: 32), .completed(response)), action: .answer(Reply(.replay(response), .replayed))),
        ClaimRow(rule: "rule 11: Redis down, closed: 503", claim: .failed, action: problem(.redisUnavailable, .redisError)),
        ClaimRow(rule: "rule 11: Redis down, open: forwarded unprotected", onRedisError: .open, claim: .failed, action: .forward(protected: false)),
    ])
    func claim(_ row: ClaimRow) {
        var m = Self.claiming(Self.configuration {
            $0.inflightWaitMs = row.inflightWaitMs
            $0.redisWaitReplicas = row.waitReplicas
            $0.onRedisError = row.onRedisError
            $0.fingerprint = row.fingerprint
        })
        #expect(m.claimAnswered(row.claim, now: row.now) == row.action)
    }

    @Test func rule7_aWaitingRetryClaimsAgainWhenWokenAndReplays() {
        var m = Self.claiming(Self.configuration { $0.inflightWaitMs = 500 })
        #expect(m.claimAnswered(Self.existing(Self.mine, .inFlight), now: 0) == .waitForFirst(until: 500 * Self.ms))
        #expect(m.woken() == .claim)
        #expect(m.woken() == .nothing, "one claim at a time")
        #expect(m.claimAnswered(Self.existing(Self.mine, .inFlight), now: 120 * Self.ms) == .waitForFirst(until: 500 * Self.ms))
        #expect(m.woken() == .claim)
        #expect(m.claimAnswered(Self.existing(Self.mine, .completed(Self.response)), now: 210 * Self.ms)
                == .answer(Reply(.replay(Self.response), .replayed)))
    }

    @Test func rule7_aWaitingRetryRunsWhenTheFirstIsReleased() {
        var m = Self.claiming(Self.configuration { $0.inflightWaitMs = 500 })
        _ = m.claimAnswered(Self.existing(Self.mine, .inFlight), now: 0)
        #expect(m.woken() == .claim)
        #expect(m.claimAnswered(.claimed, now: 60 * Self.ms) == .forward(protected: true))
    }

    @Test func rule7_theWaitIsMeasuredFromTheEndOfTheBody() {
        var m = Machine(configuration: Self.configuration { $0.inflightWaitMs = 500 })
        _ = m.headReceived(keyHeaderValues: ["k"], declaredBodyLength: 1)
        _ = m.bodyEnded(now: 1_000 * Self.ms) { Self.mine }
        #expect(m.claimAnswered(Self.existing(Self.mine, .inFlight), now: 1_400 * Self.ms) == .waitForFirst(until: 1_500 * Self.ms))
    }

    struct ReplicaRow: Sendable, CustomTestStringConvertible {
        let rule: String
        let acknowledged: Int?
        let action: Action
        var testDescription: String { rule }
    }

    @Test(arguments: [
        ReplicaRow(rule: "enough replicas: forwarded", acknowledged: 2, action: .forward(protected: true)),
        ReplicaRow(rule: "more replicas than asked: forwarded", acknowledged: 3, action: .forward(protected: true)),
        ReplicaRow(rule: "too few replicas: the claim is released first", acknowledged: 1, action: .settle(.release)),
        ReplicaRow(rule: "WAIT failed: the claim is released first", acknowledged: nil, action: .settle(.release)),
    ])
    func replicas(_ row: ReplicaRow) {
        var m = Self.claiming(Self.configuration { $0.redisWaitReplicas = 2 })
        _ = m.claimAnswered(.claimed, now: 0)
        #expect(m.replicasAnswered(row.acknowledged) == row.action)
    }

    @Test func replicasMissing_aFailedWaitCountsAsNoReplica() {
        var m = Self.claiming(Self.configuration { $0.redisWaitReplicas = 2 })
        _ = m.claimAnswered(.claimed, now: 0)
        _ = m.replicasAnswered(nil)
        #expect(m.settled(.done) == Self.problem(.replicasMissing(wanted: 2, got: 0), .redisError))
    }

    @Test func fingerprintOff_theRequestIsNotHashed() {
        var m = Machine(configuration: Self.configuration { $0.fingerprint = false })
        _ = m.headReceived(keyHeaderValues: ["k"], declaredBodyLength: 1)
        _ = m.bodyEnded(now: 0) {
            Issue.record("hashed although fingerprint = false")
            return Self.mine
        }
        #expect(m.fingerprint == [UInt8](repeating: 0, count: 32))
    }

    @Test func replicasMissing_answers503OnceTheClaimIsReleased() {
        var m = Self.claiming(Self.configuration { $0.redisWaitReplicas = 2 })
        _ = m.claimAnswered(.claimed, now: 0)
        _ = m.replicasAnswered(1)
        #expect(m.settled(.done) == Self.problem(.replicasMissing(wanted: 2, got: 1), .redisError))
    }

    // MARK: - rules 5, 8, 9: the upstream's outcome

    struct UpstreamRow: Sendable, CustomTestStringConvertible {
        let rule: String
        var store5xx = false
        let result: Machine.UpstreamResult
        let action: Action
        /// The answer once the settlement (if any) is done.
        let reply: Reply
        var testDescription: String { rule }
    }

    static func collected(_ status: Int, bodyLength: Int = 2) -> Machine.UpstreamResult {
        .response(StoredResponse(status: status, headers: [], body: [UInt8](repeating: 0x61, count: bodyLength)))
    }

    static let forwarded = Reply(.upstreamResponse, .forwarded)

    @Test(arguments: [
        UpstreamRow(
            rule: "rule 5: a 2xx is stored, then answered", result: collected(201),
            action: .settle(.complete(.completed(StoredResponse(status: 201, headers: [], body: Array("aa".utf8))))),
            reply: forwarded),
        UpstreamRow(
            rule: "rule 5: a 4xx is stored", result: collected(404),
            action: .settle(.complete(.completed(StoredResponse(status: 404, headers: [], body: Array("aa".utf8))))),
            reply: forwarded),
        UpstreamRow(rule: "rule 8: a 5xx releases the claim", result: collected(503), action: .settle(.release), reply: forwarded),
        UpstreamRow(
            rule: "rule 8: store_5xx stores a 5xx", store5xx: true, result: collected(500),
            action: .settle(.complete(.completed(StoredResponse(status: 500, headers: [], body: Array("aa".utf8))))),
            reply: forwarded),
        UpstreamRow(
            rule: "rule 8: no connection releases, then 502", result: .notConnected, action: .settle(.release),
            reply: Reply(.problem(.upstreamUnreachable), .upstreamError)),
        UpstreamRow(
            rule: "rule 8: a timeout keeps the claim: 504 at once", result: .failed(.timedOut, afterStreaming: false),
            action: problem(.upstreamTimeout, .upstreamError), reply: Reply(.problem(.upstreamTimeout), .upstreamError)),
        UpstreamRow(
            rule: "rule 8: a broken exchange keeps the claim: 502 at once", result: .failed(.broken, afterStreaming: false),
            action: problem(.upstreamBroken, .upstreamError), reply: Reply(.problem(.upstreamBroken), .upstreamError)),
        UpstreamRow(
            rule: "rule 8: an invalid response keeps the claim: 502", result: .failed(.invalidResponse, afterStreaming: false),
            action: problem(.invalidUpstreamResponse, .upstreamError),
            reply: Reply(.problem(.invalidUpstreamResponse), .upstreamError)),
        UpstreamRow(
            rule: "rule 8: a failure after part of a streamed response went out cuts the connection",
            result: .failed(.broken, afterStreaming: true), action: .answer(Reply(.abortStreamedResponse, .upstreamError)),
            reply: Reply(.abortStreamedResponse, .upstreamError)),
        UpstreamRow(
            rule: "rule 9: a streamed (too large) response is completed without its body", result: .streamed(status: 200),
            action: .settle(.complete(.completedWithoutBody(status: 200))), reply: Reply(.endOfStreamedResponse, .forwarded)),
        UpstreamRow(
            rule: "rule 9: a collected response over the limit is completed without its body", result: collected(200, bodyLength: 101),
            action: .settle(.complete(.completedWithoutBody(status: 200))), reply: forwarded),
        UpstreamRow(
            rule: "rule 9: exactly the limit is stored", result: collected(200, bodyLength: 100),
            action: .settle(.complete(.completed(StoredResponse(status: 200, headers: [], body: [UInt8](repeating: 0x61, count: 100))))),
            reply: forwarded),
        UpstreamRow(
            rule: "rules 8 before 9: a streamed 5xx is released", result: .streamed(status: 502), action: .settle(.release),
            reply: Reply(.endOfStreamedResponse, .forwarded)),
    ])
    func upstream(_ row: UpstreamRow) {
        var m = Self.forwarding(Self.configuration { $0.store5xx = row.store5xx })
        let action = m.upstreamFinished(row.result)
        #expect(action == row.action)
        if case .settle = action {
            #expect(m.settled(.done) == .answer(row.reply))
        }
    }

    struct UnprotectedRow: Sendable, CustomTestStringConvertible {
        let rule: String
        let result: Machine.UpstreamResult
        let reply: Reply
        var testDescription: String { rule }
    }

    @Test(arguments: [
        UnprotectedRow(rule: "rule 11 open: the response is passed on, counted as redis_error", result: collected(201), reply: Reply(.upstreamResponse, .redisError)),
        UnprotectedRow(rule: "rule 11 open: a 5xx is passed on, nothing released", result: collected(500), reply: Reply(.upstreamResponse, .redisError)),
        UnprotectedRow(rule: "rule 11 open: no connection is 502", result: .notConnected, reply: Reply(.problem(.upstreamUnreachable), .upstreamError)),
        UnprotectedRow(rule: "rule 11 open: a timeout is 504", result: .failed(.timedOut, afterStreaming: false), reply: Reply(.problem(.upstreamTimeout), .upstreamError)),
    ])
    func unprotected(_ row: UnprotectedRow) {
        var m = Self.claiming(Self.configuration { $0.onRedisError = .open })
        #expect(m.claimAnswered(.failed, now: 0) == .forward(protected: false))
        #expect(m.upstreamFinished(row.result) == .answer(row.reply))
    }

    // MARK: - settling on a flaky Redis

    @Test func settling_isRetriedWithBackoffOnRedisErrorsThenGivenUp() {
        var m = Self.forwarding(Self.configuration())
        let settle = Action.settle(.complete(.completed(StoredResponse(status: 201, headers: [], body: Array("aa".utf8)))))
        #expect(m.upstreamFinished(Self.collected(201)) == settle)
        for backoff: Int64 in [100, 200, 400] {
            #expect(m.settled(.unavailable) == .retrySettle(afterMs: backoff))
            #expect(m.retryDue() == settle)
        }
        // The fourth failure: the client still gets its answer.
        #expect(m.settled(.unavailable) == .answer(Self.forwarded))
        #expect(m.retryDue() == .nothing)
    }

    @Test func settling_refusedByTheStoreIsNotRetried() {
        var m = Self.forwarding(Self.configuration())
        _ = m.upstreamFinished(.notConnected)
        #expect(m.settled(.refused) == .answer(Reply(.problem(.upstreamUnreachable), .upstreamError)))
    }

    @Test func settling_thatSucceedsOnARetryAnswers() {
        var m = Self.forwarding(Self.configuration())
        _ = m.upstreamFinished(.notConnected)
        #expect(m.settled(.unavailable) == .retrySettle(afterMs: 100))
        #expect(m.retryDue() == .settle(.release))
        #expect(m.settled(.done) == .answer(Reply(.problem(.upstreamUnreachable), .upstreamError)))
    }

    // MARK: - events out of turn

    @Test func eventsOutOfTurnDoNothing() {
        var m = Self.forwarding(Self.configuration())
        #expect(m.claimAnswered(.claimed, now: 0) == .nothing)
        #expect(m.woken() == .nothing)
        #expect(m.replicasAnswered(1) == .nothing)
        #expect(m.settled(.done) == .nothing)
        #expect(m.headReceived(keyHeaderValues: ["k"], declaredBodyLength: 1) == .nothing)
        _ = m.upstreamFinished(.failed(.timedOut, afterStreaming: false))
        #expect(m.upstreamFinished(.notConnected) == .nothing, "a finished request stays finished")
    }
}
