/// How an upstream exchange failed after its connection was made.
public enum UpstreamFailure: Error, Equatable, Sendable {
    /// No complete response within `upstream_timeout`.
    case timedOut
    /// The connection closed or failed mid-exchange.
    case broken
    /// The upstream sent bytes that are not a valid HTTP response.
    case invalidResponse

    /// The proxy's own answer when nothing of the response has gone out yet (docs/behaviour.md §3, rule 8).
    public var problem: Problem {
        switch self {
        case .timedOut: return .upstreamTimeout
        case .broken: return .upstreamBroken
        case .invalidResponse: return .invalidUpstreamResponse
        }
    }
}
