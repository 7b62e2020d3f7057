import IdempotencyCore
import NIOCore
import NIOHTTP1
import NIOPosix

/// The admin listener of docs/behaviour.md §5: `/healthz`, `/readyz`, `/metrics`, and the records
/// API when `admin_token` is set. It shares the proxy's event loops; `/readyz` and the records API
/// ask the stores through the loop's own connections.
enum AdminServer {
    static func bind(
        address: HostPort,
        group: any EventLoopGroup,
        contexts: [ObjectIdentifier: NIOLoopBound<LoopContext>],
        metrics: ProxyMetrics,
        adminToken: String
    ) async throws -> any Channel {
        let token = adminToken.isEmpty ? nil : AdminToken(adminToken)
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let loop = contexts[ObjectIdentifier(channel.eventLoop)]?.value else {
                        preconditionFailure("no loop context for a channel of our own group")
                    }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(loop: loop, metrics: metrics, token: token))
                }
            }
            .bind(host: address.host, port: address.port)
            .get()
    }
}

final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let loop: LoopContext
    private let metrics: ProxyMetrics
    /// nil: no records API (its paths are not found).
    private let token: AdminToken?
    private var head: HTTPRequestHead?

    init(loop: LoopContext, metrics: ProxyMetrics, token: AdminToken?) {
        self.loop = loop
        self.metrics = metrics
        self.token = token
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            route(head, context: context)
        }
    }

    private func route(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let parts = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = parts.first.map(String.init) ?? head.uri
        if path.hasPrefix("/records/") {
            guard let token else { return send(RecordsAPI.Answer(.recordsAPIOff), head: head, context: context) }
            return records(head, id: path.dropFirst("/records/".count), query: parts.dropFirst().first, token: token, context: context)
        }
        guard head.method == .GET || head.method == .HEAD else {
            return send(.methodNotAllowed, "only GET\n", head: head, context: context)
        }
        switch path {
        case "/healthz":
            send(.ok, "ok\n", head: head, context: context)
        case "/readyz":
            // Every configured store must answer (docs/behaviour.md §3, long-term store); both are asked at once.
            let redis = context.eventLoop.makePromise(of: String?.self)
            let postgres = context.eventLoop.makePromise(of: String?.self)
            loop.store.ping { redis.succeed($0.failureDescription) }
            if let longTerm = loop.longTermStore {
                longTerm.ping { postgres.succeed($0.failureDescription) }
            } else {
                postgres.succeed(nil)
            }
            redis.futureResult.and(postgres.futureResult).assumeIsolated().whenSuccess { redis, postgres in
                let problems = [redis.map { "Redis: \($0)" }, postgres].compactMap { $0 }
                if problems.isEmpty {
                    self.send(.ok, "ready\(self.loop.store.serverInUse.map { " (Redis \($0))" } ?? "")\n", head: head, context: context)
                } else {
                    self.send(.serviceUnavailable, "not ready: \(problems.joined(separator: "; "))\n", head: head, context: context)
                }
            }
        case "/metrics":
            send(.ok, metrics.render(), contentType: "text/plain; version=0.0.4; charset=utf-8", head: head, context: context)
        default:
            send(.notFound, "not found; try /healthz, /readyz or /metrics\n", head: head, context: context)
        }
    }

    /// `GET` and `DELETE /records/ID[?force=true]`, with the token.
    private func records(
        _ head: HTTPRequestHead, id: Substring, query: Substring?, token: AdminToken, context: ChannelHandlerContext
    ) {
        let api = RecordsAPI(loop: loop)
        let answer = { (answer: RecordsAPI.Answer) in self.send(answer, head: head, context: context) }
        guard token.admits(authorization: head.headers["Authorization"]) else { return answer(.init(.adminTokenRequired)) }
        guard let id = RecordReport.recordID(id) else { return answer(.init(.invalidRecordID)) }
        switch head.method {
        case .GET, .HEAD:
            api.get(id: id, answer: answer)
        case .DELETE:
            let force = query?.split(separator: "&").contains("force=true") ?? false
            api.delete(id: id, force: force, answer: answer)
        default:
            var refused = RecordsAPI.Answer(.recordMethodNotAllowed)
            refused.headers.append(("Allow", "GET, HEAD, DELETE"))
            answer(refused)
        }
    }

    private func send(_ status: HTTPResponseStatus, _ text: String, head: HTTPRequestHead, context: ChannelHandlerContext) {
        send(status, Array(text.utf8), contentType: "text/plain; charset=utf-8", head: head, context: context)
    }

    private func send(_ answer: RecordsAPI.Answer, head: HTTPRequestHead, context: ChannelHandlerContext) {
        send(
            HTTPResponseStatus(statusCode: answer.status), answer.body, contentType: answer.status == 204 ? nil : answer.contentType,
            extraHeaders: answer.headers, head: head, context: context)
    }

    private func send(
        _ status: HTTPResponseStatus, _ body: [UInt8], contentType: String?, extraHeaders: [(String, String)] = [],
        head: HTTPRequestHead, context: ChannelHandlerContext
    ) {
        guard context.channel.isActive else { return }
        var headers = HTTPHeaders(extraHeaders)
        if let contentType { headers.add(name: "Content-Type", value: contentType) }
        if status != .noContent { headers.add(name: "Content-Length", value: String(body.count)) }
        if !head.isKeepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if head.method != .HEAD && !body.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        let keepAlive = head.isKeepAlive
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            if !keepAlive { context.close(promise: nil) }
        }
    }
}

extension Result {
    /// nil on success, else what failed, for `/readyz`.
    fileprivate var failureDescription: String? {
        guard case .failure(let error) = self else { return nil }
        return "\(error)"
    }
}
