/// The outcome label of one client request, as counted in `/metrics` (docs/behaviour.md §5).
public enum RequestOutcome: String, CaseIterable, Sendable {
    case forwarded, replayed, conflict, mismatch
    case badRequest = "bad_request"
    case tooLarge = "too_large"
    case redisError = "redis_error"
    case passthrough
    case upstreamError = "upstream_error"
    /// A 503 because the long-term store did not answer (`on_postgres_error = closed`).
    case postgresError = "postgres_error"
}
