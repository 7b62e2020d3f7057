import IdempotencyCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOPosix
import NIOSSL
import PostgresNIO
import RedisClient

/// The running proxy: the client listener, the admin listener and one `LoopContext` per event loop.
public final class ProxyServer: Sendable {
    /// How often expired rows of the long-term store are deleted: well within the
    /// minute docs/behaviour.md allows; tests shorten it.
    public static let sweepInterval = TimeAmount.seconds(10)

    public let configuration: ProxyConfiguration
    public let metrics: ProxyMetrics
    /// Where the proxy listens (the real port when `listen` asked for port 0).
    public let localAddress: SocketAddress
    public let adminAddress: SocketAddress?

    private let logger: Logger
    private let group: MultiThreadedEventLoopGroup
    private let contexts: [ObjectIdentifier: NIOLoopBound<LoopContext>]
    /// Emptied on its loop before the event loops stop: the helper fails a promise of the group
    /// when it deinits, which must not happen while the group shuts down (a closure that still
    /// held it, released by the loop after it ran, once did that to a stopped loop).
    private let quiesce: NIOLoopBoundBox<ServerQuiescingHelper?>
    private let adminChannel: (any Channel)?
    private let accessLog: AccessLogWriter?
    private let stopped = NIOLockedValueBox(false)

    /// Binds both listeners and connects to Redis (without waiting for it: a Redis that is down
    /// at start is handled like one that goes down later).
    /// `waitPollInterval`: see `LoopContext.waitPollInterval`; tests stretch it to prove that
    /// Pub/Sub alone wakes waiting retries.
    public static func start(
        configuration: ProxyConfiguration,
        logger: Logger,
        threads: Int = System.coreCount,
        waitPollInterval: TimeAmount = .milliseconds(100),
        sweepInterval: TimeAmount = ProxyServer.sweepInterval
    ) async throws -> ProxyServer {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        do {
            return try await start(
                configuration: configuration, logger: logger, group: group, waitPollInterval: waitPollInterval,
                sweepInterval: sweepInterval)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    private static func start(
        configuration: ProxyConfiguration,
        logger: Logger,
        group: MultiThreadedEventLoopGroup,
        waitPollInterval: TimeAmount,
        sweepInterval: TimeAmount
    ) async throws -> ProxyServer {
        // One table for every loop, which the metrics' route labels are made from.
        let routes = RouteTable(configuration)
        let metrics = ProxyMetrics(routes: routes.policies.map(\.route))
        let outages = Outages()
        let redisTLS: RedisTLS?
        let upstreamTLS: UpstreamTLS?
        let listenerTLS: NIOSSLContext?
        let postgresTLS: PostgresConnection.Configuration.TLS
        do {
            redisTLS = try TLSContexts.redis(configuration)
            upstreamTLS = try TLSContexts.upstream(configuration)
            listenerTLS = try TLSContexts.listener(configuration)
            postgresTLS = try TLSContexts.postgres(configuration)
        } catch {
            throw StartError("\(error)")
        }
        let loops = Array(group.makeIterator())
        var postgres: PostgresWiring?
        if let url = configuration.postgresURL {
            let wiring = PostgresWiring(url: url, tls: postgresTLS, configuration: configuration, loops: loops.count)
            try await wiring.prepare(on: group.next(), logger: logger)
            postgres = wiring
        }
        var contexts: [ObjectIdentifier: NIOLoopBound<LoopContext>] = [:]
        let sentinelLog = SentinelMasterLog()
        let accessLog = configuration.accessLog == .off ? nil : AccessLogWriter()
        for (index, loop) in loops.enumerated() {
            contexts[ObjectIdentifier(loop)] = try await loop.submit { [postgres] in
                let redis = RedisWiring.make(
                    configuration: configuration, tls: redisTLS, eventLoop: loop, metrics: metrics, sentinelLog: sentinelLog,
                    logger: logger)
                let longTerm = postgres?.store(on: loop, loop: index, metrics: metrics, logger: logger)
                // Every proxy sweeps from one of its loops; the sweep's lock keeps it to one
                // proxy of a fleet at a time.
                let sweeper = index == 0 ? postgres.map {
                    RecordSweeper(
                        eventLoop: loop, store: $0.store(on: loop, loop: nil, connections: 1, metrics: metrics, logger: logger),
                        interval: sweepInterval, logger: logger)
                } : nil
                sweeper?.start()
                let pool = UpstreamPool(
                    eventLoop: loop, upstream: configuration.upstream, tls: upstreamTLS,
                    connectTimeout: .milliseconds(min(configuration.upstreamTimeoutMs, 5_000)), logger: logger,
                    metrics: metrics)
                let context = LoopContext(
                    eventLoop: loop, configuration: configuration, metrics: metrics, logger: logger, store: redis.store,
                    longTermStore: longTerm, sweeper: sweeper, outages: outages, subscriber: redis.subscriber, pool: pool,
                    waitPollInterval: waitPollInterval, accessLog: accessLog, routes: routes)
                return NIOLoopBound(context, eventLoop: loop)
            }.get()
        }
        let frozenContexts = contexts
        let acceptLoop = group.next()
        let quiesce = try await acceptLoop.submit {
            NIOLoopBoundBox(Optional(ServerQuiescingHelper(group: group)), eventLoop: acceptLoop)
        }.get()

        let listen = configuration.listen
        let descriptors = DescriptorLimit.raise()
        let maxConnections =
            configuration.maxConnections ?? ConnectionShedding.defaultMaxConnections(descriptorLimit: descriptors.now)
        logger.info(
            "descriptor limit and max_connections",
            metadata: [
                "descriptors": "\(descriptors.now)", "raised_from": "\(descriptors.before)",
                "max_connections": "\(maxConnections)",
            ])
        let shedEverywhere: @Sendable () -> Void = {
            for (_, context) in frozenContexts { context.eventLoop.execute { context.value.shedConnections() } }
        }
        let serverChannel = try await ServerBootstrap(group: acceptLoop, childGroup: group)
            .serverChannelOption(.backlog, value: 1_024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let helper = quiesce.value else { throw ChannelError.ioOnClosedChannel }
                    let handlers = channel.pipeline.syncOperations
                    try handlers.addHandler(
                        ConnectionLimiter(cap: maxConnections, metrics: metrics, logger: logger, shed: shedEverywhere))
                    try handlers.addHandler(helper.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let loop = frozenContexts[ObjectIdentifier(channel.eventLoop)]?.value else {
                        preconditionFailure("no loop context for a channel of our own group")
                    }
                    // HTTPS: TLS in front of the same handler, whose read timeout also cuts off a
                    // client that stalls in the handshake (nothing reaches it meanwhile).
                    if let listenerTLS {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: listenerTLS))
                    }
                    // ProxyHandler parses requests, frames responses and serves pipelined requests itself.
                    try channel.pipeline.syncOperations.addHandler(ProxyHandler(loop: loop))
                }
            }
            .bind(host: listen.host, port: listen.port)
            .get()

        var adminChannel: (any Channel)?
        if let admin = configuration.adminListen {
            do {
                adminChannel = try await AdminServer.bind(
                    address: admin, group: group, contexts: frozenContexts, metrics: metrics,
                    adminToken: configuration.adminToken)
            } catch {
                try? await serverChannel.close()
                throw error
            }
        }
        let server = ProxyServer(
            configuration: configuration, metrics: metrics, localAddress: serverChannel.localAddress!,
            adminAddress: adminChannel?.localAddress, logger: logger, group: group, contexts: frozenContexts,
            quiesce: quiesce, adminChannel: adminChannel, accessLog: accessLog)
        let redis = configuration.redisURLs.map(\.description).joined(separator: ",")
        logger.info(
            "idemproxy listening",
            metadata: [
                "listen": "\(display(server.localAddress))", "upstream": "\(configuration.upstream)",
                "admin": "\(server.adminAddress.map(display) ?? "off")", "redis": "\(redis)",
                "postgres": "\(configuration.postgresURL.map { "\($0)" } ?? "off")",
            ])
        return server
    }

    /// `127.0.0.1:8081` rather than NIO's `[IPv4]127.0.0.1/127.0.0.1:8081`.
    private static func display(_ address: SocketAddress) -> String {
        guard let ip = address.ipAddress, let port = address.port else { return "\(address)" }
        return HostPort(host: ip, port: port).description
    }

    private init(
        configuration: ProxyConfiguration, metrics: ProxyMetrics, localAddress: SocketAddress,
        adminAddress: SocketAddress?, logger: Logger, group: MultiThreadedEventLoopGroup,
        contexts: [ObjectIdentifier: NIOLoopBound<LoopContext>], quiesce: NIOLoopBoundBox<ServerQuiescingHelper?>,
        adminChannel: (any Channel)?, accessLog: AccessLogWriter?
    ) {
        self.accessLog = accessLog
        self.configuration = configuration
        self.metrics = metrics
        self.localAddress = localAddress
        self.adminAddress = adminAddress
        self.logger = logger
        self.group = group
        self.contexts = contexts
        self.quiesce = quiesce
        self.adminChannel = adminChannel
    }

    /// Stops accepting, lets open requests finish (protected ones until their result is
    /// stored, even if their client left) for at most `grace`, then closes everything.
    public func shutdown(grace: TimeAmount) async {
        let alreadyStopped = stopped.withLockedValue { stopped in
            defer { stopped = true }
            return stopped
        }
        guard !alreadyStopped else { return }
        let deadline = NIODeadline.now() + grace
        logger.info("shutting down: no new connections, draining requests in flight")
        let connectionsClosed = NIOLockedValueBox(false)
        let drained = quiesce.eventLoop.makePromise(of: Void.self)
        quiesce.eventLoop.execute { [quiesce] in
            if let helper = quiesce.value { helper.initiateShutdown(promise: drained) } else { drained.succeed() }
        }
        drained.futureResult.whenComplete { _ in connectionsClosed.withLockedValue { $0 = true } }
        while NIODeadline.now() < deadline {
            let busy = await protectedInFlight()
            if connectionsClosed.withLockedValue({ $0 }) && busy == 0 { break }
            try? await Task.sleep(for: .milliseconds(20))
        }
        let left = await protectedInFlight()
        if left > 0 { logger.warning("shutdown grace ended with protected requests unfinished", metadata: ["count": "\(left)"]) }
        try? await adminChannel?.close()
        for (_, context) in contexts {
            try? await context.eventLoop.submit { context.value.close() }.get()
        }
        try? await quiesce.eventLoop.submit { [quiesce] in quiesce.value = nil }.get()
        try? await group.shutdownGracefully()
        accessLog?.shutdown()
        logger.info("stopped")
    }

    private func protectedInFlight() async -> Int {
        var total = 0
        for (_, context) in contexts {
            total += (try? await context.eventLoop.submit { context.value.protectedInFlight }.get()) ?? 0
        }
        return total
    }
}
