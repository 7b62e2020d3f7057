/// One protected request (docs/behaviour.md §3, rules 1–11, with its long-term store) as a pure state
/// machine, in the style of AsyncHTTPClient's `HTTP1ConnectionStateMachine`: the executor
/// (`ProtectedRequest`) feeds it what happened and carries out the action it returns, nothing
/// else. Time comes in as an argument (monotonic nanoseconds), never from a clock read here, and
/// every store's answer comes in as a `StoreOutcome`, so every rule, and every store outcome in
/// every state, is a row of a table test.
///
///     headReceived ─► collectBody ─► bodyEnded ─► claim(redis) ─┬─► (claim(postgres)) ─► (waitForReplicas) ─► forward ─► settle… ─► answer
///        │ passThrough | refuse 400/413                         ├─► answer replay | 409 | 422 | 502 not replayable
///                                                               ├─► waitForFirst ─► woken ─► claim …
///                                                               └─► Redis failed: claim(postgres) | answer 503 | forward unprotected
///
/// With a long-term store (docs/behaviour.md, "With a long-term store") a claim Redis grants is
/// also made in PostgreSQL, whose answer decides; a settlement is carried out in PostgreSQL
/// first, then in Redis, one store at a time, each retried on its own. The machine remembers
/// which stores hold its claim.
///
/// The metrics outcome of every answer is decided here, beside the answer.
public struct ProtectedRequestMachine: Sendable {
    /// What the client is sent, and how it is counted.
    public struct Reply: Equatable, Sendable {
        public enum Content: Equatable, Sendable {
            case problem(Problem)
            case replay(StoredResponse)
            /// The upstream's response, collected whole.
            case upstreamResponse(StoredResponse)
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
        /// Stores where this request's claim was taken over or removed before its completion
        /// was stored (counted and logged).
        public var completionsLost: [Store]

        public init(
            _ content: Content, _ outcome: RequestOutcome, closesConnection: Bool = false, replayedFrom: Store? = nil,
            claimsToWithdraw: [Store] = [], completionsLost: [Store] = []
        ) {
            self.content = content
            self.outcome = outcome
            self.closesConnection = closesConnection
            self.replayedFrom = replayedFrom
            self.claimsToWithdraw = claimsToWithdraw
            self.completionsLost = completionsLost
        }

        static func problem(_ problem: Problem, _ outcome: RequestOutcome, closesConnection: Bool = false) -> Reply {
            Reply(.problem(problem), outcome, closesConnection: closesConnection)
        }
    }

    public enum Store: String, Equatable, Sendable {
        case redis
        /// The long-term store (docs/behaviour.md, "With a long-term store").
        case postgres
    }

    /// Why a store gave no answer to one command. The executor turns each store's errors into
    /// these, and the machine decides what each means in each state.
    public enum StoreFailure: Error, Equatable, Sendable {
        /// Not connected, reconnecting, or restarting (PostgreSQL's 57P, 53300; any Redis error
        /// reply, such as `READONLY` during a failover): nothing was written, and another try
        /// soon may succeed.
        case unavailable
        /// Sent, and the connection broke before the answer: it may have run.
        case interrupted
        /// Sent, and no answer came within the store's timeout: it may still run.
        case timedOut
        /// Refused for good (a claim run after its deadline, a statement the server rejects):
        /// nothing was written, and another try would be refused too.
        case refused
        /// The store holds a record under the key that this proxy cannot read.
        case unreadable

        /// The command may have run without its answer reaching us.
        public var mayHaveLanded: Bool { self == .interrupted || self == .timedOut }
    }

    /// How a store answered one command.
    public typealias StoreOutcome<Answer> = Result<Answer, StoreFailure>

    /// What a store's claim answered.
    public enum ClaimAnswer: Equatable, Sendable {
        /// Nothing there (or, in PostgreSQL, a claim or record that had expired): ours now, in flight.
        case claimed
        /// Someone claimed it before. `expiresInMs`: what is left of the record's `lock_ttl` or
        /// `retention`, which PostgreSQL tells and Redis does not.
        case existing(IdempotencyRecord, expiresInMs: Int64? = nil)
    }

    /// What a settling command answered.
    public enum SettleAnswer: Equatable, Sendable {
        /// Done, or nothing left to do (a release of a claim that was gone).
        case done
        /// A completion found the claim taken over by a newer request, or removed: that
        /// request's record is the truth.
        case takenOver
    }

    /// How a protected request's head is taken.
    public enum HeadDecision: Equatable, Sendable {
        /// Rule 1: no key; forward as an unprotected request, streamed.
        case passThrough
        /// Collect the body; it must be fingerprinted before the claim. `key` nil: the key is
        /// in the body (`key_from = json:…`), read once it is complete.
        case collectBody(key: String?)
        /// Rules 1–3: answered at once with this problem; nothing is claimed.
        case refuse(Reply)
    }

    /// What becomes of a claim in one store: once the upstream exchange is over (rules 5, 8,
    /// 9), or when PostgreSQL answered for a request that Redis had let claim.
    public enum Settlement: Equatable, Sendable {
        /// Owner-checked: store this completed record, kept for `ttlMs`.
        case complete(IdempotencyRecord, ttlMs: Int64)
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
        /// Rule 4 (and, in PostgreSQL, the long-term claim): claim the key with this in-flight record.
        case claim(IdempotencyRecord, in: Store)
        /// `redis_wait_replicas`: `WAIT` for that many replicas, giving up after `timeoutMs`.
        case waitForReplicas(count: Int, timeoutMs: Int64)
        /// Send the request upstream. `protected` false: nothing is stored (`on_redis_error =
        /// open`, or no key in the body).
        case forward(protected: Bool)
        /// Rule 7 with `inflight_wait`: listen for the first request's end, and report
        /// `woken` on a message or at `until` (the poll; the executor may poll sooner).
        case waitForFirst(until: UInt64)
        case settle(Settlement, in: Store)
        /// Settling failed and may succeed on another try; report `retryDue` after this long.
        case retrySettle(afterMs: Int64)
        /// The request is finished: send this.
        case answer(Reply)
        /// An event this state cannot have: a bug. The executor logs it and cuts the client's
        /// connection; nothing more is stored, and the claim ends with its `lock_ttl`.
        case preconditionFailed(String)
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
        /// PostgreSQL holds a live claim and the retry may wait for it.
        case waitForFirst(until: UInt64)
    }

    private enum State: Sendable {
        case admitting
        case collectingBody
        case claiming(Store)
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

    /// Whether a settling command that failed this way is tried again. A PostgreSQL statement
    /// that timed out is not: a paused server would hold the client for every try.
    static func retries(_ outcome: StoreOutcome<SettleAnswer>, in store: Store) -> Bool {
        switch outcome {
        case .failure(.unavailable), .failure(.interrupted): return true
        case .failure(.timedOut): return store == .redis
        case .success, .failure(.refused), .failure(.unreadable): return false
        }
    }

    /// The request's policy (its route's, or the top level's).
    private let settings: Policy
    /// This request's owner token: its claims and completions carry it.
    private let owner: [UInt8]
    private var state = State.admitting
    /// The request's fingerprint, bound to its record (zeros with `fingerprint = false`).
    private var fingerprint: [UInt8] = []
    /// Until when a retry that finds the request in flight keeps waiting (`inflight_wait`).
    private var waitDeadline: UInt64?
    /// The stores that hold this request's claim, and so must settle it.
    private var holdsRedisClaim = false
    private var holdsPostgresClaim = false
    /// PostgreSQL stored this request's completion: it is the record of truth, and a Redis
    /// claim found taken over then only means a retry copied that record back.
    private var keptInPostgres = false
    /// The stores where a claim was sent and never answered (`Reply.claimsToWithdraw`).
    private var unansweredClaims: [Store] = []
    private var completionsLost: [Store] = []
    /// Redis holds a record under the key that this proxy cannot read.
    private var redisRecordUnreadable = false
    /// How a request forwarded unprotected is counted: no store answered (`on_redis_error =
    /// open`), or it had no key in its body.
    private var unprotectedOutcome = RequestOutcome.redisError

    public init(policy: Policy, owner: [UInt8]) {
        settings = policy
        self.owner = owner
    }

    // MARK: - events

    /// Rules 1–3, before any body is read. Called once, by construction: the executor makes
    /// the machine for the head.
    public mutating func headReceived(keyHeaderValues: [String], declaredBodyLength: Int?) -> HeadDecision {
        guard case .admitting = state else { preconditionFailure("headReceived twice") }
        let c = settings
        let tooLarge = declaredBodyLength.map { $0 > c.maxRequestBody } ?? false
        if c.keyFromJSON != nil {
            // The key header is not read on such a route; the body's size is checked first.
            if tooLarge { return refuse(.problem(.bodyTooLarge(limit: c.maxRequestBody), .tooLarge, closesConnection: true)) }
            state = .collectingBody
            return .collectBody(key: nil)
        }
        let key: String?
        do {
            key = try IdempotencyKey.parse(headerValues: keyHeaderValues, headerName: c.keyHeader, maxLength: c.maxKeyLength)
        } catch {
            return refuse(.problem(.invalidKey(error.detail), .badRequest))
        }
        guard let key else {
            if c.requireKey { return refuse(.problem(.missingKey(header: c.keyHeader), .badRequest)) }
            state = .finished
            return .passThrough
        }
        // Closing spares reading a body that will not be used.
        if tooLarge { return refuse(.problem(.bodyTooLarge(limit: c.maxRequestBody), .tooLarge, closesConnection: true)) }
        state = .collectingBody
        return .collectBody(key: key)
    }

    private mutating func refuse(_ reply: Reply) -> HeadDecision {
        state = .finished
        return .refuse(reply)
    }

    /// Rule 3 for a body whose length is learnt while reading (chunked).
    public mutating func bodyReceived(totalLength: Int) -> Action {
        guard case .collectingBody = state else { return bug("body received while \(state)") }
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
        guard case .collectingBody = state else { return bug("body ended while \(state)") }
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
        if settings.inflightWait > .zero { waitDeadline = now + settings.inflightWait.nanoseconds }
        return claim(in: .redis)
    }

    /// A store answered the claim: rules 4, 6, 7, 9 and 11 for Redis; for PostgreSQL, the
    /// long-term claim and the rows of the failure matrix where one store fails.
    public mutating func claimAnswered(_ outcome: StoreOutcome<ClaimAnswer>, in store: Store, now: UInt64) -> Action {
        guard case .claiming(let claiming) = state, claiming == store else {
            return bug("a \(store) claim answered while \(state)")
        }
        // An answered claim (a retry of the claim after a wait) comes after any earlier one of
        // this request that went unanswered, which has landed (this one saw it as ours) or never
        // will: nothing is left to withdraw, and withdrawing could remove the claim now held.
        switch outcome {
        case .success: unansweredClaims.removeAll { $0 == store }
        case .failure(let failure):
            if failure.mayHaveLanded, !unansweredClaims.contains(store) { unansweredClaims.append(store) }
        }
        switch (store, outcome) {
        case (.redis, .success(.claimed)):
            holdsRedisClaim = true
            return settings.longTerm ? claim(in: .postgres) : claimedEverywhere()
        case (.redis, .success(.existing(let record, _))):
            return answer(for: record, from: .redis, now: now)
        case (.redis, .failure(.unreadable)):
            // A record is there that may say the request ran: it is never forwarded
            // unprotected. PostgreSQL, the record of truth, may still answer for it.
            redisRecordUnreadable = true
            return settings.longTerm ? claim(in: .postgres) : unprotectable()
        case (.redis, .failure):
            // Redis down, PostgreSQL asked alone: protected, slower, never a 503 for Redis.
            return settings.longTerm ? claim(in: .postgres) : unprotectable()

        case (.postgres, .success(.claimed)):
            holdsPostgresClaim = true
            return claimedEverywhere()
        case (.postgres, .success(.existing(let record, let expiresInMs))):
            return postgresHolds(record, expiresInMs: expiresInMs ?? settings.responseTTL.milliseconds, now: now)
        case (.postgres, .failure(.unreadable)):
            // The request may have run: never forwarded, whatever on_postgres_error says.
            let withdraw = holdsRedisClaim ? [Step(settlement: .withdraw, store: .redis)] : []
            holdsRedisClaim = false
            return settle(withdraw, then: .answer(.problem(.longTermRecordUnreadable, .postgresError)))
        case (.postgres, .failure):
            guard holdsRedisClaim else { return unprotectable() }
            switch settings.onPostgresError {
            case .redis:
                return claimedEverywhere()
            case .closed:
                return settle(everyStore { _ in .release }, then: .answer(.problem(.postgresUnavailable, .postgresError)))
            }
        }
    }

    /// PostgreSQL holds a live record for a request Redis may have let claim. The request does
    /// not leave its own Redis claim behind: a completed record replaces it (for what is left
    /// of the record's retention, at most response_ttl), anything else withdraws it, so the
    /// first request's settling lands in Redis.
    private mutating func postgresHolds(_ record: IdempotencyRecord, expiresInMs: Int64, now: UInt64) -> Action {
        let action = answer(for: record, from: .postgres, now: now)
        guard holdsRedisClaim else { return action }
        holdsRedisClaim = false
        let next: Next
        switch action {
        case .answer(let reply): next = .answer(reply)
        case .waitForFirst(let until): next = .waitForFirst(until: until)
        default: return bug("a record is answered or waited for, got \(action)")
        }
        let copy: Settlement =
            record.fingerprint == fingerprint && record.state != .inFlight
            ? .complete(
                IdempotencyRecord(owner: owner, fingerprint: fingerprint, state: record.state, completedAtMs: record.completedAtMs ?? 0),
                ttlMs: min(settings.responseTTL.milliseconds, max(1, expiresInMs)))
            : .withdraw
        return settle([Step(settlement: copy, store: .redis)], then: next)
    }

    /// `redis_wait_replicas`: how many replicas acknowledged the claim; nil when `WAIT` failed.
    public mutating func replicasAnswered(_ count: Int?) -> Action {
        guard case .waitingForReplicas = state else { return bug("replicas answered while \(state)") }
        let wanted = settings.redisWaitReplicas
        if let count, count >= wanted {
            state = .forwarding(protected: true)
            return .forward(protected: true)
        }
        let problem = Problem.replicasMissing(wanted: wanted, got: count ?? 0)
        return settle(everyStore { _ in .release }, then: .answer(.problem(problem, .redisError)))
    }

    /// The first request ended (a Pub/Sub message), or the poll came due: look again. A
    /// message may come late, while the claim is being made again: it is nothing then.
    public mutating func woken() -> Action {
        guard case .waitingForFirst = state else { return .nothing }
        return claim(in: .redis)
    }

    /// Rules 5, 8 and 9. `nowMs`: the wall clock, the completion's time in both stores.
    public mutating func upstreamFinished(_ result: UpstreamResult, nowMs: Int64) -> Action {
        guard case .forwarding(let protected) = state else { return bug("the upstream answered while \(state)") }
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
                completedAtMs: nowMs, then: Reply(.upstreamResponse(response), .forwarded))
        case .streamed(let status, let bodyBytes):
            return settle(
                status: status, keeping: .completedWithoutBody(status: status, bodyBytes: bodyBytes), completedAtMs: nowMs,
                then: Reply(.endOfStreamedResponse, .forwarded))
        }
    }

    /// An upstream answer: one in `release_statuses` releases the claim (rule 8: the request
    /// was not processed); any other is kept, without its body when it is too large to replay
    /// (rule 9: a retry gets 502, the request never runs twice). `completedAtMs`: when the
    /// answer came, the time both stores keep.
    private mutating func settle(status: Int, keeping state: IdempotencyRecord.State, completedAtMs: Int64, then reply: Reply) -> Action {
        if settings.releaseStatuses.releases(status) { return settle(everyStore { _ in .release }, then: .answer(reply)) }
        let record = IdempotencyRecord(owner: owner, fingerprint: fingerprint, state: state, completedAtMs: completedAtMs)
        return settle(everyStore { .complete(record, ttlMs: $0) }, then: .answer(reply))
    }

    /// The step in hand answered, or failed; a failure that may pass is tried again within
    /// `settleWindowNs`.
    public mutating func settled(_ outcome: StoreOutcome<SettleAnswer>, now: UInt64) -> Action {
        guard case .settling(let steps, let attempt, var failingSince, let next) = state, let step = steps.first else {
            return bug("a settlement answered while \(state)")
        }
        if Self.retries(outcome, in: step.store) {
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
        if case .complete = step.settlement {
            switch outcome {
            case .success(.done):
                if step.store == .postgres { keptInPostgres = true }
            case .success(.takenOver):
                // Behind PostgreSQL, another owner in Redis is a retry's copy of the record
                // PostgreSQL just took: nothing was lost. Nor is anything by a copy back (the
                // request's own Redis claim was already given up): it stores a record that
                // PostgreSQL keeps.
                let copyBack = step.store == .redis && !holdsRedisClaim
                if step.store == .postgres || !(keptInPostgres || copyBack) { completionsLost.append(step.store) }
                // The newer request's record is the truth: Redis gets no completion from this
                // one (its own Redis claim is withdrawn instead).
                rest = rest.map { next in
                    guard case .complete = next.settlement else { return next }
                    return Step(settlement: .withdraw, store: next.store)
                }
            case .failure:
                break
            }
        }
        return settle(rest, then: next, failingSince: failingSince)
    }

    public mutating func retryDue() -> Action {
        guard case .settling(let steps, _, _, _) = state, let step = steps.first else { return bug("a retry came due while \(state)") }
        return .settle(step.settlement, in: step.store)
    }

    // MARK: - helpers

    /// Unprotected, nothing is stored; a large response is passed on as it comes.
    private static func unprotectedReply(_ result: UpstreamResult, outcome: RequestOutcome) -> Reply {
        switch result {
        case .response(let response): return Reply(.upstreamResponse(response), outcome)
        case .notConnected: return .problem(.upstreamUnreachable, .upstreamError)
        case .failed(let failure, _): return .problem(failure.problem, .upstreamError)
        case .streamed: return Reply(.endOfStreamedResponse, outcome)
        }
    }

    private mutating func claim(in store: Store) -> Action {
        state = .claiming(store)
        return .claim(IdempotencyRecord(owner: owner, fingerprint: fingerprint, state: .inFlight), in: store)
    }

    /// A settlement in every store that holds the claim, PostgreSQL first; a completion is kept
    /// for `retention` there and `response_ttl` in Redis. `settlement` is given the store's TTL.
    private func everyStore(_ settlement: (_ ttlMs: Int64) -> Settlement) -> [Step] {
        var steps: [Step] = []
        if holdsPostgresClaim { steps.append(Step(settlement: settlement(settings.retention.milliseconds), store: .postgres)) }
        if holdsRedisClaim { steps.append(Step(settlement: settlement(settings.responseTTL.milliseconds), store: .redis)) }
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
            return .waitForReplicas(count: settings.redisWaitReplicas, timeoutMs: max(1, settings.redisTimeout.milliseconds * 3 / 4))
        }
        state = .forwarding(protected: true)
        return .forward(protected: true)
    }

    /// No store answered: rule 11; but a record Redis holds and cannot read may say the
    /// request ran, so it is never forwarded unprotected.
    private mutating func unprotectable() -> Action {
        if redisRecordUnreadable { return finish(.problem(.recordUnreadable, .redisError)) }
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
        reply.completionsLost = completionsLost
        return .answer(reply)
    }

    private mutating func bug(_ why: String) -> Action {
        state = .finished
        return .preconditionFailed(why)
    }
}
