import IdempotencyCore
import Logging
import NIOCore
import RedisClient

/// Everything one event loop needs to serve a request without leaving the loop: its store, its
/// Pub/Sub subscriber, its upstream pool and the shared read-only settings. Confined to its
/// loop. It is handed its parts (`ProxyServer` makes them for Redis; a test may make them for
/// an `EmbeddedEventLoop`), and builds none itself.
final class LoopContext {
    let eventLoop: any EventLoop
    let configuration: ProxyConfiguration
    let metrics: ProxyMetrics
    let logger: Logger
    let store: any RecordStore
    /// PostgreSQL behind Redis (docs/behaviour.md §3, long-term store), when `postgres_url` is set.
    let longTermStore: (any LongTermStore)?
    private let sweeper: RecordSweeper?
    /// Claims sent and never answered, withdrawn once their store answers again.
    let unansweredClaims: UnansweredClaims
    /// Shared by every loop of the process, so that an outage is logged once.
    let outages: Outages
    /// Wakes retries waiting for an in-flight request (`inflight_wait`).
    let subscriber: any RedisPubSub
    /// How often a waiting retry looks at the record even without a Pub/Sub message: the
    /// safety net for a message lost to a reconnect.
    let waitPollInterval: TimeAmount
    let pool: UpstreamPool
    /// Where finished requests are logged (`access_log`); nil when off.
    let accessLog: AccessLogWriter?
    /// Protected requests whose work is not finished (they outlive their client connection).
    var protectedInFlight = 0
    /// This loop's client connections, for shedding at `max_connections`.
    var clientConnections: [ObjectIdentifier: ProxyHandler] = [:]
    /// The owner of each claim made on this loop.
    var ownerTokens = OwnerTokens()

    /// The policy of each request is looked up here at its head.
    let routes: RouteTable
    /// The `Host` sent upstream when a client sent none (made once, not per request).
    let upstreamHostHeader: String
    /// What clients speak on `listen`, for `X-Forwarded-Proto`.
    let clientProtocol: String

    init(
        eventLoop: any EventLoop, configuration: ProxyConfiguration, metrics: ProxyMetrics, logger: Logger,
        store: any RecordStore, longTermStore: (any LongTermStore)? = nil, sweeper: RecordSweeper? = nil,
        outages: Outages = Outages(),
        subscriber: any RedisPubSub, pool: UpstreamPool, waitPollInterval: TimeAmount, accessLog: AccessLogWriter? = nil,
        routes: RouteTable? = nil
    ) {
        self.accessLog = accessLog
        self.eventLoop = eventLoop
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
        self.store = store
        self.longTermStore = longTermStore
        self.sweeper = sweeper
        unansweredClaims = UnansweredClaims(eventLoop: eventLoop, store: store, longTermStore: longTermStore, logger: logger)
        self.outages = outages
        self.subscriber = subscriber
        self.pool = pool
        self.waitPollInterval = waitPollInterval
        upstreamHostHeader = configuration.upstream.hostHeader
        clientProtocol = configuration.tlsCertFile.isEmpty ? "http" : "https"
        self.routes = routes ?? RouteTable(configuration)
    }

    /// At `max_connections`: closes the connections that hold a descriptor and give nothing
    /// (`ConnectionShedding`).
    func shedConnections() {
        let connections = Array(clientConnections.values)
        let victims = ConnectionShedding.victims(connections.map(\.activity), now: NIODeadline.now().uptimeNanoseconds)
        for index in victims { connections[index].shed() }
        if !victims.isEmpty { metrics.shed(victims.count) }
    }

    func close() {
        unansweredClaims.close()
        pool.close()
        store.close()
        sweeper?.stop()
        longTermStore?.close()
        subscriber.close()
    }
}

/// The outage logs of both stores, one pair per process.
struct Outages: Sendable {
    let redis = OutageLog(store: "Redis")
    let postgres = OutageLog(store: "PostgreSQL")
}
