import HTTPWire
import IdempotencyCore
import NIOCore

/// Carries one protected request through the phases of SPEC §3:
///
///     claim ─► (replicate) ─► forward ─► settle (store | store without body | release | keep) ─► answer
///       └─► replay | 409 (or wait and claim again) | 422 | 502 not replayable
///
/// Decisions come from `IdempotencyDecision`; this type only carries them out. It is not tied
/// to the client's connection: a client that goes away does not stop the upstream exchange or
/// the storing of its result (rule 10); the answer is then written to a closed channel and
/// dropped. The client is held until the answer is out, then let go.
final class ProtectedRequest {
    private let loop: LoopContext
    private let head: RequestHead
    private let body: ByteBuffer
    private let clientAddress: String?
    private var client: ProxyHandler?
    private var exchange: BufferedExchange?
    /// True once a response too large to store is being passed on as it arrives.
    private var streaming = false

    private let recordKey: String
    private let fingerprint: [UInt8]
    private let owner: [UInt8]
    /// Until when a retry that finds the request in flight keeps waiting (`inflight_wait`).
    private let waitDeadline: NIODeadline?
    /// While waiting: the Pub/Sub listener on the record's channel and the safety-net poll.
    private var subscription: Int?
    private var poll: Scheduled<Void>?

    init(
        loop: LoopContext,
        head: RequestHead,
        key: String,
        body: ByteBuffer,
        clientAddress: String?,
        client: ProxyHandler
    ) {
        let c = loop.configuration
        self.loop = loop
        self.head = head
        self.body = body
        self.clientAddress = clientAddress
        self.client = client
        let scope = RequestDigest.scope(headerNames: c.scopeHeaders) { head.values(named: $0) }
        recordKey = RequestDigest.recordKey(prefix: c.keyPrefix, scope: scope, key: key)
        if c.fingerprint {
            fingerprint = body.withUnsafeReadableBytes {
                RequestDigest.fingerprint(method: head.method.rawValue, target: head.target, body: $0)
            }
        } else {
            fingerprint = [UInt8](repeating: 0, count: IdempotencyRecord.fingerprintLength)
        }
        owner = loop.ownerTokens.next()
        waitDeadline = c.inflightWaitMs > 0 ? .now() + .milliseconds(c.inflightWaitMs) : nil
    }

    func start() {
        loop.protectedInFlight += 1
        claim()
    }

    // MARK: - phases

    private func claim() {
        let record = IdempotencyRecord(owner: owner, fingerprint: fingerprint, state: .inFlight)
        loop.store.claim(key: recordKey, record: record, lockTTLMs: loop.configuration.lockTTLMs) { result in
            switch result {
            case .failure(let error):
                self.storeFailed(error)
            case .success(let claim):
                self.act(on: IdempotencyDecision.afterClaim(claim, fingerprint: self.fingerprint))
            }
        }
    }

    private func act(on action: IdempotencyDecision.ClaimAction) {
        switch action {
        case .forward:
            if loop.configuration.redisWaitReplicas > 0 { replicate() } else { forward() }
        case .replay(let stored):
            finish(ProxyResponse(stored: stored, replayHeader: loop.configuration.replayHeader), .replayed)
        case .inFlight:
            if let waitDeadline, NIODeadline.now() < waitDeadline {
                waitForTheFirst(until: waitDeadline)
            } else {
                finish(problem: .inFlight, .conflict)
            }
        case .mismatch:
            finish(problem: .mismatch, .mismatch)
        case .notReplayable:
            finish(problem: .responseNotReplayable, .replayed)
        }
    }

    /// Waits until the first request completes or is released, then claims again (which
    /// replays, or takes over a released key). The `complete` and `release` scripts publish on
    /// the record's channel, across proxy instances; the poll is the safety net.
    private func waitForTheFirst(until deadline: NIODeadline) {
        if subscription == nil {
            subscription = loop.subscriber.subscribe(recordKey) { [weak self] in self?.wake() }
        }
        let remaining = deadline - .now()
        poll = loop.eventLoop.assumeIsolated().scheduleTask(in: min(loop.waitPollInterval, remaining)) { self.wake() }
    }

    private func wake() {
        guard let poll else { return }  // not waiting (already woken)
        poll.cancel()
        self.poll = nil
        claim()
    }

    /// `redis_wait_replicas`: the claim must reach that many replicas before the upstream acts.
    private func replicate() {
        let c = loop.configuration
        // WAIT must give up before our own command timeout does, or its answer would be lost
        // with the connection.
        let waitMs = max(1, c.redisTimeoutMs * 3 / 4)
        loop.store.waitForReplicas(c.redisWaitReplicas, key: recordKey, timeoutMs: waitMs) { result in
            switch result {
            case .success(let count) where count >= c.redisWaitReplicas:
                self.forward()
            case .success(let count):
                self.release { self.finish(problem: .replicasMissing(wanted: c.redisWaitReplicas, got: count), .redisError) }
            case .failure(let error):
                self.loop.logger.warning("WAIT for replicas failed", metadata: ["error": "\(error)"])
                self.release { self.finish(problem: .replicasMissing(wanted: c.redisWaitReplicas, got: 0), .redisError) }
            }
        }
    }

    private func forward(protected: Bool = true) {
        let c = loop.configuration
        let started = NIODeadline.now()
        let upstreamHead = ForwardedRequest(
            from: head, basePath: c.upstream.basePath, hostHeader: loop.upstreamHostHeader, clientAddress: clientAddress,
            bodyLength: body.readableBytes)
        exchange = BufferedExchange.run(
            pool: loop.pool, head: upstreamHead, body: body, timeout: .milliseconds(c.upstreamTimeoutMs),
            allocator: ByteBufferAllocator(), spillAfter: protected ? c.maxStoredResponse : nil, spill: self
        ) { outcome in
            self.exchange = nil
            self.loop.metrics.upstreamExchange(since: started)
            if protected { self.settle(outcome) } else { self.answerUnprotected(outcome) }
        }
    }

    /// The client can take more of a streamed response again.
    func clientWritabilityChanged(isWritable: Bool) {
        if isWritable { exchange?.resume() }
    }

    /// Turns the exchange into the decision table's terms, carries out its settlement
    /// (store, store without body, release, keep), then answers the client.
    private func settle(_ outcome: BufferedExchange.Outcome) {
        let c = loop.configuration
        let result: IdempotencyDecision.UpstreamResult
        let answer: (ProxyHandler) -> Void
        var stored: StoredResponse?
        switch outcome {
        case .notConnected(let error):
            loop.logger.warning("upstream unreachable", metadata: ["error": "\(error)"])
            result = .notConnected
            answer = { $0.respond(ProxyResponse(problem: .upstreamUnreachable), outcome: .upstreamError, requestEnded: true) }
        case .failed(let failure):
            result = failure == .timedOut ? .timedOut : .broken
            if streaming {
                // Part of a large response is out already: cutting the connection is the only
                // honest signal left.
                answer = { $0.abortStreamed() }
            } else {
                answer = { $0.respond(ProxyResponse(problem: failure.problem), outcome: .upstreamError, requestEnded: true) }
            }
        case .spilled(let head, let length):
            result = .response(status: Int(head.status.code), bodyLength: length)
            answer = { $0.finishStreamed(outcome: .forwarded, requestEnded: true) }
        case .response(let head, let body):
            let response = ForwardedMessage.storedResponse(head: head, body: Array(body.readableBytesView))
            stored = response
            result = .response(status: response.status, bodyLength: body.readableBytes)
            let proxied = ProxyResponse(stored: response, replayHeader: nil, body: body)
            answer = { $0.respond(proxied, outcome: .forwarded, requestEnded: true) }
        }
        let then = { self.endStream(answer) }
        func storeWithoutBody() {
            // Rule 9: the request ran, its response cannot be replayed; a retry gets 502.
            guard case .response(let status, _) = result else { return then() }
            complete(.completedWithoutBody(status: status), then: then)
        }
        switch IdempotencyDecision.settle(result, store5xx: c.store5xx, maxStoredResponse: c.maxStoredResponse) {
        case .store:
            // A streamed-on (spilled) response was never collected, so it is stored without body.
            if let stored { complete(.completed(stored), then: then) } else { storeWithoutBody() }
        case .storeWithoutBody:
            storeWithoutBody()
        case .release:
            release(then: then)
        case .keep:
            // The upstream may have acted: the claim stays until lock_ttl (rule 8).
            then()
        }
    }

    /// Storing is retried on Redis errors (it is owner-checked, so a repeat is harmless): a
    /// completion lost to a blip would leave the claim in flight and retries at 409 until
    /// `lock_ttl` ends.
    private func complete(_ state: IdempotencyRecord.State, attempt: Int = 1, then: @escaping () -> Void) {
        let record = IdempotencyRecord(owner: owner, fingerprint: fingerprint, state: state)
        loop.store.complete(
            key: recordKey, owner: owner, record: record, responseTTLMs: loop.configuration.responseTTLMs
        ) { result in
            if case .failure(.redis) = result, attempt < Self.storeAttempts {
                self.afterBackoff(attempt) { self.complete(state, attempt: attempt + 1, then: then) }
                return
            }
            switch result {
            case .success(.stored), .success(.storedAfterExpiry):
                break
            case .success(.ownedByAnother):
                self.loop.metrics.completionLost()
                self.loop.logger.warning(
                    "claim expired and was taken over before the response was stored; raise lock_ttl",
                    metadata: ["record": "\(self.recordKey)"])
            case .failure(let error):
                // The client still gets its answer; retries get 409 until lock_ttl ends.
                self.loop.logger.error("storing a response failed", metadata: ["error": "\(error)"])
            }
            then()
        }
    }

    private func release(attempt: Int = 1, then: @escaping () -> Void) {
        loop.store.release(key: recordKey, owner: owner) { result in
            if case .failure(.redis) = result, attempt < Self.storeAttempts {
                self.afterBackoff(attempt) { self.release(attempt: attempt + 1, then: then) }
                return
            }
            if case .failure(let error) = result {
                self.loop.logger.error("releasing a claim failed; it expires after lock_ttl", metadata: ["error": "\(error)"])
            }
            then()
        }
    }

    /// Tries of `complete` and `release` before giving up; with the backoff below they span
    /// about a second, enough for a reconnect (which starts after 25–50 ms).
    static let storeAttempts = 4

    private func afterBackoff(_ attempt: Int, _ work: @escaping () -> Void) {
        loop.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(100 << (attempt - 1))) { work() }
    }

    private func storeFailed(_ error: IdempotencyStore.StoreError) {
        switch loop.configuration.onRedisError {
        case .closed:
            loop.logger.warning("Redis unavailable, answering 503", metadata: ["error": "\(error)"])
            finish(problem: .redisUnavailable, .redisError)
        case .open:
            loop.logger.warning("Redis unavailable, forwarding unprotected", metadata: ["error": "\(error)"])
            forward(protected: false)
        }
    }

    private func answerUnprotected(_ outcome: BufferedExchange.Outcome) {
        switch outcome {
        case .notConnected: finish(problem: .upstreamUnreachable, .upstreamError)
        case .failed(let failure): finish(problem: failure.problem, .upstreamError)
        case .response(let responseHead, let responseBody):
            let stored = ForwardedMessage.storedResponse(head: responseHead, body: Array(responseBody.readableBytesView))
            finish(ProxyResponse(stored: stored, replayHeader: nil, body: responseBody), .redisError)
        case .spilled:
            // Unprotected exchanges do not spill.
            finish(problem: .invalidUpstreamResponse, .upstreamError)
        }
    }

    private func finish(problem: Problem, _ outcome: RequestOutcome) {
        finish(ProxyResponse(problem: problem), outcome)
    }

    private func finish(_ response: ProxyResponse, _ outcome: RequestOutcome) {
        endStream { $0.respond(response, outcome: outcome, requestEnded: true) }
    }

    /// The last step of every path: let go of the client after `write` gave it its answer.
    private func endStream(_ write: (ProxyHandler) -> Void) {
        guard let client else { return }
        self.client = nil
        poll?.cancel()
        poll = nil
        if let subscription { loop.subscriber.unsubscribe(recordKey, id: subscription) }
        loop.protectedInFlight -= 1
        write(client)
    }
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
