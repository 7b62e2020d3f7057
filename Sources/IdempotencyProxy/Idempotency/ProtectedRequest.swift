import HTTPWire
import IdempotencyCore
import Logging
import NIOCore

/// Carries out the actions of one protected request's `ProtectedRequestMachine` (docs/behaviour.md §3):
/// runs the store's scripts, the upstream exchange, the waits and the timers, and reports each
/// result back to the machine. It decides nothing itself.
///
/// It is not tied to the client's connection: a client that goes away does not stop the
/// upstream exchange or the storing of its result (rule 10); the answer is then written to a
/// closed channel and dropped. The client is held until the answer is out, then let go.
final class ProtectedRequest {
    /// How a protected request's head was taken.
    enum Admission {
        /// No key (rule 1): the caller streams it through unprotected.
        case passThrough
        /// Refused (rules 1–3) with this answer (a problem); nothing was claimed.
        case refused(ProtectedRequestMachine.Reply)
        /// Its body is to be collected into the request.
        case collecting(ProtectedRequest)
    }

    private let loop: LoopContext
    /// The request's route's (or the top level's): every per-request value comes from it.
    let policy: Policy
    private var machine: ProtectedRequestMachine
    private var head: RequestHead
    private var body: ByteBuffer
    private let clientAddress: String?
    private var client: (any ClientResponder)?
    /// Known from the head, or (`key_from = json:…`) once the body is complete.
    private var recordKey = ""
    private let scope: [UInt8]
    private let owner: [UInt8]
    /// The key as parsed, for the access log; nil until known.
    private(set) var key: String?
    /// The store a replay came from, and how long the upstream exchange took: for the access log.
    private(set) var replayedFrom: ProtectedRequestMachine.Store?
    private(set) var upstreamNanoseconds: UInt64?
    /// The whole request has been read: it counts in `protectedInFlight` until its answer,
    /// and that answer ends the request (an earlier one, a 413, leaves the rest unread).
    private var bodyComplete = false

    private var exchange: BufferedExchange?
    /// A response too large to store is being passed on as it arrives.
    private var streaming = false
    /// The upstream's response body as it came, written to the client without a copy.
    private var responseBody: ByteBuffer?
    /// While waiting for the first request: the Pub/Sub listener on the record's channel, and
    /// the poll, which is the safety net for a message lost to a reconnect.
    private var subscription: Int?
    private var poll: Scheduled<Void>?
    /// The deadline (ms since the epoch) of the last claim sent to each store: when this
    /// request stops waiting for its answer, and after which the store refuses it.
    private var redisClaimDeadlineMs: Int64 = 0
    private var postgresClaimDeadlineMs: Int64 = 0

    /// Rules 1–3 on a request head of a protected method.
    static func admit(
        head: RequestHead, policy: Policy, loop: LoopContext, clientAddress: String?, client: any ClientResponder
    ) -> Admission {
        var declaredLength: Int?
        if case .length(let length) = head.framing { declaredLength = length }
        let owner = loop.ownerTokens.next()
        var machine = ProtectedRequestMachine(policy: policy, owner: owner)
        let keyHeader = policy.keyFromJSON == nil ? head.values(named: policy.keyHeader) : []
        switch machine.headReceived(keyHeaderValues: keyHeader, declaredBodyLength: declaredLength) {
        case .collectBody(let key):
            let request = ProtectedRequest(
                loop: loop, policy: policy, machine: machine, owner: owner, head: head, key: key, bodyCapacity: declaredLength ?? 0,
                clientAddress: clientAddress, client: client)
            return .collecting(request)
        case .refuse(let reply):
            return .refused(reply)
        case .passThrough:
            return .passThrough
        }
    }

    private init(
        loop: LoopContext, policy: Policy, machine: ProtectedRequestMachine, owner: [UInt8], head: RequestHead, key: String?,
        bodyCapacity: Int,
        clientAddress: String?, client: any ClientResponder
    ) {
        self.loop = loop
        self.policy = policy
        self.machine = machine
        var head = head
        // The head is kept while Redis and the upstream answer: it must not pin the read buffer.
        head.detach()
        self.head = head
        self.clientAddress = clientAddress
        self.client = client
        body = ByteBufferAllocator().buffer(capacity: bodyCapacity)
        scope = RequestDigest.scope(headerNames: policy.scopeHeaders) { head.values(named: $0) }
        self.owner = owner
        if let key { bind(key) }
    }

    /// The request's key, and so its record.
    private func bind(_ key: String) {
        self.key = key
        recordKey = RequestDigest.recordKey(prefix: policy.keyPrefix, scope: scope, key: key)
    }

    // MARK: - events from the client connection

    /// A body over `max_request_body` is answered (413) at once; the client skips its rest.
    func bodyReceived(_ buffer: ByteBuffer) {
        var buffer = buffer
        body.writeBuffer(&buffer)
        run(machine.bodyReceived(totalLength: body.readableBytes))
    }

    func bodyEnded() {
        bodyComplete = true
        loop.protectedInFlight += 1
        let bodyKey = policy.keyFromJSON.flatMap { pointer in body.withUnsafeReadableBytes { pointer.key(in: $0) } }
        let action = machine.bodyEnded(now: now(), bodyKey: bodyKey) {
            body.withUnsafeReadableBytes { RequestDigest.fingerprint(method: head.method.rawValue, target: head.target, body: $0) }
        }
        // Only a key the machine accepted names a record (and is logged).
        if case .claim = action, let bodyKey { bind(bodyKey) }
        run(action)
    }

    /// The client can take more of a streamed response again.
    func clientWritabilityChanged(isWritable: Bool) {
        if isWritable { exchange?.resume() }
    }

    // MARK: - carrying out actions

    private func run(_ action: ProtectedRequestMachine.Action) {
        switch action {
        case .nothing:
            break
        case .claim(let record, .redis):
            claimInRedis(record)
        case .claim(let record, .postgres):
            claimInPostgres(record)
        case .waitForReplicas(let count, let timeoutMs):
            loop.store.waitForReplicas(count, key: recordKey, timeoutMs: timeoutMs) { result in
                if case .failure(let error) = result {
                    self.loop.logger.warning("WAIT for replicas failed", metadata: ["error": "\(error)"])
                }
                self.run(self.machine.replicasAnswered(try? result.get()))
            }
        case .forward(let protected):
            forward(protected: protected)
        case .waitForFirst(let until):
            waitForTheFirst(until: until)
        case .settle(let settlement, .redis):
            settleInRedis(settlement)
        case .settle(let settlement, .postgres):
            settleInPostgres(settlement)
        case .retrySettle(let afterMs):
            loop.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(afterMs)) {
                self.run(self.machine.retryDue())
            }
        case .answer(let reply):
            answer(reply)
        case .preconditionFailed(let why):
            // Said once: the callbacks still under way after it meet a finished machine too.
            guard let client = letGoOfClient() else { return }
            loop.logger.error("a protected request met an event its state cannot have; cutting its connection", metadata: [
                "record": "\(recordKey)", "why": "\(why)",
            ])
            client.abortStreamed()
        }
    }

    private func claimInRedis(_ record: IdempotencyRecord) {
        redisClaimDeadlineMs = WallClock.milliseconds() + policy.redisTimeout.milliseconds
        loop.store.claim(key: recordKey, record: record, lockTTLMs: policy.lockTTL.milliseconds, deadlineMs: redisClaimDeadlineMs) {
            self.claimAnswered($0, in: .redis)
        }
    }

    /// The claim in PostgreSQL, after Redis granted one or did not answer.
    private func claimInPostgres(_ record: IdempotencyRecord) {
        guard let longTerm = loop.longTermStore else { preconditionFailure("a PostgreSQL claim without a long-term store") }
        postgresClaimDeadlineMs = WallClock.milliseconds() + policy.postgresTimeout.milliseconds
        longTerm.claim(
            key: recordKey, owner: record.owner, fingerprint: record.fingerprint, lockTTLMs: policy.lockTTL.milliseconds,
            retentionMs: policy.retention.milliseconds, deadlineMs: postgresClaimDeadlineMs
        ) { self.claimAnswered($0, in: .postgres) }
    }

    /// A store's answer to a claim, to the machine; the store's outage log hears whether it
    /// answered (a record it holds and cannot read is an answer, and logged as an error).
    private func claimAnswered(
        _ result: Result<ProtectedRequestMachine.ClaimAnswer, some StoreAnswerError>, in store: ProtectedRequestMachine.Store
    ) {
        let outage = store == .redis ? loop.outages.redis : loop.outages.postgres
        switch result {
        case .success(let answer):
            outage.answered(logger: loop.logger)
            run(machine.claimAnswered(.success(answer), in: store, now: now()))
        case .failure(let error) where error.failure == .unreadable:
            outage.answered(logger: loop.logger)
            loop.logger.error("a stored record cannot be read", metadata: ["record": "\(recordKey)", "error": "\(error)"])
            run(machine.claimAnswered(.failure(.unreadable), in: store, now: now()))
        case .failure(let error):
            let action = machine.claimAnswered(.failure(error.failure), in: store, now: now())
            outage.failed(error, instead: Self.fallback(action), logger: loop.logger)
            run(action)
        }
    }

    /// What the proxy does instead while a store is down, for the outage log.
    private static func fallback(_ action: ProtectedRequestMachine.Action) -> String {
        switch action {
        case .claim(_, .postgres): return "protecting requests by PostgreSQL alone"
        case .forward(protected: true), .waitForReplicas: return "protecting requests by Redis alone (on_postgres_error = redis)"
        case .forward(protected: false): return "no store answers: forwarding requests unprotected (on_redis_error = open)"
        case .nothing, .claim, .waitForFirst, .settle, .retrySettle, .answer, .preconditionFailed: return "answering 503"
        }
    }

    /// The `complete` and `release` scripts publish on the record's channel, across proxy
    /// instances; the poll covers a message that never comes.
    private func waitForTheFirst(until deadline: UInt64) {
        if subscription == nil {
            subscription = loop.subscriber.subscribe(recordKey) { [weak self] in self?.wake() }
        }
        let due = min(loop.eventLoop.now + loop.waitPollInterval, NIODeadline.uptimeNanoseconds(deadline))
        poll = loop.eventLoop.assumeIsolated().scheduleTask(deadline: due) { self.wake() }
    }

    private func wake() {
        poll?.cancel()
        poll = nil
        run(machine.woken())
    }

    private func forward(protected: Bool) {
        let started = NIODeadline.now()
        let upstreamHead = ForwardedRequest(
            from: head, basePath: loop.configuration.upstream.basePath, hostHeader: loop.upstreamHostHeader, clientAddress: clientAddress,
            bodyLength: body.readableBytes, clientProtocol: loop.clientProtocol)
        exchange = BufferedExchange.run(
            pool: loop.pool, head: upstreamHead, body: body, timeout: TimeAmount(policy.upstreamTimeout),
            // Unprotected too, a response too large to store is passed on rather than held whole.
            allocator: ByteBufferAllocator(), spillAfter: policy.maxStoredResponse, spill: self
        ) { outcome in
            self.exchange = nil
            self.loop.metrics.upstreamExchange(since: started)
            self.upstreamNanoseconds = NIODeadline.now().uptimeNanoseconds - started.uptimeNanoseconds
            self.run(self.machine.upstreamFinished(self.result(of: outcome), nowMs: WallClock.milliseconds()))
        }
    }

    /// The exchange in the machine's terms; a collected response is kept for the answer.
    private func result(of outcome: BufferedExchange.Outcome) -> ProtectedRequestMachine.UpstreamResult {
        switch outcome {
        case .notConnected(let error):
            loop.logger.warning("upstream unreachable", metadata: ["error": "\(error)"])
            return .notConnected
        case .failed(let failure):
            return .failed(failure, afterStreaming: streaming)
        case .spilled(let head, let bodyLength):
            return .streamed(status: Int(head.status.code), bodyBytes: bodyLength)
        case .response(let head, let body):
            responseBody = body
            return .response(StoredResponse(upstream: head, body: Array(body.readableBytesView)))
        }
    }

    private func settleInRedis(_ settlement: ProtectedRequestMachine.Settlement) {
        switch settlement {
        case .complete(let record, let ttlMs):
            let lockEndMs = redisClaimDeadlineMs + policy.lockTTL.milliseconds
            loop.store.complete(key: recordKey, owner: owner, record: record, responseTTLMs: ttlMs, lockEndMs: lockEndMs) { result in
                self.settled(
                    result.map { $0 == .ownedByAnother ? .takenOver : .done }.mapError(\.failure), result,
                    failing: "storing a response failed; retries get 409 until lock_ttl ends")
            }
        case .release, .withdraw:
            loop.store.release(key: recordKey, owner: owner, wakeWaiters: settlement == .release) { result in
                self.settled(
                    result.map { _ in .done }.mapError(\.failure), result, failing: "releasing a claim failed; it expires after lock_ttl")
            }
        }
    }

    /// PostgreSQL settles first, owner-checked.
    private func settleInPostgres(_ settlement: ProtectedRequestMachine.Settlement) {
        guard let longTerm = loop.longTermStore else { preconditionFailure("a PostgreSQL settlement without a long-term store") }
        switch settlement {
        case .complete(let record, let ttlMs):
            let lockEndMs = postgresClaimDeadlineMs + policy.lockTTL.milliseconds
            longTerm.complete(key: recordKey, record: record, retentionMs: ttlMs, lockEndMs: lockEndMs) { result in
                self.settled(
                    result.map { $0 ? .done : .takenOver }.mapError(\.failure), result,
                    failing: "storing a response in PostgreSQL failed; only Redis keeps it, if it answers")
            }
        case .release, .withdraw:
            longTerm.release(key: recordKey, owner: owner) { result in
                self.settled(
                    result.map { _ in .done }.mapError(\.failure), result,
                    failing: "releasing a claim in PostgreSQL failed; it expires after lock_ttl")
            }
        }
    }

    /// A settlement given up on is logged once.
    private func settled<Answer, Failure: Error>(
        _ outcome: ProtectedRequestMachine.StoreOutcome<ProtectedRequestMachine.SettleAnswer>, _ result: Result<Answer, Failure>,
        failing message: Logger.Message
    ) {
        let action = machine.settled(outcome, now: now())
        if case .retrySettle = action {
        } else if case .failure(let error) = result {
            loop.logger.error(message, metadata: ["error": "\(error)"])
        }
        run(action)
    }

    /// Counted and logged once the request is answered.
    private func completionLost(in store: ProtectedRequestMachine.Store) {
        loop.metrics.completionLost()
        loop.logger.warning(
            "the claim in \(store == .redis ? "Redis" : "PostgreSQL") was taken over or removed before the response was stored (it expired: raise lock_ttl; or the records API deleted it)",
            metadata: ["record": "\(recordKey)"])
    }

    /// Lets go of the client (and of what waited for the first request): this request is
    /// answered, or can no longer be. The client, if it is still there to be answered.
    private func letGoOfClient() -> (any ClientResponder)? {
        guard let client else { return nil }
        self.client = nil
        poll?.cancel()
        poll = nil
        if let subscription { loop.subscriber.unsubscribe(recordKey, id: subscription) }
        if bodyComplete { loop.protectedInFlight -= 1 }
        return client
    }

    /// The last step of every path: let go of the client after giving it its answer.
    private func answer(_ reply: ProtectedRequestMachine.Reply) {
        guard let client = letGoOfClient() else { return }
        if let store = reply.replayedFrom { loop.metrics.replayed(from: store) }
        replayedFrom = reply.replayedFrom
        withdraw(reply.claimsToWithdraw)
        reply.completionsLost.forEach(completionLost(in:))
        let requestEnded = bodyComplete
        let response: ProxyResponse
        switch reply.content {
        case .problem(let problem):
            response = ProxyResponse(problem: problem)
        case .replay(let stored):
            response = ProxyResponse(stored: stored, replayHeader: policy.replayHeader)
        case .upstreamResponse(let stored):
            response = ProxyResponse(stored: stored, replayHeader: nil, body: responseBody)
        case .endOfStreamedResponse:
            return client.finishStreamed(outcome: reply.outcome, requestEnded: requestEnded)
        case .abortStreamedResponse:
            return client.abortStreamed()
        }
        client.respond(response, outcome: reply.outcome, requestEnded: requestEnded, closing: reply.closesConnection)
    }

    /// Hands the claims this request sent and never heard back from to the loop's withdrawals.
    private func withdraw(_ stores: [ProtectedRequestMachine.Store]) {
        for store in stores {
            let deadlineMs = store == .redis ? redisClaimDeadlineMs : postgresClaimDeadlineMs
            // The claim lives lock_ttl from when it landed, at the latest its deadline; a clock
            // skew of a few seconds is allowed for.
            let remainingMs = max(0, deadlineMs - WallClock.milliseconds()) + policy.lockTTL.milliseconds + 5_000
            loop.unansweredClaims.withdraw(UnansweredClaims.Claim(
                store: store, key: recordKey, owner: owner, deadlineMs: deadlineMs, giveUpAt: .now() + .milliseconds(remainingMs)))
        }
    }

    /// The id both stores keep the record under (docs/behaviour.md, "The records API"); nil
    /// until the key is known.
    var recordID: Substring? { key == nil ? nil : recordKey.dropFirst(policy.keyPrefix.count) }

    /// The loop's clock: real time on a real loop, the test's on an `EmbeddedEventLoop`.
    private func now() -> UInt64 { loop.eventLoop.now.uptimeNanoseconds }
}

extension ProtectedRequest: ResponseSpill {
    func spillStarted(head responseHead: ResponseHead, body: ByteBuffer) -> Bool {
        streaming = true
        client?.writeStreamedHead(responseHead)
        return spillBody(body)
    }

    func spillBody(_ buffer: ByteBuffer) -> Bool {
        client?.writeStreamedBody(buffer) ?? true
    }
}
