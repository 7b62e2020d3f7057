import Testing

@testable import IdempotencyCore

/// docs/behaviour.md §3 as tables: each row is one rule, driven through the machine from its first event to
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

    /// When the upstream answered, on the wall clock: the completions' time.
    static let completedAt: Int64 = 1_700_000_000_000

    /// This request's in-flight record, and its claim in each store.
    static let claimRecord = IdempotencyRecord(owner: owner, fingerprint: mine, state: .inFlight)
    static let claimRedis = Action.claim(claimRecord, in: .redis)
    static let claimPostgres = Action.claim(claimRecord, in: .postgres)

    /// This request's completed record; `at` 0: a copied record that does not say when.
    static func completion(_ state: IdempotencyRecord.State, at: Int64 = completedAt) -> IdempotencyRecord {
        IdempotencyRecord(owner: owner, fingerprint: mine, state: state, completedAtMs: at)
    }

    static func existing(_ fp: [UInt8], _ state: IdempotencyRecord.State) -> Machine.StoreOutcome<Machine.ClaimAnswer> {
        .success(.existing(IdempotencyRecord(owner: owner, fingerprint: fp, state: state)))
    }

    /// Redis settles a completion for `response_ttl`.
    static func completing(_ state: IdempotencyRecord.State) -> Action {
        .settle(.complete(completion(state), ttlMs: ProxyConfiguration().responseTTLMs), in: .redis)
    }

    static func problem(_ p: Problem, _ outcome: RequestOutcome, closing: Bool = false) -> Action {
        .answer(Reply(.problem(p), outcome, closesConnection: closing))
    }

    static func refused(_ p: Problem, _ outcome: RequestOutcome, closing: Bool = false) -> Machine.HeadDecision {
        .refuse(Reply(.problem(p), outcome, closesConnection: closing))
    }

    /// A machine that has sent its first claim at time 0.
    static func claiming(_ c: ProxyConfiguration) -> Machine {
        var m = Machine(policy: Policy(c), owner: Self.owner)
        _ = m.headReceived(keyHeaderValues: ["k"], declaredBodyLength: 1)
        let zeros = [UInt8](repeating: 0, count: IdempotencyRecord.fingerprintLength)
        let record = IdempotencyRecord(owner: owner, fingerprint: c.fingerprint ? mine : zeros, state: .inFlight)
        #expect(m.bodyEnded(now: 0) { mine } == .claim(record, in: .redis))
        return m
    }

    /// A machine whose request is upstream.
    static func forwarding(_ c: ProxyConfiguration) -> Machine {
        var m = claiming(c)
        #expect(m.claimAnswered(.success(.claimed), in: .redis, now: 0) == .forward(protected: true))
        return m
    }

    // MARK: - routes: the key from the JSON body

    struct BodyKeyRow: Sendable, CustomTestStringConvertible {
        let rule: String
        var requireKey = false
        /// What the executor found at the pointer.
        let bodyKey: String?
        let action: Action
        var testDescription: String { rule }
    }

    static let pointer = try! JSONPointer(parsing: "/id")

    @Test(arguments: [
        BodyKeyRow(rule: "key_from json: the key at the pointer is claimed", bodyKey: "evt_1", action: claimRedis),
        BodyKeyRow(
            rule: "key_from json: no key there, require_key: 400", requireKey: true, bodyKey: nil,
            action: problem(.missingBodyKey(pointer: "/id"), .badRequest)),
        BodyKeyRow(rule: "key_from json: no key there: forwarded unprotected", bodyKey: nil, action: .forward(protected: false)),
        BodyKeyRow(
            rule: "key_from json: a key over max_key_length is 400", bodyKey: String(repeating: "k", count: 256),
            action: problem(.invalidKey("The key at json:/id is 256 characters long; the limit is 255."), .badRequest)),
        BodyKeyRow(
            rule: "key_from json: a key of non-printable characters is 400", bodyKey: "a\nb",
            action: problem(.invalidKey("The key at json:/id may only contain printable ASCII characters."), .badRequest)),
    ])
    func bodyKey(_ row: BodyKeyRow) {
        var c = Self.configuration { $0.requireKey = row.requireKey }
        c.routes = [Route(name: "hooks", path: try! PathPattern(parsing: "/hooks"), keyFromJSON: Self.pointer, settings: c)]
        var m = Machine(policy: Policy(c, route: c.routes[0]), owner: Self.owner)
        // The key header is not read on such a route; a declared body over the limit is 413 first.
        #expect(m.headReceived(keyHeaderValues: [], declaredBodyLength: 10) == .collectBody(key: nil))
        #expect(m.bodyEnded(now: 0, bodyKey: row.bodyKey) { Self.mine } == row.action)
        if row.action == .forward(protected: false) {
            #expect(m.upstreamFinished(.response(Self.response), nowMs: Self.completedAt) == .answer(Reply(.upstreamResponse(Self.response), .passthrough)))
        }
        var tooLarge = Machine(policy: Policy(c, route: c.routes[0]), owner: Self.owner)
        #expect(tooLarge.headReceived(keyHeaderValues: [], declaredBodyLength: 101) == Self.refused(.bodyTooLarge(limit: 100), .tooLarge, closing: true))
    }

    // MARK: - rules 1–3: the head and the body

    struct HeadRow: Sendable, CustomTestStringConvertible {
        let rule: String
        var requireKey = false
        let keys: [String]
        var declaredLength: Int? = 10
        let action: Machine.HeadDecision
        var testDescription: String { rule }
    }

    @Test(arguments: [
        HeadRow(rule: "rule 1: no key is passed through", keys: [], action: .passThrough),
        HeadRow(
            rule: "rule 1: no key with require_key is 400", requireKey: true, keys: [],
            action: refused(.missingKey(header: "Idempotency-Key"), .badRequest)),
        HeadRow(rule: "rule 2: a bare key is collected", keys: ["abc-1"], action: .collectBody(key: "abc-1")),
        HeadRow(rule: "rule 2: an sf-string names the same key", keys: ["\"abc-1\""], action: .collectBody(key: "abc-1")),
        HeadRow(
            rule: "rule 2: two key headers are 400", keys: ["a", "b"],
            action: refused(.invalidKey("The request has 2 Idempotency-Key headers; send exactly one."), .badRequest)),
        HeadRow(
            rule: "rule 2: an empty key is 400", keys: ["\"\""],
            action: refused(.invalidKey("The Idempotency-Key header is empty."), .badRequest)),
        HeadRow(
            rule: "rule 2: a key over max_key_length is 400", keys: [String(repeating: "k", count: 256)],
            action: refused(.invalidKey("The Idempotency-Key header is 256 characters long; the limit is 255."), .badRequest)),
        HeadRow(
            rule: "rule 2: a key with a control character is 400", keys: ["k\u{7f}ey"],
            action: refused(.invalidKey("The Idempotency-Key header may only contain printable ASCII characters."), .badRequest)),
        HeadRow(
            rule: "rule 3: a declared body over the limit is 413 and closes", keys: ["k"], declaredLength: 101,
            action: refused(.bodyTooLarge(limit: 100), .tooLarge, closing: true)),
        HeadRow(rule: "rule 3: a body of exactly the limit is collected", keys: ["k"], declaredLength: 100, action: .collectBody(key: "k")),
        HeadRow(rule: "rule 3: a chunked body is collected", keys: ["k"], declaredLength: nil, action: .collectBody(key: "k")),
    ])
    func head(_ row: HeadRow) {
        var m = Machine(policy: Policy(Self.configuration { $0.requireKey = row.requireKey }), owner: Self.owner)
        #expect(m.headReceived(keyHeaderValues: row.keys, declaredBodyLength: row.declaredLength) == row.action)
    }

    @Test func rule3_aChunkedBodyGrowingOverTheLimitIs413() {
        var m = Machine(policy: Policy(Self.configuration()), owner: Self.owner)
        _ = m.headReceived(keyHeaderValues: ["k"], declaredBodyLength: nil)
        #expect(m.bodyReceived(totalLength: 100) == .nothing)
        #expect(m.bodyReceived(totalLength: 101) == Self.problem(.bodyTooLarge(limit: 100), .tooLarge, closing: true))
        // Answered: the connection skips the rest of the body, so an end reaching the machine is a bug.
        guard case .preconditionFailed = m.bodyEnded(now: 0, fingerprint: { Self.mine }) else {
            Issue.record("the end of a body answered with 413 was taken")
            return
        }
    }

    // MARK: - rules 4, 6, 7, 9, 11: the claim's answer

    struct ClaimRow: Sendable, CustomTestStringConvertible {
        let rule: String
        var inflightWaitMs: Int64 = 0
        var waitReplicas = 0
        var onRedisError = ProxyConfiguration.OnRedisError.closed
        var fingerprint = true
        let claim: Machine.StoreOutcome<Machine.ClaimAnswer>
        var now: UInt64 = 0
        let action: Action
        var testDescription: String { rule }
    }

    @Test(arguments: [
        ClaimRow(rule: "rule 5: a free key is claimed and forwarded", claim: .success(.claimed), action: .forward(protected: true)),
        ClaimRow(
            rule: "redis_wait_replicas: a claim first waits for replicas, within 3/4 of redis_timeout", waitReplicas: 2,
            claim: .success(.claimed), action: .waitForReplicas(count: 2, timeoutMs: 750)),
        ClaimRow(
            rule: "rule 6: same request, completed: replay", claim: existing(mine, .completed(response)),
            action: .answer(Reply(.replay(response), .replayed, replayedFrom: .redis))),
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
            rule: "rule 9: same request, too large to replay: 502", claim: existing(mine, .completedWithoutBody(status: 200, bodyBytes: 2_000_000)),
            action: .answer(Reply(.problem(.responseNotReplayable), .replayed, replayedFrom: .redis))),
        ClaimRow(
            rule: "rule 9: different request, response not kept: 422", claim: existing(other, .completedWithoutBody(status: 200, bodyBytes: 2_000_000)),
            action: problem(.mismatch, .mismatch)),
        ClaimRow(
            rule: "fingerprint = false: any request with the key replays", fingerprint: false,
            claim: existing([UInt8](repeating: 0, count: 32), .completed(response)), action: .answer(Reply(.replay(response), .replayed, replayedFrom: .redis))),
        ClaimRow(rule: "rule 11: Redis down, closed: 503", claim: .failure(.unavailable), action: problem(.redisUnavailable, .redisError)),
        ClaimRow(rule: "rule 11: Redis down, open: forwarded unprotected", onRedisError: .open, claim: .failure(.unavailable), action: .forward(protected: false)),
        ClaimRow(
            rule: "late claims: a claim sent and never answered is 503 and withdrawn when Redis answers again", claim: .failure(.timedOut),
            action: .answer(Reply(.problem(.redisUnavailable), .redisError, claimsToWithdraw: [.redis]))),
        ClaimRow(
            rule: "late claims: unanswered with on_redis_error = open is forwarded unprotected",
            onRedisError: .open, claim: .failure(.timedOut), action: .forward(protected: false)),
        ClaimRow(
            rule: "store outcomes: a claim interrupted mid-answer is 503 and withdrawn, as one timed out", claim: .failure(.interrupted),
            action: .answer(Reply(.problem(.redisUnavailable), .redisError, claimsToWithdraw: [.redis]))),
        ClaimRow(
            rule: "store outcomes: a claim Redis refused (run after its deadline) wrote nothing: 503, nothing withdrawn",
            claim: .failure(.refused), action: problem(.redisUnavailable, .redisError)),
        ClaimRow(
            rule: "store outcomes: a record Redis holds and cannot read is 503, never forwarded, even with on_redis_error = open",
            onRedisError: .open, claim: .failure(.unreadable), action: problem(.recordUnreadable, .redisError)),
    ])
    func claim(_ row: ClaimRow) {
        var m = Self.claiming(Self.configuration {
            $0.inflightWaitMs = row.inflightWaitMs
            $0.redisWaitReplicas = row.waitReplicas
            $0.onRedisError = row.onRedisError
            $0.fingerprint = row.fingerprint
        })
        #expect(m.claimAnswered(row.claim, in: .redis, now: row.now) == row.action)
    }

    @Test func rule7_aWaitingRetryClaimsAgainWhenWokenAndReplays() {
        var m = Self.claiming(Self.configuration { $0.inflightWaitMs = 500 })
        #expect(m.claimAnswered(Self.existing(Self.mine, .inFlight), in: .redis, now: 0) == .waitForFirst(until: 500 * Self.ms))
        #expect(m.woken() == Self.claimRedis)
        #expect(m.woken() == .nothing, "one claim at a time")
        #expect(m.claimAnswered(Self.existing(Self.mine, .inFlight), in: .redis, now: 120 * Self.ms) == .waitForFirst(until: 500 * Self.ms))
        #expect(m.woken() == Self.claimRedis)
        #expect(m.claimAnswered(Self.existing(Self.mine, .completed(Self.response)), in: .redis, now: 210 * Self.ms)
                == .answer(Reply(.replay(Self.response), .replayed, replayedFrom: .redis)))
    }

    @Test func rule7_aWaitingRetryRunsWhenTheFirstIsReleased() {
        var m = Self.claiming(Self.configuration { $0.inflightWaitMs = 500 })
        _ = m.claimAnswered(Self.existing(Self.mine, .inFlight), in: .redis, now: 0)
        #expect(m.woken() == Self.claimRedis)
        #expect(m.claimAnswered(.success(.claimed), in: .redis, now: 60 * Self.ms) == .forward(protected: true))
    }

    @Test func rule7_theWaitIsMeasuredFromTheEndOfTheBody() {
        var m = Machine(policy: Policy(Self.configuration { $0.inflightWaitMs = 500 }), owner: Self.owner)
        _ = m.headReceived(keyHeaderValues: ["k"], declaredBodyLength: 1)
        _ = m.bodyEnded(now: 1_000 * Self.ms) { Self.mine }
        #expect(m.claimAnswered(Self.existing(Self.mine, .inFlight), in: .redis, now: 1_400 * Self.ms) == .waitForFirst(until: 1_500 * Self.ms))
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
        ReplicaRow(rule: "too few replicas: the claim is released first", acknowledged: 1, action: .settle(.release, in: .redis)),
        ReplicaRow(rule: "WAIT failed: the claim is released first", acknowledged: nil, action: .settle(.release, in: .redis)),
    ])
    func replicas(_ row: ReplicaRow) {
        var m = Self.claiming(Self.configuration { $0.redisWaitReplicas = 2 })
        _ = m.claimAnswered(.success(.claimed), in: .redis, now: 0)
        #expect(m.replicasAnswered(row.acknowledged) == row.action)
    }

    @Test func replicasMissing_aFailedWaitCountsAsNoReplica() {
        var m = Self.claiming(Self.configuration { $0.redisWaitReplicas = 2 })
        _ = m.claimAnswered(.success(.claimed), in: .redis, now: 0)
        _ = m.replicasAnswered(nil)
        #expect(m.settled(.success(.done), now: 0) == Self.problem(.replicasMissing(wanted: 2, got: 0), .redisError))
    }

    @Test func fingerprintOff_theRequestIsNotHashed() {
        var m = Machine(policy: Policy(Self.configuration { $0.fingerprint = false }), owner: Self.owner)
        _ = m.headReceived(keyHeaderValues: ["k"], declaredBodyLength: 1)
        let claim = m.bodyEnded(now: 0) {
            Issue.record("hashed although fingerprint = false")
            return Self.mine
        }
        #expect(claim == .claim(IdempotencyRecord(owner: Self.owner, fingerprint: [UInt8](repeating: 0, count: 32), state: .inFlight), in: .redis))
    }

    @Test func replicasMissing_answers503OnceTheClaimIsReleased() {
        var m = Self.claiming(Self.configuration { $0.redisWaitReplicas = 2 })
        _ = m.claimAnswered(.success(.claimed), in: .redis, now: 0)
        _ = m.replicasAnswered(1)
        #expect(m.settled(.success(.done), now: 0) == Self.problem(.replicasMissing(wanted: 2, got: 1), .redisError))
    }

    // MARK: - rules 5, 8, 9: the upstream's outcome

    struct UpstreamRow: Sendable, CustomTestStringConvertible {
        let rule: String
        var releaseStatuses = ReleaseStatuses.default
        let result: Machine.UpstreamResult
        let action: Action
        /// The answer once the settlement (if any) is done; nil: the upstream's response.
        let reply: Reply?
        var testDescription: String { rule }
    }

    static func collected(_ status: Int, bodyLength: Int = 2) -> Machine.UpstreamResult {
        .response(StoredResponse(status: status, headers: [], body: [UInt8](repeating: 0x61, count: bodyLength)))
    }

    /// The upstream's own response (`collected(status)`), answered as it came.
    static func forwarded(_ status: Int) -> Reply {
        Reply(.upstreamResponse(StoredResponse(status: status, headers: [], body: Array("aa".utf8))), .forwarded)
    }

    static let forwarded = forwarded(201)

    static func releasing(_ list: String) -> ReleaseStatuses { try! ReleaseStatuses.parse(list) }

    @Test(arguments: [
        UpstreamRow(
            rule: "rule 5: a 2xx is stored, then answered", result: collected(201),
            action: completing(.completed(StoredResponse(status: 201, headers: [], body: Array("aa".utf8)))),
            reply: nil),
        UpstreamRow(
            rule: "rule 5: a 4xx is stored", result: collected(404),
            action: completing(.completed(StoredResponse(status: 404, headers: [], body: Array("aa".utf8)))),
            reply: nil),
        UpstreamRow(rule: "rule 8: a 5xx releases the claim", result: collected(503), action: .settle(.release, in: .redis), reply: nil),
        UpstreamRow(rule: "rule 8: a 429 releases the claim", result: collected(429), action: .settle(.release, in: .redis), reply: nil),
        UpstreamRow(rule: "rule 8: a 408 releases the claim", result: collected(408), action: .settle(.release, in: .redis), reply: nil),
        UpstreamRow(rule: "rule 8: a 425 releases the claim", result: collected(425), action: .settle(.release, in: .redis), reply: nil),
        UpstreamRow(
            rule: "rule 8: store_5xx stores a 5xx", releaseStatuses: .storing5xx, result: collected(500),
            action: completing(.completed(StoredResponse(status: 500, headers: [], body: Array("aa".utf8)))),
            reply: nil),
        UpstreamRow(
            rule: "rule 8: a 500 left out of the list is stored", releaseStatuses: releasing("408,425,429,502,503"),
            result: collected(500), action: completing(.completed(StoredResponse(status: 500, headers: [], body: Array("aa".utf8)))),
            reply: nil),
        UpstreamRow(
            rule: "rule 8: a 502 kept in the list is released", releaseStatuses: releasing("408,425,429,502,503"),
            result: collected(502), action: .settle(.release, in: .redis), reply: nil),
        UpstreamRow(
            rule: "rule 8: a class releases each of its codes", releaseStatuses: releasing("4xx"), result: collected(404),
            action: .settle(.release, in: .redis), reply: nil),
        UpstreamRow(
            rule: "rule 8: a 2xx is stored whatever the list says", releaseStatuses: releasing("2xx,201"), result: collected(201),
            action: completing(.completed(StoredResponse(status: 201, headers: [], body: Array("aa".utf8)))),
            reply: nil),
        UpstreamRow(
            rule: "rule 8: a 3xx is stored whatever the list says", releaseStatuses: releasing("3xx"), result: collected(303),
            action: completing(.completed(StoredResponse(status: 303, headers: [], body: Array("aa".utf8)))),
            reply: nil),
        UpstreamRow(
            rule: "rule 8: an empty list stores a 503", releaseStatuses: releasing(""), result: collected(503),
            action: completing(.completed(StoredResponse(status: 503, headers: [], body: Array("aa".utf8)))),
            reply: nil),
        UpstreamRow(
            rule: "rule 8: no connection releases, then 502", result: .notConnected, action: .settle(.release, in: .redis),
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
            rule: "rule 9: a streamed (too large) response is completed without its body", result: .streamed(status: 200, bodyBytes: 2_000_000),
            action: completing(.completedWithoutBody(status: 200, bodyBytes: 2_000_000)), reply: Reply(.endOfStreamedResponse, .forwarded)),
        UpstreamRow(
            rule: "rule 9: a collected response over the limit is completed without its body", result: collected(200, bodyLength: 101),
            action: completing(.completedWithoutBody(status: 200, bodyBytes: 101)), reply: nil),
        UpstreamRow(
            rule: "rule 9: exactly the limit is stored", result: collected(200, bodyLength: 100),
            action: completing(.completed(StoredResponse(status: 200, headers: [], body: [UInt8](repeating: 0x61, count: 100)))),
            reply: nil),
        UpstreamRow(
            rule: "rules 8 before 9: a streamed 5xx is released", result: .streamed(status: 502, bodyBytes: 2_000_000), action: .settle(.release, in: .redis),
            reply: Reply(.endOfStreamedResponse, .forwarded)),
    ])
    func upstream(_ row: UpstreamRow) {
        var m = Self.forwarding(Self.configuration { $0.releaseStatuses = row.releaseStatuses })
        let action = m.upstreamFinished(row.result, nowMs: Self.completedAt)
        #expect(action == row.action)
        if case .answer(let reply) = action, let expected = row.reply { #expect(reply == expected) }
        if case .settle = action {
            var reply = row.reply
            if reply == nil, case .response(let response) = row.result { reply = Reply(.upstreamResponse(response), .forwarded) }
            #expect(m.settled(.success(.done), now: 0) == reply.map(Action.answer))
        }
    }

    struct UnprotectedRow: Sendable, CustomTestStringConvertible {
        let rule: String
        let result: Machine.UpstreamResult
        let reply: Reply
        var testDescription: String { rule }
    }

    @Test(arguments: [
        UnprotectedRow(rule: "rule 11 open: the response is passed on, counted as redis_error", result: collected(201), reply: Reply(.upstreamResponse(stored), .redisError)),
        UnprotectedRow(rule: "rule 11 open: a 5xx is passed on, nothing released", result: collected(500), reply: Reply(.upstreamResponse(StoredResponse(status: 500, headers: [], body: Array("aa".utf8))), .redisError)),
        UnprotectedRow(
            rule: "rule 11 open: a large response is passed on as it comes", result: .streamed(status: 200, bodyBytes: 2_000_000),
            reply: Reply(.endOfStreamedResponse, .redisError)),
        UnprotectedRow(rule: "rule 11 open: no connection is 502", result: .notConnected, reply: Reply(.problem(.upstreamUnreachable), .upstreamError)),
        UnprotectedRow(rule: "rule 11 open: a timeout is 504", result: .failed(.timedOut, afterStreaming: false), reply: Reply(.problem(.upstreamTimeout), .upstreamError)),
    ])
    func unprotected(_ row: UnprotectedRow) {
        var m = Self.claiming(Self.configuration { $0.onRedisError = .open })
        #expect(m.claimAnswered(.failure(.unavailable), in: .redis, now: 0) == .forward(protected: false))
        #expect(m.upstreamFinished(row.result, nowMs: Self.completedAt) == .answer(row.reply))
    }

    // MARK: - settling on a flaky Redis

    /// Redis refusing at once: tries 100 ms doubling to 1 s apart, for 5 s from the first failure.
    @Test func settling_isRetriedWithBackoffOnRedisErrorsThenGivenUp() {
        var m = Self.forwarding(Self.configuration())
        let settle = Self.completing(.completed(StoredResponse(status: 201, headers: [], body: Array("aa".utf8))))
        #expect(m.upstreamFinished(Self.collected(201), nowMs: Self.completedAt) == settle)
        var now: UInt64 = 7_000_000_000
        for backoff: Int64 in Self.settleBackoffs {
            #expect(m.settled(.failure(.unavailable), now: now) == .retrySettle(afterMs: backoff))
            #expect(m.retryDue() == settle)
            now += UInt64(backoff) * 1_000_000
        }
        // 4.5 s after the first failure: the next try would start after the 5 s window, so the
        // client gets its answer now.
        #expect(m.settled(.failure(.unavailable), now: now) == .answer(Self.forwarded))
        guard case .preconditionFailed = m.retryDue() else {
            Issue.record("a retry after the answer was taken")
            return
        }
    }

    /// What `settling_isRetriedWithBackoffOnRedisErrorsThenGivenUp` waits between tries.
    static let settleBackoffs: [Int64] = [100, 200, 400, 800, 1_000, 1_000, 1_000]

    /// A try is made only if it starts within 5 s of the first failure: here the second, due
    /// 200 ms after a failure at `at`.
    @Test(arguments: [(4_799_999_999, true), (4_800_000_000, false)] as [(UInt64, Bool)])
    func settling_noTryStartsAfterTheWindow(at: UInt64, retried: Bool) {
        var m = Self.forwarding(Self.configuration())
        _ = m.upstreamFinished(.notConnected, nowMs: Self.completedAt)
        #expect(m.settled(.failure(.unavailable), now: 0) == .retrySettle(afterMs: 100))
        let given = Reply(.problem(.upstreamUnreachable), .upstreamError)
        #expect(m.settled(.failure(.unavailable), now: at) == (retried ? .retrySettle(afterMs: 200) : .answer(given)))
    }

    /// Redis timing out: each try takes `redis_timeout`, so fewer fit in the 5 s.
    @Test func settling_onTimeoutsEndsFiveSecondsAfterTheFirstFailure() {
        var m = Self.forwarding(Self.configuration())
        _ = m.upstreamFinished(.notConnected, nowMs: Self.completedAt)
        let second: UInt64 = 1_000_000_000
        #expect(m.settled(.failure(.unavailable), now: 1 * second) == .retrySettle(afterMs: 100))
        #expect(m.settled(.failure(.unavailable), now: 2_100_000_000) == .retrySettle(afterMs: 200))
        #expect(m.settled(.failure(.unavailable), now: 3_300_000_000) == .retrySettle(afterMs: 400))
        #expect(m.settled(.failure(.unavailable), now: 4_700_000_000) == .retrySettle(afterMs: 800))
        #expect(m.settled(.failure(.unavailable), now: 6_500_000_000) == .answer(Reply(.problem(.upstreamUnreachable), .upstreamError)))
    }

    /// Every store's every failure while settling: tried again, or given up on for that store.
    @Test(arguments: [
        (Machine.Store.redis, Machine.StoreFailure.unavailable, true), (.redis, .interrupted, true), (.redis, .timedOut, true),
        (.redis, .refused, false), (.redis, .unreadable, false),
        (.postgres, .unavailable, true), (.postgres, .interrupted, true), (.postgres, .timedOut, false),
        (.postgres, .refused, false), (.postgres, .unreadable, false),
    ] as [(Machine.Store, Machine.StoreFailure, Bool)])
    func settling_eachFailureOfEachStore(store: Machine.Store, failure: Machine.StoreFailure, retried: Bool) {
        #expect(Machine.retries(.failure(failure), in: store) == retried)
        #expect(!Machine.retries(.success(.done), in: store) && !Machine.retries(.success(.takenOver), in: store))
    }

    @Test func settling_refusedByTheStoreIsNotRetried() {
        var m = Self.forwarding(Self.configuration())
        _ = m.upstreamFinished(.notConnected, nowMs: Self.completedAt)
        #expect(m.settled(.failure(.refused), now: 0) == .answer(Reply(.problem(.upstreamUnreachable), .upstreamError)))
    }

    @Test func settling_thatSucceedsOnARetryAnswers() {
        var m = Self.forwarding(Self.configuration())
        _ = m.upstreamFinished(.notConnected, nowMs: Self.completedAt)
        #expect(m.settled(.failure(.unavailable), now: 0) == .retrySettle(afterMs: 100))
        #expect(m.retryDue() == .settle(.release, in: .redis))
        #expect(m.settled(.success(.done), now: 0) == .answer(Reply(.problem(.upstreamUnreachable), .upstreamError)))
    }

    // MARK: - events out of turn

    @Test func eventsOutOfTurnAreBugsSaidAloud() {
        func isBug(_ action: Action) -> Bool { if case .preconditionFailed = action { return true } else { return false } }
        var m = Self.forwarding(Self.configuration())
        #expect(isBug(m.claimAnswered(.success(.claimed), in: .redis, now: 0)))
        m = Self.forwarding(Self.configuration())
        #expect(isBug(m.replicasAnswered(1)))
        m = Self.forwarding(Self.configuration())
        #expect(isBug(m.settled(.success(.done), now: 0)))
        m = Self.forwarding(Self.configuration())
        #expect(isBug(m.retryDue()))
        m = Self.forwarding(Self.configuration())
        #expect(isBug(m.bodyReceived(totalLength: 1)))
        // A late Pub/Sub message is no bug: the request is claiming again, or done.
        #expect(m.woken() == .nothing)
        var claiming = Self.claiming(Self.configuration())
        #expect(isBug(claiming.claimAnswered(.success(.claimed), in: .postgres, now: 0)), "a PostgreSQL answer to a Redis claim")
        var done = Self.forwarding(Self.configuration())
        #expect(done.upstreamFinished(.failed(.timedOut, afterStreaming: false), nowMs: Self.completedAt) == Self.problem(.upstreamTimeout, .upstreamError))
        #expect(isBug(done.upstreamFinished(.notConnected, nowMs: Self.completedAt)), "a finished request stays finished")
    }

    // MARK: - the long-term store (docs/behaviour.md §3): every cell of the failure matrix and every transition

    /// One event of a protected request after its body ended.
    enum Event: Equatable, Sendable {
        case redis(Machine.StoreOutcome<Machine.ClaimAnswer>)
        case postgres(Machine.StoreOutcome<Machine.ClaimAnswer>)
        case replicas(Int?)
        case upstream(Machine.UpstreamResult)
        case settled(Machine.StoreOutcome<Machine.SettleAnswer>)
        case woken
    }

    struct LongTermRow: Sendable, CustomTestStringConvertible {
        let rule: String
        var onPostgresError = ProxyConfiguration.OnPostgresError.closed
        var onRedisError = ProxyConfiguration.OnRedisError.closed
        var inflightWaitMs: Int64 = 0
        var waitReplicas = 0
        /// Each event, and the action it must lead to.
        let steps: [(Event, Action)]
        var testDescription: String { rule }
    }

    static let day: Int64 = 86_400_000
    static let responseTTL = day
    static let retention = 30 * day
    static let stored = StoredResponse(status: 201, headers: [], body: Array("aa".utf8))
    static func inPostgres(_ fp: [UInt8], _ state: IdempotencyRecord.State, expiresInMs: Int64 = 30 * day) -> Event {
        .postgres(.success(.existing(IdempotencyRecord(owner: owner, fingerprint: fp, state: state), expiresInMs: expiresInMs)))
    }
    static func replayFromPostgres(_ response: StoredResponse) -> Action {
        .answer(Reply(.replay(response), .replayed, replayedFrom: .postgres))
    }

    @Test(arguments: [
        // Both stores answer.
        LongTermRow(rule: "long-term claims: a key Redis grants is claimed in PostgreSQL too, then forwarded", steps: [
            (.redis(.success(.claimed)), claimPostgres), (.postgres(.success(.claimed)), .forward(protected: true)),
        ]),
        LongTermRow(rule: "long-term settling: a response is stored in PostgreSQL for retention, then in Redis for response_ttl, then answered", steps: [
            (.redis(.success(.claimed)), claimPostgres), (.postgres(.success(.claimed)), .forward(protected: true)),
            (.upstream(collected(201)), .settle(.complete(completion(.completed(stored)), ttlMs: retention), in: .postgres)),
            (.settled(.success(.done)), .settle(.complete(completion(.completed(stored)), ttlMs: responseTTL), in: .redis)),
            (.settled(.success(.done)), .answer(forwarded)),
        ]),
        LongTermRow(rule: "long-term settling: a 5xx releases the claim in PostgreSQL, then in Redis", steps: [
            (.redis(.success(.claimed)), claimPostgres), (.postgres(.success(.claimed)), .forward(protected: true)),
            (.upstream(collected(503)), .settle(.release, in: .postgres)),
            (.settled(.success(.done)), .settle(.release, in: .redis)), (.settled(.success(.done)), .answer(forwarded(503))),
        ]),
        LongTermRow(rule: "long-term settling: a response too large to replay is completed without body in both stores", steps: [
            (.redis(.success(.claimed)), claimPostgres), (.postgres(.success(.claimed)), .forward(protected: true)),
            (.upstream(.streamed(status: 200, bodyBytes: 2_000_000)), .settle(.complete(completion(.completedWithoutBody(status: 200, bodyBytes: 2_000_000)), ttlMs: retention), in: .postgres)),
            (.settled(.success(.done)), .settle(.complete(completion(.completedWithoutBody(status: 200, bodyBytes: 2_000_000)), ttlMs: responseTTL), in: .redis)),
            (.settled(.success(.done)), .answer(Reply(.endOfStreamedResponse, .forwarded))),
        ]),
        LongTermRow(rule: "long-term settling: no upstream connection releases both claims, then 502", steps: [
            (.redis(.success(.claimed)), claimPostgres), (.postgres(.success(.claimed)), .forward(protected: true)),
            (.upstream(.notConnected), .settle(.release, in: .postgres)),
            (.settled(.success(.done)), .settle(.release, in: .redis)),
            (.settled(.success(.done)), problem(.upstreamUnreachable, .upstreamError)),
        ]),
        LongTermRow(rule: "long-term settling with rule 8: a timeout keeps both claims: 504 at once", steps: [
            (.redis(.success(.claimed)), claimPostgres), (.postgres(.success(.claimed)), .forward(protected: true)),
            (.upstream(.failed(.timedOut, afterStreaming: false)), problem(.upstreamTimeout, .upstreamError)),
        ]),
        LongTermRow(rule: "long-term settling: PostgreSQL failing to settle is retried for 5 s, given up, and Redis still settles, within what is left of the window", steps: [
            (.redis(.success(.claimed)), claimPostgres), (.postgres(.success(.claimed)), .forward(protected: true)),
            (.upstream(collected(201)), .settle(.complete(completion(.completed(stored)), ttlMs: retention), in: .postgres)),
        ] + settleBackoffs.map { (.settled(.failure(.unavailable)), .retrySettle(afterMs: $0)) } + [
            (.settled(.failure(.unavailable)), .settle(.complete(completion(.completed(stored)), ttlMs: responseTTL), in: .redis)),
            (.settled(.failure(.unavailable)), .retrySettle(afterMs: 100)),
            (.settled(.failure(.unavailable)), .retrySettle(afterMs: 200)),
            (.settled(.failure(.unavailable)), .answer(forwarded)),
        ]),
        LongTermRow(rule: "long-term settling: PostgreSQL refusing a settlement is not retried; Redis settles next", steps: [
            (.redis(.success(.claimed)), claimPostgres), (.postgres(.success(.claimed)), .forward(protected: true)),
            (.upstream(collected(503)), .settle(.release, in: .postgres)),
            (.settled(.failure(.refused)), .settle(.release, in: .redis)), (.settled(.success(.done)), .answer(forwarded(503))),
        ]),
        LongTermRow(rule: "long-term claims: a record PostgreSQL completed is copied back to Redis, then replayed", steps: [
            (.redis(.success(.claimed)), claimPostgres),
            (inPostgres(mine, .completed(stored)), .settle(.complete(completion(.completed(stored), at: 0), ttlMs: responseTTL), in: .redis)),
            (.settled(.success(.done)), replayFromPostgres(stored)),
        ]),
        LongTermRow(rule: "long-term claims: a copy back that finds Redis taken by another stores nothing of ours: no completion lost", steps: [
            (.redis(.success(.claimed)), claimPostgres),
            (inPostgres(mine, .completed(stored)), .settle(.complete(completion(.completed(stored), at: 0), ttlMs: responseTTL), in: .redis)),
            (.settled(.success(.takenOver)), replayFromPostgres(stored)),
        ]),
        LongTermRow(rule: "long-term claims: a copy back keeps the time the request completed", steps: [
            (.redis(.success(.claimed)), claimPostgres),
            (.postgres(.success(.existing(IdempotencyRecord(owner: owner, fingerprint: mine, state: .completed(stored), completedAtMs: 1_234), expiresInMs: day))),
             .settle(.complete(completion(.completed(stored), at: 1_234), ttlMs: day), in: .redis)),
            (.settled(.success(.done)), replayFromPostgres(stored)),
        ]),
        LongTermRow(rule: "retention: a copy back never outlives the record's retention", steps: [
            (.redis(.success(.claimed)), claimPostgres),
            (inPostgres(mine, .completed(stored), expiresInMs: 5_000), .settle(.complete(completion(.completed(stored), at: 0), ttlMs: 5_000), in: .redis)),
            (.settled(.success(.done)), replayFromPostgres(stored)),
        ]),
        LongTermRow(rule: "long-term claims: a copy back that Redis fails to take still replays", steps: [
            (.redis(.success(.claimed)), claimPostgres),
            (inPostgres(mine, .completed(stored)), .settle(.complete(completion(.completed(stored), at: 0), ttlMs: responseTTL), in: .redis)),
            (.settled(.failure(.refused)), replayFromPostgres(stored)),
        ]),
        LongTermRow(rule: "long-term claims with rule 9: a record without body is copied back, then 502", steps: [
            (.redis(.success(.claimed)), claimPostgres),
            (inPostgres(mine, .completedWithoutBody(status: 200, bodyBytes: 2_000_000)), .settle(.complete(completion(.completedWithoutBody(status: 200, bodyBytes: 2_000_000), at: 0), ttlMs: responseTTL), in: .redis)),
            (.settled(.success(.done)), .answer(Reply(.problem(.responseNotReplayable), .replayed, replayedFrom: .postgres))),
        ]),
        LongTermRow(rule: "long-term claims: another fingerprint in PostgreSQL releases our Redis claim, then 422", steps: [
            (.redis(.success(.claimed)), claimPostgres), (inPostgres(other, .completed(stored)), .settle(.withdraw, in: .redis)),
            (.settled(.success(.done)), problem(.mismatch, .mismatch)),
        ]),
        LongTermRow(rule: "long-term claims: a live claim in PostgreSQL that Redis lost releases our Redis claim, then 409", steps: [
            (.redis(.success(.claimed)), claimPostgres), (inPostgres(mine, .inFlight), .settle(.withdraw, in: .redis)),
            (.settled(.success(.done)), problem(.inFlight, .conflict)),
        ]),
        LongTermRow(rule: "long-term claims with inflight_wait: release, wait, claim again, and replay what Redis now holds", inflightWaitMs: 500, steps: [
            (.redis(.success(.claimed)), claimPostgres), (inPostgres(mine, .inFlight), .settle(.withdraw, in: .redis)),
            (.settled(.success(.done)), .waitForFirst(until: 500 * ms)), (.woken, claimRedis),
            (.redis(existing(mine, .completed(stored))), .answer(Reply(.replay(stored), .replayed, replayedFrom: .redis))),
        ]),
        LongTermRow(rule: "long-term claims with inflight_wait: the first released, the waiting request runs", inflightWaitMs: 500, steps: [
            (.redis(.success(.claimed)), claimPostgres), (inPostgres(mine, .inFlight), .settle(.withdraw, in: .redis)),
            (.settled(.success(.done)), .waitForFirst(until: 500 * ms)), (.woken, claimRedis), (.redis(.success(.claimed)), claimPostgres),
            (.postgres(.success(.claimed)), .forward(protected: true)),
        ]),
        LongTermRow(rule: "long-term settling: a record Redis holds is answered by Redis alone", steps: [
            (.redis(existing(mine, .completed(stored))), .answer(Reply(.replay(stored), .replayed, replayedFrom: .redis))),
        ]),
        LongTermRow(rule: "long-term settling: a claim Redis holds is 409 from Redis alone", steps: [
            (.redis(existing(mine, .inFlight)), problem(.inFlight, .conflict)),
        ]),
        LongTermRow(rule: "redis_wait_replicas: WAIT comes after both claims; too few replicas releases both", waitReplicas: 1, steps: [
            (.redis(.success(.claimed)), claimPostgres), (.postgres(.success(.claimed)), .waitForReplicas(count: 1, timeoutMs: 750)),
            (.replicas(0), .settle(.release, in: .postgres)), (.settled(.success(.done)), .settle(.release, in: .redis)),
            (.settled(.success(.done)), problem(.replicasMissing(wanted: 1, got: 0), .redisError)),
        ]),

        // Redis down or timing out, PostgreSQL answers: protected by PostgreSQL alone.
        LongTermRow(rule: "failure matrix Redis down: PostgreSQL alone claims, never a 503 for Redis", steps: [
            (.redis(.failure(.unavailable)), claimPostgres), (.postgres(.success(.claimed)), .forward(protected: true)),
            (.upstream(collected(201)), .settle(.complete(completion(.completed(stored)), ttlMs: retention), in: .postgres)),
            (.settled(.success(.done)), .answer(forwarded)),
        ]),
        LongTermRow(rule: "failure matrix Redis down: a 5xx releases the claim in PostgreSQL only", steps: [
            (.redis(.failure(.unavailable)), claimPostgres), (.postgres(.success(.claimed)), .forward(protected: true)),
            (.upstream(collected(500)), .settle(.release, in: .postgres)), (.settled(.success(.done)), .answer(forwarded(500))),
        ]),
        LongTermRow(rule: "failure matrix Redis down: replayed from PostgreSQL without a copy back", steps: [
            (.redis(.failure(.unavailable)), claimPostgres), (inPostgres(mine, .completed(stored)), replayFromPostgres(stored)),
        ]),
        LongTermRow(rule: "failure matrix Redis down: 409 from PostgreSQL", steps: [
            (.redis(.failure(.unavailable)), claimPostgres), (inPostgres(mine, .inFlight), problem(.inFlight, .conflict)),
        ]),
        LongTermRow(rule: "failure matrix Redis down: 422 from PostgreSQL", steps: [
            (.redis(.failure(.unavailable)), claimPostgres), (inPostgres(other, .inFlight), problem(.mismatch, .mismatch)),
        ]),
        LongTermRow(rule: "failure matrix Redis down, with inflight_wait: waits on PostgreSQL's claim, no Redis claim to withdraw", inflightWaitMs: 500, steps: [
            (.redis(.failure(.unavailable)), claimPostgres), (inPostgres(mine, .inFlight), .waitForFirst(until: 500 * ms)), (.woken, claimRedis),
            (.redis(.failure(.unavailable)), claimPostgres), (inPostgres(mine, .completed(stored)), replayFromPostgres(stored)),
        ]),
        LongTermRow(rule: "failure matrix Redis down: no WAIT for replicas Redis does not hold", waitReplicas: 1, steps: [
            (.redis(.failure(.unavailable)), claimPostgres), (.postgres(.success(.claimed)), .forward(protected: true)),
        ]),

        // Redis answers, PostgreSQL down or timing out: on_postgres_error.
        LongTermRow(rule: "failure matrix PostgreSQL down, closed: the Redis claim is released, then 503", steps: [
            (.redis(.success(.claimed)), claimPostgres), (.postgres(.failure(.unavailable)), .settle(.release, in: .redis)),
            (.settled(.success(.done)), problem(.postgresUnavailable, .postgresError)),
        ]),
        LongTermRow(rule: "failure matrix PostgreSQL down, redis: protected by Redis alone", onPostgresError: .redis, steps: [
            (.redis(.success(.claimed)), claimPostgres), (.postgres(.failure(.unavailable)), .forward(protected: true)),
            (.upstream(collected(201)), .settle(.complete(completion(.completed(stored)), ttlMs: responseTTL), in: .redis)),
            (.settled(.success(.done)), .answer(forwarded)),
        ]),
        LongTermRow(rule: "failure matrix PostgreSQL down, redis, with redis_wait_replicas: WAIT still comes first", onPostgresError: .redis, waitReplicas: 1, steps: [
            (.redis(.success(.claimed)), claimPostgres), (.postgres(.failure(.unavailable)), .waitForReplicas(count: 1, timeoutMs: 750)),
            (.replicas(1), .forward(protected: true)),
        ]),

        LongTermRow(rule: "failure matrix: an unreadable record in PostgreSQL is never forwarded, even with on_postgres_error = redis", onPostgresError: .redis, steps: [
            (.redis(.success(.claimed)), claimPostgres), (.postgres(.failure(.unreadable)), .settle(.withdraw, in: .redis)),
            (.settled(.success(.done)), problem(.longTermRecordUnreadable, .postgresError)),
        ]),
        LongTermRow(rule: "long-term settling: a claim PostgreSQL gave to a newer request: Redis gets no completion, our Redis claim is withdrawn", steps: [
            (.redis(.success(.claimed)), claimPostgres), (.postgres(.success(.claimed)), .forward(protected: true)),
            (.upstream(collected(201)), .settle(.complete(completion(.completed(stored)), ttlMs: retention), in: .postgres)),
            (.settled(.success(.takenOver)), .settle(.withdraw, in: .redis)),
            (.settled(.success(.done)), .answer(Reply(.upstreamResponse(stored), .forwarded, completionsLost: [.postgres]))),
        ]),
        LongTermRow(rule: "long-term settling: Redis held by another after PostgreSQL kept the completion is a retry's copy, nothing lost", steps: [
            (.redis(.success(.claimed)), claimPostgres), (.postgres(.success(.claimed)), .forward(protected: true)),
            (.upstream(collected(201)), .settle(.complete(completion(.completed(stored)), ttlMs: retention), in: .postgres)),
            (.settled(.success(.done)), .settle(.complete(completion(.completed(stored)), ttlMs: responseTTL), in: .redis)),
            (.settled(.success(.takenOver)), .answer(forwarded)),
        ]),
        LongTermRow(rule: "long-term settling: Redis held by another when PostgreSQL did not keep the completion is a lost completion", steps: [
            (.redis(.success(.claimed)), claimPostgres), (.postgres(.success(.claimed)), .forward(protected: true)),
            (.upstream(collected(201)), .settle(.complete(completion(.completed(stored)), ttlMs: retention), in: .postgres)),
            (.settled(.failure(.refused)), .settle(.complete(completion(.completed(stored)), ttlMs: responseTTL), in: .redis)),
            (.settled(.success(.takenOver)), .answer(Reply(.upstreamResponse(stored), .forwarded, completionsLost: [.redis]))),
        ]),

        // Each store outcome of a settlement: whether it is tried again.
        LongTermRow(rule: "store outcomes: PostgreSQL interrupted mid-settlement is tried again (another connection)", steps: [
            (.redis(.success(.claimed)), claimPostgres), (.postgres(.success(.claimed)), .forward(protected: true)),
            (.upstream(collected(503)), .settle(.release, in: .postgres)),
            (.settled(.failure(.interrupted)), .retrySettle(afterMs: 100)), (.settled(.success(.done)), .settle(.release, in: .redis)),
        ]),
        LongTermRow(rule: "store outcomes: PostgreSQL timing out a settlement is not tried again (a paused server would hold the client each time)", steps: [
            (.redis(.success(.claimed)), claimPostgres), (.postgres(.success(.claimed)), .forward(protected: true)),
            (.upstream(collected(503)), .settle(.release, in: .postgres)),
            (.settled(.failure(.timedOut)), .settle(.release, in: .redis)),
        ]),
        LongTermRow(rule: "store outcomes: an unreadable answer to a settlement is not tried again", steps: [
            (.redis(.success(.claimed)), claimPostgres), (.postgres(.success(.claimed)), .forward(protected: true)),
            (.upstream(collected(503)), .settle(.release, in: .postgres)),
            (.settled(.failure(.unreadable)), .settle(.release, in: .redis)),
        ]),
        LongTermRow(rule: "store outcomes: Redis timing out or interrupted mid-settlement is tried again", steps: [
            (.redis(.success(.claimed)), claimPostgres), (.postgres(.success(.claimed)), .forward(protected: true)),
            (.upstream(collected(503)), .settle(.release, in: .postgres)), (.settled(.success(.done)), .settle(.release, in: .redis)),
            (.settled(.failure(.timedOut)), .retrySettle(afterMs: 100)), (.settled(.failure(.interrupted)), .retrySettle(afterMs: 200)),
            (.settled(.failure(.unavailable)), .retrySettle(afterMs: 400)), (.settled(.failure(.refused)), .answer(forwarded(503))),
        ]),

        // An unreadable record in Redis: PostgreSQL, the record of truth, decides.
        LongTermRow(rule: "store outcomes: a record Redis holds and cannot be read: PostgreSQL alone claims", steps: [
            (.redis(.failure(.unreadable)), claimPostgres), (.postgres(.success(.claimed)), .forward(protected: true)),
            (.upstream(collected(201)), .settle(.complete(completion(.completed(stored)), ttlMs: retention), in: .postgres)),
        ]),
        LongTermRow(rule: "store outcomes: a record Redis cannot read, PostgreSQL down: 503, never forwarded, even with on_redis_error = open", onRedisError: .open, steps: [
            (.redis(.failure(.unreadable)), claimPostgres), (.postgres(.failure(.unavailable)), problem(.recordUnreadable, .redisError)),
        ]),
        LongTermRow(rule: "store outcomes: an interrupted Redis claim is withdrawn later, as a timed-out one", steps: [
            (.redis(.failure(.interrupted)), claimPostgres),
            (inPostgres(mine, .completed(stored)), .answer(Reply(.replay(stored), .replayed, replayedFrom: .postgres, claimsToWithdraw: [.redis]))),
        ]),
        LongTermRow(rule: "store outcomes: a Redis claim refused (run after its deadline) wrote nothing: nothing to withdraw", steps: [
            (.redis(.failure(.refused)), claimPostgres), (inPostgres(mine, .completed(stored)), replayFromPostgres(stored)),
        ]),
        LongTermRow(rule: "store outcomes: a PostgreSQL claim refused, closed: the Redis claim is released, 503", steps: [
            (.redis(.success(.claimed)), claimPostgres), (.postgres(.failure(.refused)), .settle(.release, in: .redis)),
            (.settled(.success(.done)), problem(.postgresUnavailable, .postgresError)),
        ]),
        LongTermRow(rule: "store outcomes: a PostgreSQL claim interrupted, closed: released in Redis, 503, withdrawn in PostgreSQL later", steps: [
            (.redis(.success(.claimed)), claimPostgres), (.postgres(.failure(.interrupted)), .settle(.release, in: .redis)),
            (.settled(.success(.done)), .answer(Reply(.problem(.postgresUnavailable), .postgresError, claimsToWithdraw: [.postgres]))),
        ]),

        // Both down: on_redis_error.
        LongTermRow(rule: "failure matrix both down, closed: 503", steps: [
            (.redis(.failure(.unavailable)), claimPostgres), (.postgres(.failure(.unavailable)), problem(.redisUnavailable, .redisError)),
        ]),
        LongTermRow(rule: "failure matrix both down, open: forwarded unprotected, nothing settled", onRedisError: .open, steps: [
            (.redis(.failure(.unavailable)), claimPostgres), (.postgres(.failure(.unavailable)), .forward(protected: false)),
            (.upstream(collected(201)), .answer(Reply(.upstreamResponse(stored), .redisError))),
        ]),
        LongTermRow(rule: "failure matrix both down: on_postgres_error = redis has no Redis to fall back on", onPostgresError: .redis, steps: [
            (.redis(.failure(.unavailable)), claimPostgres), (.postgres(.failure(.unavailable)), problem(.redisUnavailable, .redisError)),
        ]),
        // Claims whose answer never came: withdrawn in the background once the client has its answer.
        LongTermRow(rule: "late claims: Redis unanswered, PostgreSQL alone protects and completes, then the Redis claim is withdrawn", steps: [
            (.redis(.failure(.timedOut)), claimPostgres), (.postgres(.success(.claimed)), .forward(protected: true)),
            (.upstream(collected(201)), .settle(.complete(completion(.completed(stored)), ttlMs: retention), in: .postgres)),
            (.settled(.success(.done)), .answer(Reply(.upstreamResponse(stored), .forwarded, claimsToWithdraw: [.redis]))),
        ]),
        LongTermRow(rule: "late claims: Redis unanswered and PostgreSQL replays: the Redis claim is withdrawn", steps: [
            (.redis(.failure(.timedOut)), claimPostgres),
            (inPostgres(mine, .completed(stored)), .answer(Reply(.replay(stored), .replayed, replayedFrom: .postgres, claimsToWithdraw: [.redis]))),
        ]),
        LongTermRow(rule: "late claims: PostgreSQL unanswered, closed: Redis released, 503, the PostgreSQL claim withdrawn", steps: [
            (.redis(.success(.claimed)), claimPostgres), (.postgres(.failure(.timedOut)), .settle(.release, in: .redis)),
            (.settled(.success(.done)), .answer(Reply(.problem(.postgresUnavailable), .postgresError, claimsToWithdraw: [.postgres]))),
        ]),
        LongTermRow(rule: "late claims: PostgreSQL unanswered, on_postgres_error = redis: Redis alone, the PostgreSQL claim withdrawn", onPostgresError: .redis, steps: [
            (.redis(.success(.claimed)), claimPostgres), (.postgres(.failure(.timedOut)), .forward(protected: true)),
            (.upstream(collected(201)), .settle(.complete(completion(.completed(stored)), ttlMs: responseTTL), in: .redis)),
            (.settled(.success(.done)), .answer(Reply(.upstreamResponse(stored), .forwarded, claimsToWithdraw: [.postgres]))),
        ]),
        LongTermRow(rule: "late claims: both unanswered: 503, both withdrawn", steps: [
            (.redis(.failure(.timedOut)), claimPostgres),
            (.postgres(.failure(.timedOut)), .answer(Reply(.problem(.redisUnavailable), .redisError, claimsToWithdraw: [.redis, .postgres]))),
        ]),
        LongTermRow(rule: "late claims: a Redis claim answered after an unanswered one leaves nothing to withdraw", inflightWaitMs: 1_000, steps: [
            (.redis(.failure(.timedOut)), claimPostgres), (inPostgres(mine, .inFlight), .waitForFirst(until: 1_000 * ms)),
            (.woken, claimRedis), (.redis(.success(.claimed)), claimPostgres), (.postgres(.success(.claimed)), .forward(protected: true)),
            (.upstream(.failed(.timedOut, afterStreaming: false)), problem(.upstreamTimeout, .upstreamError)),
        ]),
    ])
    func longTerm(_ row: LongTermRow) {
        var m = Self.claiming(Self.configuration {
            $0.postgresURL = PostgresURL(address: HostPort(host: "db", port: 5432), username: "u", database: "d")
            $0.onPostgresError = row.onPostgresError
            $0.onRedisError = row.onRedisError
            $0.inflightWaitMs = row.inflightWaitMs
            $0.redisWaitReplicas = row.waitReplicas
        })
        // Time passes as the retries wait.
        var now: UInt64 = 0
        for (index, (event, expected)) in row.steps.enumerated() {
            let action: Action
            switch event {
            case .redis(let result): action = m.claimAnswered(result, in: .redis, now: 0)
            case .postgres(let result): action = m.claimAnswered(result, in: .postgres, now: 0)
            case .replicas(let count): action = m.replicasAnswered(count)
            case .upstream(let result): action = m.upstreamFinished(result, nowMs: Self.completedAt)
            case .settled(let result):
                action = m.settled(result, now: now)
                if case .retrySettle(let afterMs) = action {
                    now += UInt64(afterMs) * 1_000_000
                    // The retry is due: the step that failed, again.
                    let again = m.retryDue()
                    let failed = row.steps[..<index].last { if case .settle = $0.1 { return true } else { return false } }
                    guard let failed, again == failed.1 else {
                        Issue.record("step \(index): a due retry repeats the step that failed, got \(again)")
                        return
                    }
                }
            case .woken: action = m.woken()
            }
            #expect(action == expected, "step \(index): \(event)")
            if action != expected { return }
        }
    }

    @Test func longTerm_withoutAPostgresURLNothingTouchesPostgres() {
        var m = Self.claiming(Self.configuration())
        #expect(m.claimAnswered(.success(.claimed), in: .redis, now: 0) == .forward(protected: true))
        var down = Self.claiming(Self.configuration())
        #expect(down.claimAnswered(.failure(.unavailable), in: .redis, now: 0) == Self.problem(.redisUnavailable, .redisError))
    }
}
