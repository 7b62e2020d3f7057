import IdempotencyCore
import Logging
import NIOCore
import RedisClient

/// Builds one loop's Redis side from the configuration: a connection (or cluster or Sentinel
/// client), its store and its Pub/Sub subscriber, with their logging. The only place that picks
/// between a single server, a cluster and Sentinel.
enum RedisWiring {
    static func make(
        configuration: ProxyConfiguration, tls: RedisTLS?, eventLoop: any EventLoop, metrics: ProxyMetrics,
        sentinelLog: SentinelMasterLog, logger: Logger
    ) -> (store: IdempotencyStore, subscriber: any RedisPubSub) {
        var redisConfiguration = Self.redisConfiguration(configuration)
        redisConfiguration.tls = tls
        var redis: any RedisCommands
        var subscriber: any RedisPubSub
        if !configuration.redisSentinel.isEmpty {
            let sentinel = RedisSentinelClient(
                masterName: configuration.redisSentinel, sentinels: configuration.redisURLs.compactMap(\.clusterNode),
                sentinelPassword: configuration.redisSentinelPassword.isEmpty ? nil : configuration.redisSentinelPassword,
                configuration: redisConfiguration, eventLoop: eventLoop)
            // Waiting retries listen on the master the Sentinels name, and follow it.
            let follower = RedisSubscriber(eventLoop: eventLoop)
            sentinel.onMasterChange = { [weak sentinel] new in
                guard let sentinel else { return }
                follower.move(to: sentinel.masterConfiguration(new))
                sentinelLog.masterChanged(to: new, logger: logger)
            }
            sentinel.onMasterUnknown = { reason in
                logger.warning(
                    "no Redis master known from the Sentinels; requests are handled as with Redis down until one is",
                    metadata: ["reason": "\(reason)"])
            }
            redis = sentinel
            subscriber = follower
        } else if configuration.redisCluster {
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
        redis.onAvailabilityChange = { server, available, error in
            if available {
                logger.info("Redis connection up", metadata: ["redis": "\(server)"])
            } else {
                logger.warning(
                    "Redis unavailable; reconnecting", metadata: ["redis": "\(server)", "error": "\(error.map { "\($0)" } ?? "")"])
            }
        }
        let store = IdempotencyStore(
            redis: redis, metrics: metrics, publishCommand: subscriber.publishCommand,
            // Only a proxy that lets some retry wait (at the top level or on a route) publishes.
            wakeOnCompletion: ([configuration] + configuration.routes.map(\.settings)).contains { $0.inflightWaitMs > 0 })
        return (store, subscriber)
    }

    static func redisConfiguration(_ c: ProxyConfiguration) -> RedisConfiguration {
        let url = c.redisURL
        let address: RedisConfiguration.Address
        switch url.location {
        case .tcp(let hostPort): address = .tcp(host: hostPort.host, port: hostPort.port)
        case .unix(let path): address = .unix(path: path)
        }
        return RedisConfiguration(
            address: address, username: url.username, password: url.password, database: c.redisDatabase,
            commandTimeout: .milliseconds(c.redisTimeoutMs))
    }
}

extension RedisURL {
    /// A cluster seed or a Sentinel (the loader refuses unix sockets for both).
    fileprivate var clusterNode: ClusterNode? {
        guard case .tcp(let address) = location else { return nil }
        return ClusterNode(host: address.host, port: address.port)
    }
}
