/// One protected request (docs/behaviour.md §3, rules 1–11, with its long-term store) as a pure state
/// machine, in the style of AsyncHTTPClient's `HTTP1ConnectionStateMachine`: the executor
/// (`ProtectedRequest`) feeds it what happened and carries out the action it returns, nothing
/// else. Time comes in as an
/// argument (monotonic nanoseconds), never from a clock read here, so every rule is a row of a
/// table test.
///
///     headReceived ─► collectBody ─► bodyEnded ─► claim ─┬─► (claimInPostgres) ─► (waitForReplicas) ─► forward ─► settle… ─► answer
///        │ passThrough | answer 400/413                  ├─► answer replay | 409 | 422 | 502 not replayable
///                                                        ├─► waitForFirst ─► woken ─► claim …
///                                                        └─► Redis failed: claimInPostgres | answer 503 | forward unprotected
///
/// With a long-term store (docs/behaviour.md §3, long-term store) a claim Redis grants is also made in PostgreSQL, whose
/// answer decides; a settlement is carried out in PostgreSQL first, then in Redis, one store
/// at a time, each retried on its own. The machine remembers which stores hold its claim.
///
/// The metrics outcome of every answer is decided here, beside the answer.
public struct ProtectedRequestMachine: Sendable {
    /// What the client is sent, and how it is counted.
    public struct Reply: Equatable, Sendable {
        public enum Content: Equatable, Sendable {
            case problem(Problem)
            case replay(StoredResponse)
            /// The upstream's response, as the executor collected it.
            case upstreamResponse
            /// A response too large to store went on to the client as it arrived: end it.
            case endOfStreamedResponse
            /// Part of a streamed response is out and the exchange failed: cutting the
            /// connection is the only honest signal left.
            case abortStreamedResponse
        }

        public var content: Content
        public var outcome: RequestOutcome
        /// The connection closes after the answer; the rest of the request is not read.
        public var closesConnection: Bool
        /// The store whose record answered a retry (counted in `/metrics`).
        public var replayedFrom: Store?
        /// Stores where a claim of this request was sent but never answered: it may still land
        /// there, so it is withdrawn in the background once the store answers again (owner-
        /// checked, after the claim's deadline), not while the client waits.
        public var claimsToWithdraw: [Store]

        public init(
            _ content: Content, _ outcome: RequestOutcome, closesConnection: Bool = false, replayedFrom: Store? = nil,
            claimsToWithdraw: [Store] = []
        ) {
            self.content = content
            self.outcome = outcome
            self.closesConnection = closesConnection
            self.replayedFrom = replayedFrom
            self.claimsToWithdraw = claimsToWithdraw
        }

        static func problem(_ problem: Problem, _ outcome: RequestOutcome, closesConnection: Bool = false) -> Reply {
            Reply(.problem(problem), outcome, closesConnection: closesConnection)
        }
    }

    public enum Store: String, Equatable, Sendable {
        case redis
        /// The long-term store (docs/behaviour.md §3, long-term store).
        case postgres
    }

    /// What becomes of a claim in one store: once the upstream exchange is over (rules 5, 8,
    /// 9), or when PostgreSQL answered for a request that Redis had let claim (long-term claims).
    public enum Settlement: Equatable, Sendable {
        /// Owner-checked: store this completed state, kept for `ttlMs`. `completedAtMs`: when
        /// the request completed (a copied record's time; 0 when that record does not say); nil: now.
        case complete(IdempotencyRecord.State, ttlMs: Int64, completedAtMs: Int64? = nil)
        /// Owner-checked: delete the claim, so that a retry runs again (and wake the retries
        /// waiting for it).
        case release
        /// Owner-checked: delete a Redis claim that PostgreSQL overruled, waking nobody: a
        /// waiting retry would only meet PostgreSQL's answer again, and two such retries would
        /// wake each other without pause.
        case withdraw
    }

    public enum Action: Equatable, Sendable {
        /// Nothing to do until the next event.
        case nothing
        /// Rule 1: no key; forward as an unprotected request, streamed.
        case passThrough
        /// Collect the body; it must be fingerprinted before the claim. `key` nil: the key is
        /// in the body (`key_from = json:…`), read once it is complete.
        case collectBody(key: String?)
        /// Rule 4: run the claim script.
        case claim
        /// docs/behaviour.md §3, long-term store: claim in PostgreSQL too (Redis had no record, or did not answer).
        case claimInPostgres
        /// `redis_wait_replicas`: `WAIT` for that many replicas, giving up after `timeoutMs`.
        case waitForReplicas(count: Int, timeoutMs: Int64)
        /// Send the request upstream. `protected` false: `on_redis_error = open`, nothing is stored.
        case forward(protected: Bool)
        /// Rule 7 with `inflight_wait`: listen for the first request's end, and report
        /// `woken` on a message or at `until` (the poll; the executor may poll sooner).
        case waitForFirst(until: UInt64)
        case settle(Settlement, in: Store)
        /// Settling failed and may succeed on another try; report `retryDue` after this long.
        case retrySettle(afterMs: Int64)
        /// The request is finished: send this.
        case answer(Reply)
    }

    /// What the claim script answered.
    public enum ClaimResult: Equatable, Sendable {
        /// The key was free and is now ours, in flight.
        case claimed
        /// Someone claimed it before.
        case existing(IdempotencyRecord)
        /// Nothing was claimed (rule 11): Redis was not connected, answered something
        /// unusable, or ran the claim after its deadline and wrote nothing.
        case failed
        /// The claim was sent and no answer came in time (a stalled server, a lost
        /// connection): as `failed` for this request, but it may still land.
        case unanswered
    }

    /// What PostgreSQL's claim statement answered (docs/behaviour.md §3, long-term store).
    public enum LongTermClaimResult: Equatable, Sendable {
        /// Nothing there, or a claim or record that had expired: ours now, in flight.
        case claimed
        /// A live record: `expiresInMs` is what is left of its `lock_ttl` or `retention`.
        case existing(IdempotencyRecord, expiresInMs: Int64)
        /// PostgreSQL could not be asked, refused, or ran the claim after its deadline (which then
        /// holds nothing).
        case failed
        /// The statement was sent and no answer came in time: as `failed` for this request,
        /// but it may have committed. It is withdrawn in the background (`claimsToWithdraw`),
        /// not while the client waits another postgres_timeout.
        case unanswered
        /// A record is there that this proxy cannot read: the request may have run, so it is
        /// never forwarded, whatever `on_postgres_error` says.
        case unreadable
    }

    /// How carrying out a settlement went.
    public enum SettleResult: Equatable, Sendable {
        /// Done, or done by someone else (a completion that found the key owned by a newer
        /// request: nothing more can be done).
        case done
        /// The store did not answer: another try may succeed.
        case unavailable
        /// The store answered with something no retry changes (or PostgreSQL timed out, which
        /// another try would most likely repeat while the client waits).
        case refused
        /// PostgreSQL found the claim taken over by a newer request: that request's record is
        /// the truth, so Redis gets no completion from this one (its own Redis claim is
        /// withdrawn instead).
        case lost
    }

    /// How the upstream exchange ended.
    public enum UpstreamResult: Equatable, Sendable {
        /// A complete response, collected; its stored form.
        case response(StoredResponse)
        /// A response too large to store, streamed on to the client as it came.
        case streamed(status: Int, bodyBytes: Int)
        /// No connection: the request was never sent (rule 8).
        case notConnected
        /// Sent, then no valid, complete answer. `afterStreaming`: part of a streamed
        /// response had already gone out.
        case failed(UpstreamFailure, afterStreaming: Bool)
    }

    /// One settlement in one store.
    struct Step: Equatable, Sendable {
        var settlement: Settlement
        var store: Store
    }

    /// What follows the settling steps.
    enum Next: Equatable, Sendable {
        case answer(Reply)
        /// docs/behaviour.md §3, long-term store: PostgreSQL holds a live claim and the retry may wait for it.
        case waitForFirst(until: UInt64)
    }

    private enum State: Sendable {
        case admitting
        case collectingBody
        case claiming
        case claimingInPostgres
        case waitingForReplicas
        case forwarding(protected: Bool)
        case waitingForFirst
        /// The first of `steps` is being carried out (try `attempt`); its store has not answered
        /// since `failingSince`, if it failed before.
        case settling(steps: [Step], attempt: Int, failingSince: UInt64?, then: Next)
        case finished
    }

    /// A settlement whose stores do not answer is tried again for this long from its first
    /// failure in any of them (no try starts later), which covers an outage of a few seconds
    /// (a restart, a failover) and the reconnect. A completion given up on leaves retries at 409
    /// until `lock_ttl` ends, and then free to run the request again. One window for all the
    /// stores keeps the client's wait at about 5 s plus the stores' timeouts, inside the
    /// default `shutdown_grace`. A repeat is harmless: settling is owner-checked.
    public static let settleWindowNs: UInt64 = 5_000_000_000

    /// 100, 200, 400, 800 ms, then 1 s.
    static func settleBackoffMs(afterAttempt attempt: Int) -> Int64 { attempt >= 5 ? 1_000 : 100 << Int64(attempt - 1) }

    /// The request's policy (its route's, or the top level's).
    private let settings: Policy
    private var state = State.admitting
    /// The request's fingerprint, bound to its record (zeros with `fingerprint = false`).
    public private(set) var fingerprint: [UInt8] = []
    /// Until when a retry that finds the request in flight keeps waiting (`inflight_wait`).
    private var waitDeadline: UInt64?
    /// The stores that hold this request's claim, and so must settle it.
    private var holdsRedisClaim = false
    private var holdsPostgresClaim = false
    /// The stores where a claim was sent and never answered (`Reply.claimsToWithdraw`).
    private var unansweredClaims: [Store] = []
    /// How a request forwarded unprotected is counted: no store answered (`on_redis_error =
    /// open`), or it had no key in its body.
    private var unprotectedOutcome = RequestOutcome.redisError

    public init(policy: Policy) {
        settings = policy
    }

    public init(configuration: ProxyConfiguration) {
        self.init(policy: Policy(configuration))
    }

    // MARK: - events

    /// Rules 1–3, before any body is read.
    public mutating func headReceived(keyHeaderValues: [String], declaredBodyLength: Int?) -> Action {
        guard case .admitting = state else { return .nothing }
        let c = settings
        if c.keyFromJSON != nil {
            // The key header is not read on such a route; the body's size is checked first.
            if let declaredBodyLength, declaredBodyLength > c.maxRequestBody {
                return finish(.problem(.bodyTooLarge(limit: c.maxRequestBody), .tooLarge, closesConnection: true))
            }
            state = .collectingBody
            return .collectBody(key: nil)
        }
        let key: String?
        do {
            key = try IdempotencyKey.parse(headerValues: keyHeaderValues, headerName: c.keyHeader, maxLength: c.maxKeyLength)
        } catch {
            return finish(.problem(.invalidKey(error.detail), .badRequest))
        }
        guard let key else {
            if c.requireKey { return finish(.problem(.missingKey(header: c.keyHeader), .badRequest)) }
            state = .finished
            return .passThrough
        }
        if let declaredBodyLength, declaredBodyLength > c.maxRequestBody {
            // Closing spares reading a body that will not be used.
            return finish(.problem(.bodyTooLarge(limit: c.maxRequestBody), .tooLarge, closesConnection: true))
        }
        state = .collectingBody
        return .collectBody(key: key)
    }

    /// Rule 3 for a body whose length is learnt while reading (chunked).
    public mutating func bodyReceived(totalLength: Int) -> Action {
        guard case .collectingBody = state else { return .nothing }
        guard totalLength <= settings.maxRequestBody else {
            return finish(.problem(.bodyTooLarge(limit: settings.maxRequestBody), .tooLarge, closesConnection: true))
        }
        return .nothing
    }

    /// `fingerprint` hashes the request (SHA-256 of method, target and body); it is not called
    /// with `fingerprint = false`, where every request with the key is the same request.
    /// `bodyKey`: with `key_from = json:…`, the string or integer at the pointer, nil when the
    /// body has none (rule 1 then applies as to a missing header).
    public mutating func bodyEnded(now: UInt64, bodyKey: String? = nil, fingerprint: () -> [UInt8]) -> Action {
        guard case .collectingBody = state else { return .nothing }
        if let pointer = settings.keyFromJSON {
            guard let bodyKey else {
                if settings.requireKey { return finish(.problem(.missingBodyKey(pointer: pointer.description), .badRequest)) }
                state = .forwarding(protected: false)
                unprotectedOutcome = .passthrough
                return .forward(protected: false)
            }
            do {
                try IdempotencyKey.validate(bodyKey, from: "The key at json:\(pointer)", maxLength: settings.maxKeyLength)
            } catch {
                return finish(.problem(.invalidKey(error.detail), .badRequest))
            }
        }
        self.fingerprint =
            settings.fingerprint ? fingerprint() : [UInt8](repeating: 0, count: IdempotencyRecord.fingerprintLength)
        if settings.inflightWaitMs > 0 { waitDeadline = now + UInt64(settings.inflightWaitMs) * 1_000_000 }
        state = .claiming
        return .claim
    }

    /// Rules 4, 6, 7, 9 and 11; with a long-term store, long-term claims and the failure matrix's rows where Redis fails.
    public mutating func claimAnswered(_ result: ClaimResult, now: UInt64) -> Action {
        guard case .claiming = state else { return .nothing }
        // An answered claim (a retry of the claim after a wait) comes after any earlier one of
        // this request that went unanswered, which has landed (this one saw it as ours) or never
        // will: nothing is left to withdraw, and withdrawing could remove the claim now held.
        if result != .failed && result != .unanswered { unansweredClaims.removeAll { $0 == .redis } }
        switch result {
        case .claimed:
            holdsRedisClaim = true
            if settings.longTerm {
                state = .claimingInPostgres
                return .claimInPostgres
            }
            return claimedEverywhere()
        case .failed, .unanswered:
            if result == .unanswered { noteUnanswered(.redis) }
            // Redis down, PostgreSQL asked alone: protected, slower, never a 503 for Redis.
            if settings.longTerm {
                state = .claimingInPostgres
                return .claimInPostgres
            }
            return unprotectable()
        case .existing(let record):
            return answer(for: record, from: .redis, now: now)
        }
    }

    /// docs/behaviour.md §3, long-term store, and the rows of its failure matrix where PostgreSQL fails.
    public mutating func postgresClaimAnswered(_ result: LongTermClaimResult, now: UInt64) -> Action {
        guard case .claimingInPostgres = state else { return .nothing }
        if result != .failed && result != .unanswered { unansweredClaims.removeAll { $0 == .postgres } }
        switch result {
        case .claimed:
            holdsPostgresClaim = true
            return claimedEverywhere()
        case .failed, .unanswered:
            if result == .unanswered { noteUnanswered(.postgres) }
            guard holdsRedisClaim else { return unprotectable() }
            switch settings.onPostgresError {
            case .redis:
                return claimedEverywhere()
            case .closed:
                return settle(everyStore { _ in .release }, then: .answer(.problem(.postgresUnavailable, .postgresError)))
            }
        case .unreadable:
            let withdraw = holdsRedisClaim ? [Step(settlement: .withdraw, store: .redis)] : []
            holdsRedisClaim = false
            return settle(withdraw, then: .answer(.problem(.longTermRecordUnreadable, .postgresError)))
        case .existing(let record, let expiresInMs):
            // The request does not leave its own Redis claim behind: a completed record
            // replaces it (for what is left of the record's retention, at most response_ttl),
            // anything else withdraws it, so the first request's settling lands in Redis.
            let action = answer(for: record, from: .postgres, now: now)
            guard holdsRedisClaim else { return action }
            holdsRedisClaim = false
            let next: Next
            switch action {
            case .answer(let reply): next = .answer(reply)
            case .waitForFirst(let until): next = .waitForFirst(until: until)
            default: preconditionFailure("a record is answered or waited for, got \(action)")
            }
            let copy: Settlement =
                record.fingerprint == fingerprint && record.state != .inFlight
                ? .complete(record.state, ttlMs: min(settings.responseTTLMs, max(1, expiresInMs)), completedAtMs: record.completedAtMs ?? 0)
                : .withdraw
            return settle([Step(settlement: copy, store: .redis)], then: next)
        }
    }

    /// `redis_wait_replicas`: how many replicas acknowledged the claim; nil when `WAIT` failed.
    public mutating func replicasAnswered(_ count: Int?) -> Action {
        guard case .waitingForReplicas = state else { return .nothing }
        let wanted = settings.redisWaitReplicas
        if let count, count >= wanted {
            state = .forwarding(protected: true)
            return .forward(protected: true)
        }
        let problem = Problem.replicasMissing(wanted: wanted, got: count ?? 0)
        return settle(everyStore { _ in .release }, then: .answer(.problem(problem, .redisError)))
    }

    /// The first request ended (a Pub/Sub message), or the poll came due: look again.
    public mutating func woken() -> Action {
        guard case .waitingForFirst = state else { return .nothing }
        state = .claiming
        return .claim
    }

    /// Rules 5, 8 and 9.
    public mutating func upstreamFinished(_ result: UpstreamResult) -> Action {
        guard case .forwarding(let protected) = state else { return .nothing }
        guard protected else { return finish(Self.unprotectedReply(result, outcome: unprotectedOutcome)) }
        switch result {
        case .notConnected:
            return settle(everyStore { _ in .release }, then: .answer(.problem(.upstreamUnreachable, .upstreamError)))
        case .failed(let failure, let afterStreaming):
            // The upstream may have acted: the claim stays until lock_ttl (rule 8).
            return finish(afterStreaming ? Reply(.abortStreamedResponse, .upstreamError) : .problem(failure.problem, .upstreamError))
        case .response(let response):
            let replayable = response.body.count <= settings.maxStoredResponse
            return settle(
                status: response.status,
                keeping: replayable ? .completed(response) : .completedWithoutBody(status: response.status, bodyBytes: response.body.count),
                then: Reply(.upstreamResponse, .forwarded))
        case .streamed(let status, let bodyBytes):
            return settle(status: status, keeping: .completedWithoutBody(status: status, bodyBytes: bodyBytes), then: Reply(.endOfStreamedResponse, .forwarded))
        }
    }

    /// An upstream answer: one in `release_statuses` releases the claim (rule 8: the request
    /// was not processed); any other is kept, without its body when it is too large to replay
    /// (rule 9: a retry gets 502, the request never runs twice).
    private mutating func settle(status: Int, keeping state: IdempotencyRecord.State, then reply: Reply) -> Action {
        if settings.releaseStatuses.releases(status) { return settle(everyStore { _ in .release }, then: .answer(reply)) }
        return settle(everyStore { .complete(state, ttlMs: $0) }, then: .answer(reply))
    }

    /// The step in hand is done, refused, or failed; a failure that may pass is tried again
    /// within `settleWindowNs`.
    public mutating func settled(_ result: SettleResult, now: UInt64) -> Action {
        guard case .settling(let steps, let attempt, var failingSince, let next) = state else { return .nothing }
        if result == .unavailable {
            let since = failingSince ?? now
            failingSince = since
            let backoffMs = Self.settleBackoffMs(afterAttempt: attempt)
            if now + UInt64(backoffMs) * 1_000_000 < since + Self.settleWindowNs {
                state = .settling(steps: steps, attempt: attempt + 1, failingSince: since, then: next)
                return .retrySettle(afterMs: backoffMs)
            }
        }
        // Given up on this store: the next one still settles and the client still gets its
        // answer; retries that this store answers get 409 until lock_ttl ends.
        var rest = Array(steps.dropFirst())
        if result == .lost {
            rest = rest.map { step in
                guard case .complete = step.settlement else { return step }
                return Step(settlement: .withdraw, store: step.store)
            }
        }
        return settle(rest, then: next, failingSince: failingSince)
    }

    public mutating func retryDue() -> Action {
        guard case .settling(let steps, _, _, _) = state, let step = steps.first else { return .nothing }
        return .settle(step.settlement, in: step.store)
    }

    // MARK: - helpers

    /// Unprotected, nothing is stored; a large response is passed on as it comes.
    private static func unprotectedReply(_ result: UpstreamResult, outcome: RequestOutcome) -> Reply {
        switch result {
        case .response: return Reply(.upstreamResponse, outcome)
        case .notConnected: return .problem(.upstreamUnreachable, .upstreamError)
        case .failed(let failure, _): return .problem(failure.problem, .upstreamError)
        case .streamed: return Reply(.endOfStreamedResponse, outcome)
        }
    }

    /// A settlement in every store that holds the claim, PostgreSQL first (docs/behaviour.md §3, long-term store); a
    /// completion is kept for `retention` there and `response_ttl` in Redis.
    /// `settlement` is given the store's TTL.
    private func everyStore(_ settlement: (_ ttlMs: Int64) -> Settlement) -> [Step] {
        var steps: [Step] = []
        if holdsPostgresClaim { steps.append(Step(settlement: settlement(settings.retentionMs), store: .postgres)) }
        if holdsRedisClaim { steps.append(Step(settlement: settlement(settings.responseTTLMs), store: .redis)) }
        return steps
    }

    /// `failingSince`: when an earlier store of the same settlement first failed.
    private mutating func settle(_ steps: [Step], then next: Next, failingSince: UInt64? = nil) -> Action {
        if let step = steps.first {
            state = .settling(steps: steps, attempt: 1, failingSince: failingSince, then: next)
            return .settle(step.settlement, in: step.store)
        }
        switch next {
        case .answer(let reply): return finish(reply)
        case .waitForFirst(let until):
            state = .waitingForFirst
            return .waitForFirst(until: until)
        }
    }

    /// The claim is held by every store there is to hold it: forward (after `WAIT`, when
    /// Redis holds it and replicas are asked for).
    private mutating func claimedEverywhere() -> Action {
        if holdsRedisClaim && settings.redisWaitReplicas > 0 {
            state = .waitingForReplicas
            // WAIT must give up before our own command timeout does, or its answer would
            // be lost with the connection.
            return .waitForReplicas(count: settings.redisWaitReplicas, timeoutMs: max(1, settings.redisTimeoutMs * 3 / 4))
        }
        state = .forwarding(protected: true)
        return .forward(protected: true)
    }

    /// No store answered: rule 11.
    private mutating func unprotectable() -> Action {
        switch settings.onRedisError {
        case .closed: return finish(.problem(.redisUnavailable, .redisError))
        case .open:
            state = .forwarding(protected: false)
            return .forward(protected: false)
        }
    }

    /// Rules 6, 7 and 9 for a record a store holds.
    private mutating func answer(for record: IdempotencyRecord, from store: Store, now: UInt64) -> Action {
        guard record.fingerprint == fingerprint else { return finish(.problem(.mismatch, .mismatch)) }
        switch record.state {
        case .completed(let response): return finish(Reply(.replay(response), .replayed, replayedFrom: store))
        case .completedWithoutBody:
            return finish(Reply(.problem(.responseNotReplayable), .replayed, replayedFrom: store))
        case .inFlight:
            if let waitDeadline, now < waitDeadline {
                state = .waitingForFirst
                return .waitForFirst(until: waitDeadline)
            }
            return finish(.problem(.inFlight, .conflict))
        }
    }

    private mutating func finish(_ reply: Reply) -> Action {
        state = .finished
        var reply = reply
        reply.claimsToWithdraw = unansweredClaims
        return .answer(reply)
    }

    private mutating func noteUnanswered(_ store: Store) {
        if !unansweredClaims.contains(store) { unansweredClaims.append(store) }
    }
}
