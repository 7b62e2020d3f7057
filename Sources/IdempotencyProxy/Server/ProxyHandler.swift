import HTTPWire
import IdempotencyCore
import NIOCore
import NIOHTTP1

/// The client side of the proxy: decides per request whether it is protected and hands it to
/// `ProtectedRequest` (buffered) or `PassthroughExchange` (streamed), then writes the answer.
///
/// It is the only handler on a client connection: it parses requests itself (`RequestParser`)
/// and writes response bytes itself (`ResponseWriter`), which spares NIO's HTTP handlers and
/// their per-header strings on the hot path. It serves one request at a time: requests a client
/// pipelines behind the current one wait in `pipelined` (reads pause meanwhile) and are taken
/// up, in order, when the current one is answered.
final class ProxyHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum State {
        case idle
        /// Unprotected: streaming to the upstream.
        case streaming(PassthroughExchange)
        /// Protected: collecting the body to fingerprint it.
        case buffering(head: RequestHead, key: String, body: ByteBuffer)
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
    private var requestIsHEAD = false
    private var keepAlive = true
    /// Graceful shutdown: each connection closes after its current response.
    private var quiescing = false
    private var writer = ResponseWriter()
    /// The response bytes not yet handed to the channel (see `emit`).
    private var gathered: ByteBuffer?
    /// Response bytes were handed to the channel and not flushed yet.
    private var unflushed = false
    /// Parts of requests that arrived while an earlier one was still being answered.
    private var pipelined = CircularBuffer<RequestParser.Part>()
    private var parser = RequestParser()
    private var requestStart = NIODeadline.now()
    private var requestCounted = false

    /// Reads from the client pause while the upstream cannot take more.
    private var readGate = ReadGate()

    /// Slow or silent clients are cut off after this long without a read, but only while the
    /// proxy waits on them, never while they wait on the upstream.
    private let readTimeout: TimeAmount
    private var lastRead = NIODeadline.now()
    /// Checks for a silent client; re-armed from `lastRead` rather than on every read.
    private var idleCheck: Scheduled<Void>?
    /// While no request is under way, the next head must arrive whole by this time: a client
    /// trickling a head (or empty lines) a byte at a time is never silent, but is cut off too.
    private var headDeadline: NIODeadline?

    init(loop: LoopContext, readTimeout: TimeAmount) {
        self.loop = loop
        self.readTimeout = readTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        clientAddress = context.channel.remoteAddress?.ipAddress
        armIdleCheck(at: .now() + readTimeout, context: context)
    }

    private func armIdleCheck(at deadline: NIODeadline, context: ChannelHandlerContext) {
        idleCheck = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
            var silentUntil = self.lastRead + self.readTimeout
            if self.isIdle, let headDeadline = self.headDeadline { silentUntil = min(silentUntil, headDeadline) }
            guard NIODeadline.now() >= silentUntil else {
                return self.armIdleCheck(at: silentUntil, context: context)
            }
            switch self.state {
            case .idle, .buffering, .draining: context.close(promise: nil)
            case .streaming(let exchange) where !exchange.requestEnded: context.close(promise: nil)
            case .streaming, .processing: self.armIdleCheck(at: .now() + self.readTimeout, context: context)
            }
        }
    }

    // MARK: - inbound

    func channelReadComplete(context: ChannelHandlerContext) {
        lastRead = .now()
        if case .streaming(let exchange) = state { exchange.flushUpstream() }
        context.fireChannelReadComplete()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        do {
            try parser.feed(unwrapInboundIn(data)) { part in
                guard self.context != nil else { return }
                if !pipelined.isEmpty || mustWait(part) {
                    pipelined.append(part)
                    readGate.pause(.pipelined)
                } else {
                    handle(part, context: context)
                }
            }
        } catch {
            malformed(error, context: context)
        }
        if !isIdle {
            headDeadline = nil
        } else if headDeadline == nil {
            headDeadline = .now() + readTimeout
        }
    }

    /// A new request waits until the current one is answered; the current one's parts do not.
    private func mustWait(_ part: RequestParser.Part) -> Bool {
        guard case .head = part else { return false }
        return !isIdle
    }

    private func handle(_ part: RequestParser.Part, context: ChannelHandlerContext) {
        switch part {
        case .head(let head): requestHead(head, context: context)
        case .body(let buffer): requestBody(buffer, context: context)
        case .end: requestEnd(context: context)
        }
    }

    private var isIdle: Bool {
        if case .idle = state { return true }
        return false
    }

    /// Takes up pipelined requests once the current one is answered. Deferred to the next loop
    /// turn: the answer may have ended deep inside an upstream callback.
    private func resumePipelined() {
        guard !pipelined.isEmpty, let context else { return readGate.resume(.pipelined, context) }
        context.eventLoop.assumeIsolated().execute {
            while self.context != nil, let part = self.pipelined.first, !self.mustWait(part) {
                self.pipelined.removeFirst()
                self.handle(part, context: context)
            }
            if case .streaming(let exchange) = self.state { exchange.flushUpstream() }
            if self.pipelined.isEmpty { self.readGate.resume(.pipelined, self.context) }
        }
    }

    private func requestHead(_ head: RequestHead, context: ChannelHandlerContext) {
        headDeadline = nil
        var head = head
        if let origin = ForwardedMessage.originForm(of: head.target) { head.target = origin }
        requestStart = .now()
        requestCounted = true
        loop.metrics.requestStarted()
        requestVersion = head.version
        requestIsHEAD = head.method == .HEAD
        keepAlive = head.keepAlive && !quiescing
        let c = loop.configuration
        guard isProtected(head.method) else { return startPassthrough(head) }
        let key: String?
        do {
            key = try IdempotencyKey.parse(
                headerValues: head.values(named: c.keyHeader), headerName: c.keyHeader, maxLength: c.maxKeyLength)
        } catch {
            return reject(.invalidKey(error.detail), outcome: .badRequest, closing: false)
        }
        guard let key else {
            if c.requireKey { return reject(.missingKey(header: c.keyHeader), outcome: .badRequest, closing: false) }
            return startPassthrough(head)
        }
        var declaredLength = 0
        if case .length(let length) = head.framing { declaredLength = length }
        if declaredLength > c.maxRequestBody {
            // Closing spares reading a body we will not use.
            return reject(.bodyTooLarge(limit: c.maxRequestBody), outcome: .tooLarge, closing: true)
        }
        head.detach()
        state = .buffering(head: head, key: key, body: context.channel.allocator.buffer(capacity: declaredLength))
        acceptBody(head)
    }

    /// Methods are case-sensitive (RFC 9110 §9.1), but an upstream that upper-cases them (some
    /// frameworks do) would run `post` as POST: it is protected like POST, not let through.
    private func isProtected(_ method: HTTPMethod) -> Bool {
        let name = method.rawValue
        if loop.protectedMethods.contains(name) { return true }
        return name.utf8.contains { $0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z") }
            && loop.protectedMethods.contains(name.uppercased())
    }

    /// Answers `Expect: 100-continue` once we know we want the body (never before a 4xx, never
    /// to an HTTP/1.0 client, which cannot take a 1xx: RFC 9110 §15.2).
    private func acceptBody(_ head: RequestHead) {
        guard let context, head.version.minor >= 1, head.expectsContinue else { return }
        context.writeAndFlush(wrapOutboundOut(ResponseWriter.continueHead), promise: nil)
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
            if keepAlive { resumePipelined() } else { context.close(promise: nil) }
        case .idle, .processing:
            break
        }
    }

    private func startPassthrough(_ head: RequestHead) {
        state = .streaming(
            PassthroughExchange(handler: self, loop: loop, clientHead: head, clientAddress: clientAddress))
        acceptBody(head)
    }

    private func reject(_ problem: Problem, outcome: RequestOutcome, closing: Bool) {
        if closing { keepAlive = false }
        respond(ProxyResponse(problem: problem), outcome: outcome, requestEnded: false)
    }

    // MARK: - writing answers

    /// Writes a complete response. `requestEnded` false: the rest of the request is skipped.
    func respond(_ response: ProxyResponse, outcome: RequestOutcome, requestEnded: Bool) {
        guard let context, context.channel.isActive else {
            finishRequest(outcome: outcome)
            return
        }
        writeHead(
            status: response.status, headers: response.headers,
            capacity: 512 + min(response.body.readableBytes, Self.gatherLimit), context: context)
        writer.body(response.body, allocator: context.channel.allocator) { emit($0, context: context) }
        endResponse(context: context, outcome: outcome, requestEnded: requestEnded)
    }

    /// An upstream head, its header lines copied as they came.
    func writeStreamedHead(_ head: ResponseHead) {
        guard let context else { return }
        let connection = frame(status: head.status, hasContentLength: head.contentLength != nil)
        var buffer = context.channel.allocator.buffer(capacity: head.headerLines.readableBytes + 1024)
        writer.head(head, connection: connection, version: requestVersion, into: &buffer)
        hold(buffer, context: context)
    }

    private func writeHead(status: HTTPResponseStatus, headers: HTTPHeaders, capacity: Int, context: ChannelHandlerContext) {
        var headers = headers
        if let connection = frame(status: status, hasContentLength: headers.contains(name: "content-length")) {
            headers.replaceOrAdd(name: "Connection", value: "\(connection)")
        }
        var buffer = context.channel.allocator.buffer(capacity: capacity)
        writer.head(status: status, headers: headers, version: requestVersion, into: &buffer)
        hold(buffer, context: context)
    }

    /// Decides the response's framing, and the `Connection` header it must carry (nil: none).
    private func frame(status: HTTPResponseStatus, hasContentLength: Bool) -> StaticString? {
        // An HTTP/1.0 client learns where a body without a length ends only by the close.
        let framing = writer.frame(
            status: status, hasContentLength: hasContentLength, version: requestVersion, toHEAD: requestIsHEAD)
        if framing == .untilClose { keepAlive = false }
        if !keepAlive { return "close" }
        return requestVersion.minor == 0 ? "keep-alive" : nil
    }

    /// The head is held back (`gathered`) so that the small pieces after it leave with it.
    private func hold(_ head: ByteBuffer, context: ChannelHandlerContext) {
        writeGathered(context: context)
        gathered = head
    }

    /// Pieces up to this size are copied behind the head instead of written on their own.
    private static let gatherLimit = 4096

    /// A small response (head, body, chunk framing) goes through the pipeline as one buffer: one
    /// write and one iovec instead of up to five. A larger piece ends the gathering.
    private func emit(_ piece: ByteBuffer, context: ChannelHandlerContext) {
        if gathered != nil && piece.readableBytes <= Self.gatherLimit {
            gathered!.writeImmutableBuffer(piece)
            return
        }
        writeGathered(context: context)
        context.write(wrapOutboundOut(piece), promise: nil)
        unflushed = true
    }

    /// Must run before every flush.
    private func writeGathered(context: ChannelHandlerContext) {
        guard let buffer = gathered else { return }
        gathered = nil
        context.write(wrapOutboundOut(buffer), promise: nil)
        unflushed = true
    }

    /// A flush goes through the pipeline even with nothing to send: a response whose body came
    /// with its end (the usual case) is flushed once, not again when it ends.
    private func flushResponse(context: ChannelHandlerContext) {
        writeGathered(context: context)
        guard unflushed else { return }
        unflushed = false
        context.flush()
    }

    /// Returns false when the client cannot take more for now.
    func writeStreamedBody(_ buffer: ByteBuffer) -> Bool {
        guard let context else { return true }
        writer.body(buffer, allocator: context.channel.allocator) { emit($0, context: context) }
        flushResponse(context: context)
        return context.channel.isWritable
    }

    func finishStreamed(outcome: RequestOutcome, requestEnded: Bool) {
        guard let context else { return finishRequest(outcome: outcome) }
        endResponse(context: context, outcome: outcome, requestEnded: requestEnded)
    }

    /// The upstream failed after part of the response went out.
    func abortStreamed() {
        gathered = nil
        finishRequest(outcome: .upstreamError)
        state = .idle
        pipelined.removeAll()
        context?.close(promise: nil)
    }

    private func endResponse(context: ChannelHandlerContext, outcome: RequestOutcome, requestEnded: Bool) {
        if let end = writer.end { emit(end, context: context) }
        if keepAlive {
            flushResponse(context: context)
        } else {
            // Closing only our side while the client may still be sending keeps the kernel from
            // answering its bytes with a reset that could destroy the response in flight.
            let mode: CloseMode = requestEnded ? .all : .output
            let last = gathered ?? ByteBuffer()
            gathered = nil
            unflushed = false
            context.writeAndFlush(wrapOutboundOut(last)).assumeIsolated().whenComplete { _ in
                context.close(mode: mode, promise: nil)
            }
            pipelined.removeAll()
        }
        finishRequest(outcome: outcome)
        state = requestEnded ? .idle : .draining
        resumeReads()
        if requestEnded && keepAlive { resumePipelined() }
    }

    private func finishRequest(outcome: RequestOutcome) {
        guard requestCounted else { return }
        requestCounted = false
        loop.metrics.count(outcome)
        loop.metrics.requestFinished(since: requestStart)
    }

    // MARK: - back-pressure

    func pauseReads() { readGate.pause(.peerFull) }

    func resumeReads() { readGate.resume(.peerFull, context) }

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
        pipelined.removeAll()
        idleCheck?.cancel()
        self.context = nil
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            // Graceful shutdown: idle connections close now, busy ones after their response
            // (which says `Connection: close` if its head has not gone out yet).
            quiescing = true
            keepAlive = false
            if isIdle && pipelined.isEmpty { context.close(promise: nil) }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    /// Malformed HTTP: answer once if no response is under way, then close; the byte stream
    /// cannot be trusted to find the next request.
    private func malformed(_ error: RequestParser.ParseError, context: ChannelHandlerContext) {
        keepAlive = false
        pipelined.removeAll()
        switch state {
        case .idle, .buffering:
            let problem: Problem =
                error.headTooLarge
                ? .headersTooLarge(limit: RequestParser.maxHeadBytes)
                : .malformedRequest("The request is not valid HTTP/1.1: \(error.description).")
            if !requestCounted {
                requestStart = .now()
                requestCounted = true
                loop.metrics.requestStarted()
            }
            respond(ProxyResponse(problem: problem), outcome: .badRequest, requestEnded: true)
        case .streaming(let exchange):
            exchange.clientClosed()
            finishRequest(outcome: .passthrough)
            context.close(promise: nil)
        case .processing, .draining:
            // The answer is decided (or already out): a second one would be a response the
            // client never asked for.
            context.close(promise: nil)
        }
    }
}
