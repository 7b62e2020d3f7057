/// The decision table of SPEC §3: plain values in, an action out. The proxy only carries out
/// what these functions return, so each rule is one row of a table test.
public enum IdempotencyDecision {
    /// What the claim script found.
    public enum Claim: Equatable, Sendable {
        /// The key was free and is now ours, in flight.
        case claimed
        /// Someone claimed it before.
        case existing(IdempotencyRecord)
    }

    /// What to do with a protected request after the claim (rules 4, 6, 7, 9).
    public enum ClaimAction: Equatable, Sendable {
        case forward
        case replay(StoredResponse)
        /// Same request, still running elsewhere: 409, or wait when `inflight_wait` allows.
        case inFlight
        case mismatch
        /// Ran before, response too large to keep: 502, never run again.
        case notReplayable
    }

    public static func afterClaim(_ claim: Claim, fingerprint: [UInt8]) -> ClaimAction {
        guard case .existing(let record) = claim else { return .forward }
        guard record.fingerprint == fingerprint else { return .mismatch }
        switch record.state {
        case .inFlight: return .inFlight
        case .completed(let response): return .replay(response)
        case .completedWithoutBody: return .notReplayable
        }
    }

    /// How one upstream exchange ended.
    public enum UpstreamResult: Equatable, Sendable {
        case response(status: Int, bodyLength: Int)
        /// No connection: the request was never sent.
        case notConnected
        /// Sent, no complete answer within `upstream_timeout`.
        case timedOut
        /// Sent, then the connection broke (or the answer was not valid HTTP).
        case broken
    }

    /// What becomes of the claim after the upstream exchange (rules 5, 8, 9).
    public enum Settlement: Equatable, Sendable {
        /// Store status, headers and body for `response_ttl`.
        case store
        /// Mark completed without the body: the request ran, its response is too large.
        case storeWithoutBody
        /// Delete the claim: the request did not run (or failed in a way a retry may repeat).
        case release
        /// Leave the claim until `lock_ttl`: the upstream may have acted, we cannot tell.
        case keep
    }

    public static func settle(_ result: UpstreamResult, store5xx: Bool, maxStoredResponse: Int) -> Settlement {
        switch result {
        case .notConnected:
            return .release
        case .timedOut, .broken:
            return .keep
        case .response(let status, let bodyLength):
            if status >= 500 && !store5xx { return .release }
            return bodyLength > maxStoredResponse ? .storeWithoutBody : .store
        }
    }
}

/// The outcome label of one client request, as counted in `/metrics` (SPEC §5).
public enum RequestOutcome: String, CaseIterable, Sendable {
    case forwarded, replayed, conflict, mismatch
    case badRequest = "bad_request"
    case tooLarge = "too_large"
    case redisError = "redis_error"
    case passthrough
    case upstreamError = "upstream_error"
}
