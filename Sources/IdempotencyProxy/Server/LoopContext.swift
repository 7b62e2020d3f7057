import IdempotencyCore
import Logging
import NIOCore
import RedisClient

/// Everything one event loop needs to serve a request without leaving the loop: its Redis
/// connection, its upstream pool and the shared read-only settings. Confined to its loop.
final class LoopContext {
    let eventLoop: any EventLoop
    let configuration: ProxyConfiguration
    let metrics: ProxyMetrics
    let logger: Logger
    let redis: any RedisCommands
    let store: IdempotencyStore
    /// Wakes retries waiting for an in-flight request (`inflight_wait`).
    let subscriber: any RedisPubSub
    /// How often a waiting retry looks at the record even without a Pub/Sub message: the
    /// safety net for a message lost to a reconnect.
    let waitPollInterval: TimeAmount
    let pool: UpstreamPool
    /// Protected requests whose work is not finished (they outlive their client connection).
    var protectedInFlight = 0
    /// The owner of each claim made on this loop.
    var ownerTokens = OwnerTokens()

    /// Matched against every request's method.
    let protectedMethods: Set<String>
    /// The `Host` sent upstream when a client sent none (made once, not per request).
    let upstreamHostHeader: String

    init(
        eventLoop: any EventLoop, configuration: ProxyConfiguration, metrics: ProxyMetrics, logger: Logger,
        waitPollInterval: TimeAmount
    ) {
        self.eventLoop = eventLoop
        self.configuration = configuration
        upstreamHostHeader = configuration.upstream.hostHeader
        self.metrics = metrics
        self.logger = logger
        let redisConfiguration = Self.redisConfiguration(configuration)
        if configuration.redisCluster {
            let cluster = RedisClusterClient(
                seeds: configuration.redisURLs.compactMap(\.clusterNode), configuration: redisConfiguration,
                eventLoop: eventLoop)
            cluster.onSlotMapUnavailable = { reason in
                logger.error(
                    "no Redis Cluster node gives a slot map; commands follow the last one, or go to the first seed",
                    metadata: ["reason": "\(reason)"])
            }
            redis = cluster
            subscriber = RedisClusterSubscriber(cluster: cluster, configuration: redisConfiguration)
        } else {
            redis = RedisConnection(configuration: redisConfiguration, eventLoop: eventLoop)
            subscriber = RedisSubscriber(configuration: redisConfiguration, eventLoop: eventLoop)
        }
        subscriber.onRefused = { error in
            logger.warning(
                "Redis refused a Pub/Sub subscription; retries waiting for an in-flight request are woken by their poll",
                metadata: ["error": "\(error)"])
        }
        store = IdempotencyStore(
            redis: redis, metrics: metrics, publishCommand: subscriber.publishCommand,
            wakeOnCompletion: configuration.inflightWaitMs > 0)
        redis.onAvailabilityChange = { server, available, error in
            if available {
                logger.info("Redis connection up", metadata: ["redis": "\(server)"])
            } else {
                logger.warning(
                    "Redis unavailable; reconnecting", metadata: ["redis": "\(server)", "error": "\(error.map { "\($0)" } ?? "")"])
            }
        }
        self.waitPollInterval = waitPollInterval
        pool = UpstreamPool(
            eventLoop: eventLoop, upstream: configuration.upstream,
            connectTimeout: .milliseconds(min(configuration.upstreamTimeoutMs, 5_000)), logger: logger)
        protectedMethods = Set(configuration.methods)
    }

    func close() {
        pool.close()
        redis.close()
        subscriber.close()
    }

    static func redisConfiguration(_ c: ProxyConfiguration) -> RedisConfiguration {
        let url = c.redisURL
        let address: RedisConfiguration.Address
        switch url.location {
        case .tcp(let hostPort): address = .tcp(host: hostPort.host, port: hostPort.port)
        case .unix(let path): address = .unix(path: path)
        }
        return RedisConfiguration(
            address: address, username: url.username, password: url.password, database: url.database,
            commandTimeout: .milliseconds(c.redisTimeoutMs))
    }
}

extension RedisURL {
    /// A cluster seed (the loader refuses unix sockets with `redis_cluster = true`).
    fileprivate var clusterNode: ClusterNode? {
        guard case .tcp(let address) = location else { return nil }
        return ClusterNode(host: address.host, port: address.port)
    }
}
