import IdempotencyCore
import NIOCore
import NIOExtras
import NIOHTTP1

/// The client side of the proxy: decides per request whether it is protected and hands it to
/// `ProtectedRequest` (buffered) or `PassthroughExchange` (streamed), then writes the answer.
///
/// NIO's pipelining handler in front of it delivers one request at a time, so there is one
/// request state, not a queue.
final class ProxyHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        case idle
        /// Unprotected: streaming to the upstream.
        case streaming(PassthroughExchange)
        /// Protected: collecting the body to fingerprint it.
        case buffering(head: HTTPRequestHead, key: String, body: ByteBuffer)
        /// Protected: body complete, the answer is being worked out (nil only for an instant
        /// while the body buffer is appended to).
        case processing(ProtectedRequest?)
        /// The answer went out before the request ended: the rest of the request is skipped.
        case draining
    }

    private let loop: LoopContext
    private var context: ChannelHandlerContext?
    private var state = State.idle
    private var clientAddress: String?
    private var requestVersion = HTTPVersion.http1_1
    private var keepAlive = true
    private var requestStart = NIODeadline.now()
    private var requestCounted = false

    /// Reads from the client pause while the upstream cannot take more.
    private var readGate = ReadGate()

    init(loop: LoopContext) {
        self.loop = loop
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        clientAddress = context.channel.remoteAddress?.ipAddress
    }

    // MARK: - inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): requestHead(head, context: context)
        case .body(let buffer): requestBody(buffer, context: context)
        case .end: requestEnd(context: context)
        }
    }

    private func requestHead(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        requestStart = .now()
        requestCounted = true
        loop.metrics.requestStarted()
        requestVersion = head.version
        keepAlive = head.isKeepAlive
        let c = loop.configuration
        guard loop.protectedMethods.contains(head.method.rawValue) else {
            return startPassthrough(head)
        }
        let key: String?
        do {
            key = try IdempotencyKey.parse(
                headerValues: head.headers[c.keyHeader], headerName: c.keyHeader, maxLength: c.maxKeyLength)
        } catch {
            return reject(.invalidKey(error.detail), outcome: .badRequest, closing: false)
        }
        guard let key else {
            if c.requireKey { return reject(.missingKey(header: c.keyHeader), outcome: .badRequest, closing: false) }
            return startPassthrough(head)
        }
        let declaredLength = head.headers.first(name: "content-length").flatMap(Int.init) ?? 0
        if declaredLength > c.maxRequestBody {
            // Closing spares reading a body we will not use.
            return reject(.bodyTooLarge(limit: c.maxRequestBody), outcome: .tooLarge, closing: true)
        }
        state = .buffering(head: head, key: key, body: context.channel.allocator.buffer(capacity: declaredLength))
        acceptBody(head)
    }

    /// Answers `Expect: 100-continue` once we know we want the body (never before a 4xx).
    private func acceptBody(_ head: HTTPRequestHead) {
        guard let context, head.headers[canonicalForm: "expect"].contains(where: { $0.lowercased() == "100-continue" })
        else { return }
        context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))), promise: nil)
    }

    private func requestBody(_ buffer: ByteBuffer, context: ChannelHandlerContext) {
        switch state {
        case .streaming(let exchange):
            exchange.requestBody(buffer)
        case .buffering(let head, let key, var body):
            state = .processing(nil)  // drop the reference so that the append does not copy
            guard body.readableBytes + buffer.readableBytes <= loop.configuration.maxRequestBody else {
                return reject(.bodyTooLarge(limit: loop.configuration.maxRequestBody), outcome: .tooLarge, closing: true)
            }
            var buffer = buffer
            body.writeBuffer(&buffer)
            state = .buffering(head: head, key: key, body: body)
        case .idle, .processing, .draining:
            break
        }
    }

    private func requestEnd(context: ChannelHandlerContext) {
        switch state {
        case .streaming(let exchange):
            exchange.requestEnd()
        case .buffering(let head, let key, let body):
            let request = ProtectedRequest(loop: loop, head: head, key: key, body: body, clientAddress: clientAddress, client: self)
            state = .processing(request)
            request.start()
        case .draining:
            state = .idle
            if !keepAlive { context.close(promise: nil) }
        case .idle, .processing:
            break
        }
    }

    private func startPassthrough(_ head: HTTPRequestHead) {
        state = .streaming(
            PassthroughExchange(handler: self, loop: loop, clientHead: head, clientAddress: clientAddress))
        acceptBody(head)
    }

    private func reject(_ problem: Problem, outcome: RequestOutcome, closing: Bool) {
        if closing { keepAlive = false }
        respond(ProxyResponse(problem: problem, allocator: ByteBufferAllocator()), outcome: outcome, requestEnded: false)
    }

    // MARK: - writing answers

    /// Writes a complete response. `requestEnded` false: the rest of the request is skipped.
    func respond(_ response: ProxyResponse, outcome: RequestOutcome, requestEnded: Bool) {
        guard let context, context.channel.isActive else {
            finishRequest(outcome: outcome)
            return
        }
        var headers = response.headers
        if !keepAlive { headers.replaceOrAdd(name: "Connection", value: "close") }
        let head = HTTPResponseHead(version: requestVersion, status: response.status, headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if response.body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(response.body))), promise: nil)
        }
        endResponse(context: context, outcome: outcome, requestEnded: requestEnded)
    }

    func writeStreamedHead(_ head: HTTPResponseHead) {
        guard let context else { return }
        var head = head
        // An HTTP/1.0 client learns where a body without a length ends only by the close.
        if head.version == .http1_0 && !head.headers.contains(name: "content-length") { keepAlive = false }
        if !keepAlive { head.headers.replaceOrAdd(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(head)), promise: nil)
    }

    /// Returns false when the client cannot take more for now.
    func writeStreamedBody(_ buffer: ByteBuffer) -> Bool {
        guard let context else { return true }
        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        return context.channel.isWritable
    }

    func finishStreamed(outcome: RequestOutcome, requestEnded: Bool) {
        guard let context else { return finishRequest(outcome: outcome) }
        endResponse(context: context, outcome: outcome, requestEnded: requestEnded)
    }

    /// The upstream failed after part of the response went out.
    func abortStreamed() {
        finishRequest(outcome: .upstreamError)
        state = .idle
        context?.close(promise: nil)
    }

    private func endResponse(context: ChannelHandlerContext, outcome: RequestOutcome, requestEnded: Bool) {
        let promise: EventLoopPromise<Void>? = keepAlive ? nil : context.eventLoop.makePromise()
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: promise)
        // Closing only our side while the client may still be sending keeps the kernel from
        // answering its bytes with a reset that could destroy the response in flight.
        let mode: CloseMode = requestEnded ? .all : .output
        promise?.futureResult.assumeIsolated().whenComplete { _ in context.close(mode: mode, promise: nil) }
        finishRequest(outcome: outcome)
        state = requestEnded ? .idle : .draining
        resumeReads()
    }

    private func finishRequest(outcome: RequestOutcome) {
        guard requestCounted else { return }
        requestCounted = false
        loop.metrics.count(outcome)
        loop.metrics.requestFinished(since: requestStart)
    }

    // MARK: - back-pressure

    func pauseReads() { readGate.pause() }

    func resumeReads() { readGate.resume(context) }

    func read(context: ChannelHandlerContext) { readGate.read(context) }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        switch state {
        case .streaming(let exchange): exchange.clientWritabilityChanged(isWritable: context.channel.isWritable)
        case .processing(let request?): request.clientWritabilityChanged(isWritable: context.channel.isWritable)
        default: break
        }
        context.fireChannelWritabilityChanged()
    }

    // MARK: - connection events

    func channelInactive(context: ChannelHandlerContext) {
        if case .streaming(let exchange) = state {
            exchange.clientClosed()
            finishRequest(outcome: .passthrough)
        }
        // A protected request in .processing carries on without us (SPEC §3 rule 10).
        if case .buffering = state { finishRequest(outcome: .badRequest) }
        self.context = nil
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Graceful shutdown (ChannelShouldQuiesceEvent) is handled by NIO's pipelining handler
        // in front of us: it closes idle connections and marks the last response `close`.
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
            // Slow or silent clients: cut off while we wait on them, never while they wait on us.
            switch state {
            case .idle, .buffering, .draining: context.close(promise: nil)
            case .streaming, .processing: break
            }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard let parserError = error as? HTTPParserError else {
            context.close(promise: nil)
            return
        }
        // Malformed HTTP: answer once if no response is under way, then close; the byte
        // stream cannot be trusted to find the next request.
        keepAlive = false
        switch state {
        case .idle, .buffering, .draining:
            let problem: Problem =
                parserError == .headerOverflow
                ? .headersTooLarge(limit: ProxyServer.maxRequestHeaderBytes)
                : .malformedRequest("The request is not valid HTTP/1.1 (\(parserError)).")
            if !requestCounted {
                requestStart = .now()
                requestCounted = true
                loop.metrics.requestStarted()
            }
            respond(ProxyResponse(problem: problem, allocator: context.channel.allocator), outcome: .badRequest, requestEnded: true)
        case .streaming(let exchange):
            exchange.clientClosed()
            finishRequest(outcome: .passthrough)
            context.close(promise: nil)
        case .processing:
            context.close(promise: nil)
        }
    }
}
