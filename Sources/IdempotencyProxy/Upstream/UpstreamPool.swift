import IdempotencyCore
import Logging
import NIOCore
import NIOPosix
import NIOSSL

/// Keep-alive connections to the upstream, one pool per event loop so that an exchange never
/// leaves the loop of the client connection that caused it.
final class UpstreamPool {
    /// A connection unused for this long may have been closed by the upstream's own keep-alive
    /// timer (commonly 5 s); reusing it would risk a request lost in that race, so it is retired.
    static let maxIdleTime = TimeAmount.seconds(4)
    /// The same limit for requests of protected methods. If the upstream closes a connection just
    /// as it is reused, such a request gets 502 and its claim is kept (rule 8: nobody can tell
    /// whether the upstream acted), so retries get 409 until `lock_ttl`. A connection that
    /// carried a request within the last second is far from any common keep-alive timeout;
    /// otherwise a fresh one costs a loopback connect.
    static let maxIdleTimeForProtected = TimeAmount.seconds(1)
    /// Idle connections kept per loop; enough for the concurrency one loop serves.
    static let maxIdle = 256

    /// Opens a new connection to the upstream: a channel whose only handler is the
    /// `UpstreamConnection` it returns. A test on an `EmbeddedEventLoop` gives its own.
    typealias Connector = () -> EventLoopFuture<UpstreamConnection>

    private let eventLoop: any EventLoop
    private let upstream: UpstreamURL
    private let tls: UpstreamTLS?
    private let connectTimeout: TimeAmount
    private let logger: Logger
    private let metrics: ProxyMetrics?
    private var idle: [UpstreamConnection] = []
    private var closed = false
    private let connector: Connector?

    init(
        eventLoop: any EventLoop, upstream: UpstreamURL, tls: UpstreamTLS? = nil, connectTimeout: TimeAmount,
        logger: Logger, metrics: ProxyMetrics? = nil, connector: Connector? = nil
    ) {
        self.logger = logger
        self.metrics = metrics
        self.tls = tls
        self.eventLoop = eventLoop
        self.upstream = upstream
        self.connectTimeout = connectTimeout
        self.connector = connector
    }

    /// A ready connection: a pooled one idle for less than `freshWithin`, or a new one.
    /// Failure means nothing was sent.
    func acquire(
        freshWithin: TimeAmount = maxIdleTime, _ completion: @escaping (Result<UpstreamConnection, Error>) -> Void
    ) {
        if let connection = takeIdle(freshWithin: freshWithin) { return completion(.success(connection)) }
        connect(completion)
    }

    /// A pooled connection idle for less than `freshWithin`, if there is one: `acquire`
    /// without a callback, for the hot path.
    func takeIdle(freshWithin: TimeAmount = maxIdleTime) -> UpstreamConnection? {
        let now = NIODeadline.now()
        // The most recently used connection is last.
        while let connection = idle.last {
            let idleFor = now - connection.idleSince
            guard connection.canBeReused && idleFor < Self.maxIdleTime else {
                idle.removeLast()
                connection.abandon()
                continue
            }
            guard idleFor < freshWithin else { break }  // the others are older still
            idle.removeLast()
            return connection
        }
        return nil
    }

    /// Hands a connection back after its exchange; it is kept only if it can carry another.
    func release(_ connection: UpstreamConnection) {
        guard !closed, connection.canBeReused, idle.count < Self.maxIdle else {
            connection.abandon()
            return
        }
        connection.idleSince = .now()
        idle.append(connection)
    }

    func close() {
        closed = true
        for connection in idle { connection.abandon() }
        idle.removeAll()
    }

    private func connect(_ completion: @escaping (Result<UpstreamConnection, Error>) -> Void) {
        (connector ?? connectOverTCP)().assumeIsolated().whenComplete { result in
            if case .failure(let error) = result, error is UpstreamTLSError { self.metrics?.upstreamTLSFailed() }
            completion(result)
        }
    }

    /// For `https://`, the connection is made once its TLS handshake is (`UpstreamHandshake`),
    /// within the same connect timeout; it is then pooled and kept alive like a plain one, so a
    /// handshake is paid once per connection, not per request.
    private func connectOverTCP() -> EventLoopFuture<UpstreamConnection> {
        let tls = self.tls
        let timeout = connectTimeout
        return ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { [logger] channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let tls {
                        try sync.addHandler(NIOSSLClientHandler(context: tls.context, serverHostname: tls.serverName))
                        try sync.addHandler(UpstreamHandshake(eventLoop: channel.eventLoop, timeout: timeout, serverName: tls.serverName))
                    }
                    try sync.addHandler(UpstreamConnection(logger: logger))
                }
            }
            .connect(host: upstream.host, port: upstream.port)
            .flatMap { channel in
                guard tls != nil else { return channel.eventLoop.makeSucceededFuture(channel) }
                do {
                    return try channel.pipeline.syncOperations.handler(type: UpstreamHandshake.self).done.map { channel }
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
            .flatMapThrowing { channel in try channel.pipeline.syncOperations.handler(type: UpstreamConnection.self) }
    }
}
