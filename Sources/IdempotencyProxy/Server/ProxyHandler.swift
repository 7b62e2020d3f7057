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
/// up, in order, when the current one is answered; so do bytes that are not HTTP, which get
/// their 400 only after every request before them got its answer.
///
/// Its state enum carries the request under way and that request's own facts (version, HEAD,
/// keep-alive, start time), so nothing of one request is left over for the next.
final class ProxyHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// One request's own facts, needed to frame its answer and to count it; they live in the
    /// states that have a request and go with it.
    private struct RequestFacts {
        let version: HTTPVersion
        let isHEAD: Bool
        /// The connection carries another request after this one.
        var keepAlive: Bool
        let start: NIODeadline
        /// For the access log: nil for bytes that were not a request.
        let method: HTTPMethod?
        let target: String
        /// The request's method is protected on its route.
        let protected: Bool
        /// Its route's (the top level's for bytes that were not a request).
        let policy: Policy
    }

    private enum State {
        case idle
        /// Unprotected: streaming to the upstream.
        case streaming(RequestFacts, PassthroughExchange)
        /// Protected: collecting the body to fingerprint it.
        case buffering(RequestFacts, ProtectedRequest)
        /// Protected: body complete, the answer is being worked out.
        case processing(RequestFacts, ProtectedRequest)
        /// Answered by the connection itself (a refused key or body size, malformed HTTP).
        case refused(RequestFacts)
        /// The answer went out before the request ended: the rest of the request is skipped.
        case draining(keepAlive: Bool)
        /// The connection is closing (or closed): nothing more is read or answered.
        case closed
        /// Only while a state's facts are being changed in place.
        case modifying

        var facts: RequestFacts? {
            switch self {
            case .streaming(let facts, _), .buffering(let facts, _), .processing(let facts, _), .refused(let facts):
                return facts
            case .idle, .draining, .closed, .modifying:
                return nil
            }
        }

        var protectedRequest: ProtectedRequest? {
            switch self {
            case .buffering(_, let request), .processing(_, let request): return request
            default: return nil
            }
        }

        /// The request under way has been read to its end: what follows belongs to a later one.
        var requestComplete: Bool {
            switch self {
            case .processing: return true
            case .streaming(_, let exchange): return exchange.requestEnded
            case .idle, .buffering, .refused, .draining, .closed, .modifying: return false
            }
        }
    }

    /// What a client sent, in order: request parts, or the place where its bytes stopped being
    /// HTTP (answered in turn, after the requests before it: RFC 9112 §9.3.2).
    private enum Inbound {
        case part(RequestParser.Part)
        case malformed(RequestParser.ParseError)
    }

    private let loop: LoopContext
    private var context: ChannelHandlerContext?
    private var state = State.idle
    private var clientAddress: String?
    /// Graceful shutdown: each connection closes after its current response.
    private var quiescing = false
    private var writer = ResponseWriter()
    /// The response bytes not yet handed to the channel (see `emit`).
    private var gathered: ByteBuffer?
    /// Response bytes were handed to the channel and not flushed yet.
    private var unflushed = false
    /// What arrived while an earlier request was still being answered.
    private var pipelined = CircularBuffer<Inbound>()
    private var parser = RequestParser()

    /// Reads from the client pause while the upstream cannot take more.
    private var readGate = ReadGate()

    /// Slow or silent clients are cut off after this long without a read (`client_idle_timeout`),
    /// but only while the proxy waits on them, never while they wait on the upstream.
    private let readTimeout: TimeAmount
    /// `client_header_timeout`: see `headStarted`.
    private let headerTimeout: TimeAmount
    private var lastRead = NIODeadline.now()
    /// Checks for a silent client; re-armed from `lastRead` rather than on every read.
    private var idleCheck: Scheduled<Void>?
    /// While no request is under way: when the next head began (its first byte, or the
    /// connection's opening). It must arrive whole within `headerTimeout`: a client trickling a
    /// head (or empty lines) a byte at a time is never silent, but is cut off too. Shedding
    /// reads it as well.
    private var headStarted: NIODeadline?
    /// When the connection last had no request under way, for shedding.
    private var idleSince = NIODeadline.now()
    /// The status answered to the request under way, for the access log; 0 before its answer.
    private var answeredStatus = 0

    init(loop: LoopContext) {
        self.loop = loop
        readTimeout = .milliseconds(loop.configuration.clientIdleTimeoutMs)
        headerTimeout = .milliseconds(loop.configuration.clientHeaderTimeoutMs)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        clientAddress = context.channel.remoteAddress?.ipAddress
        loop.clientConnections[ObjectIdentifier(self)] = self
        // The first head is due client_header_timeout after the connection opens (nginx's
        // meaning); later ones from their first byte.
        startHead()
        armIdleCheck(at: .now() + min(readTimeout, headerTimeout), context: context)
    }

    private func startHead() {
        headStarted = .now()
    }

    private func becomeIdle() {
        state = .idle
        idleSince = .now()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        loop.clientConnections[ObjectIdentifier(self)] = nil
    }

    /// What shedding at `max_connections` sees of this connection.
    var activity: ConnectionShedding.Activity {
        guard isIdle, pipelined.isEmpty else { return .busy }
        if let headStarted { return .readingHead(since: headStarted.uptimeNanoseconds) }
        return .idle(since: idleSince.uptimeNanoseconds)
    }

    /// Closed to make room at `max_connections`: it holds a descriptor and gives nothing.
    func shed() {
        context?.close(promise: nil)
    }

    private func armIdleCheck(at deadline: NIODeadline, context: ChannelHandlerContext) {
        idleCheck = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
            var silentUntil = self.lastRead + self.readTimeout
            if self.isIdle, let headStarted = self.headStarted { silentUntil = min(silentUntil, headStarted + self.headerTimeout) }
            guard NIODeadline.now() >= silentUntil else {
                return self.armIdleCheck(at: silentUntil, context: context)
            }
            if self.state.requestComplete {
                self.armIdleCheck(at: .now() + self.readTimeout, context: context)
            } else {
                context.close(promise: nil)
            }
        }
    }

    // MARK: - inbound

    func channelReadComplete(context: ChannelHandlerContext) {
        lastRead = .now()
        if case .streaming(_, let exchange) = state { exchange.flushUpstream() }
        context.fireChannelReadComplete()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        do {
            try parser.feed(unwrapInboundIn(data)) { part in accept(.part(part), context: context) }
        } catch {
            // The parser reads nothing after a refusal: this is the last of the connection's input.
            accept(.malformed(error), context: context)
        }
        if !isIdle {
            headStarted = nil
        } else if headStarted == nil {
            startHead()
        }
    }

    private func accept(_ inbound: Inbound, context: ChannelHandlerContext) {
        guard self.context != nil else { return }
        if !pipelined.isEmpty || mustWait(inbound) {
            pipelined.append(inbound)
            readGate.pause(.pipelined)
        } else {
            handle(inbound, context: context)
        }
    }

    /// A new request (or the malformed bytes where one should be) waits until the current one
    /// is answered; the current one's parts do not.
    private func mustWait(_ inbound: Inbound) -> Bool {
        switch inbound {
        case .part(.head): return !isIdle
        case .part: return false
        case .malformed: return state.requestComplete
        }
    }

    private func handle(_ inbound: Inbound, context: ChannelHandlerContext) {
        switch inbound {
        case .part(.head(let head)): requestHead(head, context: context)
        case .part(.body(let buffer)): requestBody(buffer, context: context)
        case .part(.end): requestEnd(context: context)
        case .malformed(let error): malformed(error, context: context)
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
            while self.context != nil, let next = self.pipelined.first, !self.mustWait(next) {
                self.pipelined.removeFirst()
                self.handle(next, context: context)
            }
            if case .streaming(_, let exchange) = self.state { exchange.flushUpstream() }
            if self.pipelined.isEmpty { self.readGate.resume(.pipelined, self.context) }
        }
    }

    private func requestHead(_ head: RequestHead, context: ChannelHandlerContext) {
        headStarted = nil
        var head = head
        if let origin = RequestTarget.originForm(of: head.target) { head.target = origin }
        loop.metrics.requestStarted()
        let policy = loop.routes.policy(target: head.target, host: head.values(named: "host").first)
        let protected = policy.protect && isProtected(head.method, by: policy)
        let facts = RequestFacts(
            version: head.version, isHEAD: head.method == .HEAD, keepAlive: head.keepAlive && !quiescing, start: .now(),
            method: head.method, target: head.target, protected: protected, policy: policy)
        guard protected else { return startPassthrough(head, facts) }
        switch ProtectedRequest.admit(head: head, policy: policy, loop: loop, clientAddress: clientAddress, client: self) {
        case .passThrough:
            startPassthrough(head, facts)
        case .refused(let reply):
            guard case .problem(let problem) = reply.content else { preconditionFailure("a head is refused only with a problem") }
            state = .refused(facts)
            respond(ProxyResponse(problem: problem), outcome: reply.outcome, requestEnded: false, closing: reply.closesConnection)
        case .collecting(let request):
            state = .buffering(facts, request)
            acceptBody(head)
        }
    }

    /// Methods are case-sensitive (RFC 9110 §9.1), but an upstream that upper-cases them (some
    /// frameworks do) would run `post` as POST: it is protected like POST, not let through.
    private func isProtected(_ method: HTTPMethod, by policy: Policy) -> Bool {
        let name = method.rawValue
        if policy.methods.contains(name) { return true }
        return name.utf8.contains { $0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z") }
            && policy.methods.contains(name.uppercased())
    }

    /// Answers `Expect: 100-continue` once we know we want the body (never before a 4xx, never
    /// to an HTTP/1.0 client, which cannot take a 1xx: RFC 9110 §15.2).
    private func acceptBody(_ head: RequestHead) {
        guard let context, head.version.minor >= 1, head.expectsContinue else { return }
        context.writeAndFlush(wrapOutboundOut(ResponseWriter.continueHead), promise: nil)
    }

    private func requestBody(_ buffer: ByteBuffer, context: ChannelHandlerContext) {
        switch state {
        case .streaming(_, let exchange): exchange.requestBody(buffer)
        case .buffering(_, let request): request.bodyReceived(buffer)
        case .idle, .processing, .refused, .draining, .closed, .modifying: break
        }
    }

    private func requestEnd(context: ChannelHandlerContext) {
        switch state {
        case .streaming(_, let exchange):
            exchange.requestEnd()
        case .buffering(let facts, let request):
            state = .processing(facts, request)
            request.bodyEnded()
        case .draining(let keepAlive):
            if keepAlive {
                becomeIdle()
                resumePipelined()
            } else {
                state = .closed
                context.close(promise: nil)
            }
        case .idle, .processing, .refused, .closed, .modifying:
            break
        }
    }

    private func startPassthrough(_ head: RequestHead, _ facts: RequestFacts) {
        state = .streaming(
            facts, PassthroughExchange(client: self, loop: loop, clientHead: head, clientAddress: clientAddress, policy: facts.policy))
        acceptBody(head)
    }

    /// The connection closes after the answer to the request under way (or being drained).
    private func endKeepAlive() {
        let current = state
        state = .modifying
        switch current {
        case .streaming(var facts, let exchange):
            facts.keepAlive = false
            state = .streaming(facts, exchange)
        case .buffering(var facts, let request):
            facts.keepAlive = false
            state = .buffering(facts, request)
        case .processing(var facts, let request):
            facts.keepAlive = false
            state = .processing(facts, request)
        case .refused(var facts):
            facts.keepAlive = false
            state = .refused(facts)
        case .draining:
            state = .draining(keepAlive: false)
        case .idle, .closed, .modifying:
            state = current
        }
    }

    // MARK: - writing answers

    /// A response decides the connection's framing; `facts` is the request's.
    private func frame(status: HTTPResponseStatus, hasContentLength: Bool, facts: RequestFacts) -> StaticString? {
        // An HTTP/1.0 client learns where a body without a length ends only by the close.
        let framing = writer.frame(
            status: status, hasContentLength: hasContentLength, version: facts.version, toHEAD: facts.isHEAD)
        if framing == .untilClose && facts.keepAlive { endKeepAlive() }
        if framing == .untilClose || !facts.keepAlive { return "close" }
        return facts.version.minor == 0 ? "keep-alive" : nil
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

    /// The request's answer is complete: count it, then close or take up the next request.
    private func endResponse(outcome: RequestOutcome, requestEnded: Bool) {
        guard let facts = state.facts else { return }
        count(outcome, facts)
        // The state moves on before any write: a write can complete, and close the channel,
        // before it returns.
        guard let context, context.channel.isActive else {
            state = .closed
            return
        }
        if !requestEnded {
            state = .draining(keepAlive: facts.keepAlive)
        } else if facts.keepAlive {
            becomeIdle()
        } else {
            state = .closed
        }
        if let end = writer.end { emit(end, context: context) }
        if facts.keepAlive {
            flushResponse(context: context)
        } else {
            // Closing only our side while the client may still be sending keeps the kernel from
            // answering its bytes with a reset that could destroy the response in flight.
            let mode: CloseMode = requestEnded ? .all : .output
            let last = gathered ?? ByteBuffer()
            gathered = nil
            unflushed = false
            pipelined.removeAll()
            context.writeAndFlush(wrapOutboundOut(last)).assumeIsolated().whenComplete { _ in
                context.close(mode: mode, promise: nil)
            }
        }
        resumeReads()
        if case .idle = state { resumePipelined() }
    }

    /// Every request is counted (and logged) once, when its state gives way to the next.
    private func count(_ outcome: RequestOutcome, _ facts: RequestFacts) {
        loop.metrics.count(outcome, route: facts.policy.routeIndex)
        loop.metrics.requestFinished(since: facts.start)
        if let accessLog = loop.accessLog, facts.protected || loop.configuration.accessLog == .all {
            accessLog.write(accessLogLine(outcome, facts))
        }
        answeredStatus = 0
    }

    /// docs/behaviour.md, "The access log". No header value is logged but the key's.
    private func accessLogLine(_ outcome: RequestOutcome, _ facts: RequestFacts) -> [UInt8] {
        var line = AccessLogLine()
        line.field("method", facts.method?.rawValue ?? "")
        let target = facts.target.utf8
        line.field("path", Substring(target[..<(target.firstIndex(of: UInt8(ascii: "?")) ?? target.endIndex)]))
        // nginx's "client closed request": the client left before any answer.
        line.field("status", answeredStatus == 0 ? 499 : answeredStatus)
        line.field("outcome", outcome.rawValue)
        line.field("route", facts.policy.route)
        if let request = state.protectedRequest, let key = request.key, let record = request.recordID {
            line.field("key", key)
            line.field("record", record)
            if let store = request.replayedFrom { line.field("store", store.rawValue) }
            if let upstream = request.upstreamNanoseconds { line.milliseconds("upstream_ms", nanoseconds: upstream) }
        }
        line.milliseconds("total_ms", nanoseconds: NIODeadline.now().uptimeNanoseconds - facts.start.uptimeNanoseconds)
        return line.finish()
    }

    /// Ends a response mid-way: the close is the only signal left that it is incomplete.
    private func cut(outcome: RequestOutcome) {
        gathered = nil
        if let facts = state.facts { count(outcome, facts) }
        state = .closed
        pipelined.removeAll()
        context?.close(promise: nil)
    }

    // MARK: - back-pressure

    func read(context: ChannelHandlerContext) { readGate.read(context) }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        switch state {
        case .streaming(_, let exchange): exchange.clientWritabilityChanged(isWritable: context.channel.isWritable)
        case .processing(_, let request): request.clientWritabilityChanged(isWritable: context.channel.isWritable)
        case .idle, .buffering, .refused, .draining, .closed, .modifying: break
        }
        context.fireChannelWritabilityChanged()
    }

    // MARK: - connection events

    func channelInactive(context: ChannelHandlerContext) {
        switch state {
        case .streaming(_, let exchange):
            exchange.clientClosed()
            endResponse(outcome: .passthrough, requestEnded: true)
        case .buffering:
            // The client left before its request was complete.
            endResponse(outcome: .badRequest, requestEnded: true)
        case .processing:
            // The protected request carries on without us (docs/behaviour.md §3, rule 10); its answer is
            // counted when it comes.
            break
        case .idle, .refused, .draining, .closed, .modifying:
            // (`.refused` lasts only while its answer is written.)
            state = .closed
        }
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
            endKeepAlive()
            if isIdle && pipelined.isEmpty { context.close(promise: nil) }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    /// Malformed HTTP, reached in turn: answered with 400 (or 431) if no answer to the request
    /// it is part of is under way, then the connection closes; the byte stream cannot be
    /// trusted to find the next request.
    private func malformed(_ error: RequestParser.ParseError, context: ChannelHandlerContext) {
        pipelined.removeAll()
        let problem: Problem =
            error.headTooLarge
            ? .headersTooLarge(limit: RequestParser.maxHeadBytes)
            : .malformedRequest("The request is not valid HTTP/1.1: \(error.description).")
        switch state {
        case .idle:
            // The bad bytes are where a request should begin: that request is this answer's.
            loop.metrics.requestStarted()
            state = .refused(RequestFacts(
                version: .http1_1, isHEAD: false, keepAlive: false, start: .now(), method: nil, target: "", protected: false,
                policy: loop.routes.fallback))
        case .buffering(let facts, _):
            // The protected request had claimed nothing yet: it is dropped with its body.
            state = .refused(facts)
        case .streaming(let facts, let exchange) where !exchange.responseStarted:
            // Its head went upstream, its body cannot be finished: the exchange is abandoned.
            exchange.clientClosed()
            state = .refused(facts)
        case .streaming(_, let exchange):
            exchange.clientClosed()
            return cut(outcome: .passthrough)
        case .processing, .refused, .draining, .closed, .modifying:
            // The answer is decided (or already out): a second one would be a response the
            // client never asked for.
            state = .closed
            return context.close(promise: nil)
        }
        respond(ProxyResponse(problem: problem), outcome: .badRequest, requestEnded: true, closing: true)
    }
}

extension ProxyHandler: ClientResponder {
    func respond(_ response: ProxyResponse, outcome: RequestOutcome, requestEnded: Bool, closing: Bool) {
        if closing { endKeepAlive() }
        guard let context, context.channel.isActive, let facts = state.facts else {
            return endResponse(outcome: outcome, requestEnded: requestEnded)
        }
        answeredStatus = Int(response.status.code)
        var headers = response.headers
        if let connection = frame(status: response.status, hasContentLength: headers.contains(name: "content-length"), facts: facts) {
            headers.replaceOrAdd(name: "Connection", value: "\(connection)")
        }
        var buffer = context.channel.allocator.buffer(capacity: 512 + min(response.body.readableBytes, Self.gatherLimit))
        writer.head(status: response.status, headers: headers, version: facts.version, into: &buffer)
        hold(buffer, context: context)
        writer.body(response.body, allocator: context.channel.allocator) { emit($0, context: context) }
        endResponse(outcome: outcome, requestEnded: requestEnded)
    }

    func writeStreamedHead(_ head: ResponseHead) {
        guard let context, let facts = state.facts else { return }
        answeredStatus = Int(head.status.code)
        let connection = frame(status: head.status, hasContentLength: head.contentLength != nil, facts: facts)
        var buffer = context.channel.allocator.buffer(capacity: head.headerLines.readableBytes + 1024)
        writer.head(head, connection: connection, version: facts.version, into: &buffer)
        hold(buffer, context: context)
    }

    func writeStreamedBody(_ buffer: ByteBuffer) -> Bool {
        guard let context else { return true }
        writer.body(buffer, allocator: context.channel.allocator) { emit($0, context: context) }
        flushResponse(context: context)
        return context.channel.isWritable
    }

    func finishStreamed(outcome: RequestOutcome, requestEnded: Bool) {
        endResponse(outcome: outcome, requestEnded: requestEnded)
    }

    func abortStreamed() { cut(outcome: .upstreamError) }

    func pauseReads() { readGate.pause(.peerFull) }

    func resumeReads() { readGate.resume(.peerFull, context) }
}
