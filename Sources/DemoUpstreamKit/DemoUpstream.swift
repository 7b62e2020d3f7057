import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// A deliberately non-idempotent payments API (docs/behaviour.md §7): every `POST /charges` creates a new
/// charge. Besides its documented endpoints (docs/behaviour.md §7) it has a few that tests use to make an upstream
/// misbehave on demand (a chosen status, a slow answer, a large body, a dropped connection).
///
///     POST /charges          201 {"id":"ch_N",...}, a new charge every call
///     GET  /stats            {"charges": N, "distinct_keys": M}
///     POST /stats/reset      zeroes both
///     ANY  /echo             200, the request as the upstream saw it (method, target, headers, body)
///     ANY  /status/NNN       status NNN with a small body
///     ANY  /sleep/MS         answers after MS milliseconds
///     ANY  /big/BYTES        200 with a body of BYTES bytes
///     ANY  /chunked/BYTES    200 with a chunked body of BYTES bytes
///     ANY  /drop             reads the request, closes without answering
///     ANY  /hop              200 with hop-by-hop response headers a proxy must strip
///
/// Any endpoint but `/stats` takes `?delay=MS`: the request counts as executed at once, the
/// answer leaves MS milliseconds later (for in-flight races).
///
/// Every request except `/stats` counts as one execution (`executions`), by path.
public final class DemoUpstream: Sendable {
    public struct Counters: Sendable {
        public var charges = 0
        public var distinctKeys = Set<String>()
        /// Executions by path (query excluded), everything but /stats.
        public var executions: [String: Int] = [:]
        /// Values of the request headers seen last, by lower-cased name, for header tests.
        public var lastHeaders: [(String, String)] = []
        /// Client connections accepted.
        public var connections = 0
    }

    public let localAddress: SocketAddress
    private let channel: any Channel
    private let group: MultiThreadedEventLoopGroup
    private let counters: NIOLockedValueBox<Counters>

    public var port: Int { localAddress.port ?? 0 }

    public func snapshot() -> Counters { counters.withLockedValue { $0 } }
    public func executions(_ path: String) -> Int { counters.withLockedValue { $0.executions[path] ?? 0 } }
    public func reset() { counters.withLockedValue { $0 = Counters() } }

    /// `tls`: serve HTTPS with this server context (tests of `https://` upstreams).
    public static func start(
        host: String = "127.0.0.1", port: Int = 0, latency: TimeAmount = .zero, threads: Int = 1, tls: NIOSSLContext? = nil
    ) async throws -> DemoUpstream {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let counters = NIOLockedValueBox(Counters())
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1_024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    counters.withLockedValue { $0.connections += 1 }
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(DemoUpstreamHandler(counters: counters, latency: latency))
                }
            }
            .bind(host: host, port: port)
            .get()
        return DemoUpstream(localAddress: channel.localAddress!, channel: channel, group: group, counters: counters)
    }

    private init(localAddress: SocketAddress, channel: any Channel, group: MultiThreadedEventLoopGroup, counters: NIOLockedValueBox<Counters>) {
        self.localAddress = localAddress
        self.channel = channel
        self.group = group
        self.counters = counters
    }

    public func stop() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
    }

    /// Runs until the channel closes (used by the executable).
    public func wait() async throws {
        try await channel.closeFuture.get()
    }
}

final class DemoUpstreamHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let counters: NIOLockedValueBox<DemoUpstream.Counters>
    private let latency: TimeAmount
    private var head: HTTPRequestHead?
    private var body = ByteBuffer()

    init(counters: NIOLockedValueBox<DemoUpstream.Counters>, latency: TimeAmount) {
        self.counters = counters
        self.latency = latency
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body.clear()
        case .body(var buffer):
            body.writeBuffer(&buffer)
        case .end:
            guard let head else { return }
            self.head = nil
            handle(head, body: body, context: context)
        }
    }

    private func handle(_ head: HTTPRequestHead, body: ByteBuffer, context: ChannelHandlerContext) {
        let path = String(head.uri.split(separator: "?", maxSplits: 1).first ?? "")
        let parts = path.split(separator: "/").map(String.init)
        if path != "/stats" && path != "/stats/reset" {
            counters.withLockedValue { c in
                c.executions[path, default: 0] += 1
                c.lastHeaders = head.headers.map { ($0.name.lowercased(), $0.value) }
            }
        }
        if let delay = Self.delay(in: head.uri), delay > 0, !path.hasPrefix("/stats") {
            context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(delay)) {
                self.respond(head, path: path, parts: parts, body: body, context: context)
            }
        } else {
            respond(head, path: path, parts: parts, body: body, context: context)
        }
    }

    private static func delay(in uri: String) -> Int64? {
        guard let query = uri.split(separator: "?", maxSplits: 1).dropFirst().first else { return nil }
        for pair in query.split(separator: "&") where pair.hasPrefix("delay=") {
            return Int64(pair.dropFirst("delay=".count))
        }
        return nil
    }

    private func respond(_ head: HTTPRequestHead, path: String, parts: [String], body: ByteBuffer, context: ChannelHandlerContext) {
        switch (head.method, parts.first ?? "") {
        case (.POST, "charges") where parts.count == 1:
            let key = head.headers["idempotency-key"].first
            let id = counters.withLockedValue { c -> Int in
                c.charges += 1
                if let key { c.distinctKeys.insert(key) }
                return c.charges
            }
            let json = "{\"id\":\"ch_\(id)\",\"object\":\"charge\",\"amount_bytes\":\(body.readableBytes)}"
            reply(.created, json, contentType: "application/json", head: head, context: context, delay: latency)
        case (.GET, "stats"):
            let (charges, keys) = counters.withLockedValue { ($0.charges, $0.distinctKeys.count) }
            reply(.ok, "{\"charges\": \(charges), \"distinct_keys\": \(keys)}", contentType: "application/json", head: head, context: context)
        case (.POST, "stats") where parts.count == 2 && parts[1] == "reset":
            counters.withLockedValue { c in
                c.charges = 0
                c.distinctKeys.removeAll()
                c.executions.removeAll()
            }
            reply(.ok, "{\"charges\": 0, \"distinct_keys\": 0}", contentType: "application/json", head: head, context: context)
        case (_, "echo"):
            var text = "\(head.method.rawValue) \(head.uri)\n"
            for (name, value) in head.headers { text += "\(name): \(value)\n" }
            text += "\n" + String(buffer: body)
            reply(.ok, text, head: head, context: context)
        case (_, "status") where parts.count == 2:
            let code = Int(parts[1]) ?? 500
            reply(HTTPResponseStatus(statusCode: code), "status \(code)\n", head: head, context: context, delay: latency)
        case (_, "sleep") where parts.count == 2:
            let ms = Int64(parts[1]) ?? 0
            reply(.ok, "slept \(ms)ms\n", head: head, context: context, delay: .milliseconds(ms))
        case (_, "big") where parts.count == 2:
            let size = Int(parts[1]) ?? 0
            reply(.ok, String(repeating: "x", count: size), head: head, context: context)
        case (_, "chunked") where parts.count == 2:
            sendChunked(size: Int(parts[1]) ?? 0, head: head, context: context)
        case (_, "drop"):
            context.close(promise: nil)
        case (_, "hop"):
            var headers = HTTPHeaders()
            headers.add(name: "Content-Length", value: "2")
            headers.add(name: "Connection", value: "keep-alive, X-Hop-Response")
            headers.add(name: "X-Hop-Response", value: "secret")
            headers.add(name: "Keep-Alive", value: "timeout=5")
            headers.add(name: "Proxy-Authenticate", value: "Basic")
            headers.add(name: "Upgrade", value: "h2c")
            headers.add(name: "X-End-To-End", value: "kept")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .ok, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "ok")))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        default:
            reply(.notFound, "no such endpoint\n", head: head, context: context)
        }
    }

    private func reply(
        _ status: HTTPResponseStatus, _ text: String, contentType: String = "text/plain",
        head: HTTPRequestHead, context: ChannelHandlerContext, delay: TimeAmount = .zero
    ) {
        let send = {
            guard context.channel.isActive else { return }
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: contentType)
            headers.add(name: "Content-Length", value: String(text.utf8.count))
            context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
            context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
            context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
            if !head.isKeepAlive { context.close(promise: nil) }
        }
        if delay > .zero {
            context.eventLoop.assumeIsolated().scheduleTask(in: delay) { send() }
        } else {
            send()
        }
    }

    private func sendChunked(size: Int, head: HTTPRequestHead, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "text/plain")
        headers.add(name: "Transfer-Encoding", value: "chunked")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .ok, headers: headers))), promise: nil)
        var left = size
        while left > 0 {
            let n = min(left, 16_384)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(repeating: UInt8(ascii: "c"), count: n)))), promise: nil)
            left -= n
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}
