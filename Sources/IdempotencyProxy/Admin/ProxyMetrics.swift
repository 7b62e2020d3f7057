import CoreMetrics
import IdempotencyCore
import NIOCore
import Prometheus

/// The metrics of docs/behaviour.md §5, created once up front so the hot path only touches atomics.
///
/// Each proxy instance has its own registry (not the global `MetricsSystem`), so several
/// proxies can run in one process, as they do in the tests.
public final class ProxyMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    /// By route (`Policy.routeIndex`), then outcome.
    private let outcomes: [[RequestOutcome: CoreMetrics.Counter]]
    private let requestLatency: CoreMetrics.Timer
    private let upstreamLatency: CoreMetrics.Timer
    private let redisLatency: CoreMetrics.Timer
    private let inFlight: Meter
    private let lateCompletions: CoreMetrics.Counter
    private let postgresLatency: CoreMetrics.Timer
    private let postgresErrors: CoreMetrics.Counter
    private let upstreamTLSFailures: CoreMetrics.Counter
    private let replays: [ProtectedRequestMachine.Store: CoreMetrics.Counter]
    private let clientConnections: Meter
    private let connectionLimitReached: CoreMetrics.Counter
    private let connectionsShed: CoreMetrics.Counter

    /// `routes`: the names of the routes, by `Policy.routeIndex` (`default` last).
    public init(routes: [String] = [Route.defaultName]) {
        var factory = PrometheusMetricsFactory(registry: registry)
        let fine: [Duration] = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
            .seconds(30),
        ]
        factory.defaultDurationHistogramBuckets = fine
        outcomes = routes.map { route in
            var outcomes: [RequestOutcome: CoreMetrics.Counter] = [:]
            for outcome in RequestOutcome.allCases {
                outcomes[outcome] = Counter(
                    label: "idemproxy_requests_total", dimensions: [("outcome", outcome.rawValue), ("route", route)], factory: factory)
            }
            return outcomes
        }
        requestLatency = Timer(label: "idemproxy_request_duration_seconds", factory: factory)
        upstreamLatency = Timer(label: "idemproxy_upstream_duration_seconds", factory: factory)
        redisLatency = Timer(label: "idemproxy_redis_command_duration_seconds", factory: factory)
        inFlight = Meter(label: "idemproxy_requests_in_flight", factory: factory)
        lateCompletions = Counter(label: "idemproxy_completions_lost_total", factory: factory)
        postgresLatency = Timer(label: "idemproxy_postgres_statement_duration_seconds", factory: factory)
        postgresErrors = Counter(label: "idemproxy_postgres_errors_total", factory: factory)
        upstreamTLSFailures = Counter(label: "idemproxy_upstream_tls_failures_total", factory: factory)
        var replays: [ProtectedRequestMachine.Store: CoreMetrics.Counter] = [:]
        for store in [ProtectedRequestMachine.Store.redis, .postgres] {
            replays[store] = Counter(label: "idemproxy_replays_total", dimensions: [("store", store.rawValue)], factory: factory)
        }
        self.replays = replays
        clientConnections = Meter(label: "idemproxy_client_connections", factory: factory)
        connectionLimitReached = Counter(label: "idemproxy_connection_limit_reached_total", factory: factory)
        connectionsShed = Counter(label: "idemproxy_connections_shed_total", factory: factory)
    }

    /// A client connection was accepted (`open`), or closed.
    func clientConnection(open: Bool) { open ? clientConnections.increment() : clientConnections.decrement() }

    /// `max_connections` was reached: accepting paused.
    func connectionLimitWasReached() { connectionLimitReached.increment() }

    /// Client connections closed to make room at `max_connections`.
    func shed(_ count: Int) { connectionsShed.increment(by: Int64(count)) }

    public func count(_ outcome: RequestOutcome, route: Int) { outcomes[route][outcome]?.increment() }

    /// A client request ended (its response written or the client gone).
    public func requestFinished(since start: NIODeadline) {
        requestLatency.recordNanoseconds((NIODeadline.now() - start).nanoseconds)
        inFlight.decrement()
    }

    public func requestStarted() { inFlight.increment() }

    public func upstreamExchange(since start: NIODeadline) {
        upstreamLatency.recordNanoseconds((NIODeadline.now() - start).nanoseconds)
    }

    public func redisCommand(since start: NIODeadline) {
        redisLatency.recordNanoseconds((NIODeadline.now() - start).nanoseconds)
    }

    public func postgresStatement(since start: NIODeadline) {
        postgresLatency.recordNanoseconds((NIODeadline.now() - start).nanoseconds)
    }

    /// A PostgreSQL statement that failed or timed out.
    public func postgresFailed() { postgresErrors.increment() }

    /// A connection to an `https://` upstream whose TLS handshake failed.
    public func upstreamTLSFailed() { upstreamTLSFailures.increment() }

    /// A retry answered from a stored record, by the store that held it.
    public func replayed(from store: ProtectedRequestMachine.Store) { replays[store]?.increment() }

    /// A completion that found the key owned by another request (our lease had expired).
    public func completionLost() { lateCompletions.increment() }

    public func render() -> [UInt8] { registry.emitToBuffer() }
}
