import HTTPWire
import IdempotencyCore
import NIOCore
import NIOHTTP1

/// The client side of the proxy: decides per request whether it is protected and hands it to
/// `ProtectedRequest` (buffered) or `PassthroughExchange` (streamed), then writes the answer.
///
/// It is the only handler on a client connection: it parses requests itself (`RequestParser`)
/// and writes response bytes itself (`ResponseWriter`), which spares NIO's HTTP handlers and
/// their per-header strings on the hot path. Every rule of the connection (pipelining,
/// keep-alive, quiescing, deadlines) is `ClientConnectionStateMachine`'s: this handler parses,
/// reports to the machine, carries out its actions and gathers the writes, as AsyncHTTPClient's
/// `HTTP1ClientChannelHandler` does. It keeps only the request under way's work and the facts
/// it is counted and logged by.
final class ProxyHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// What carries out the request under way.
    private enum Work {
        case passthrough(PassthroughExchange)
        case protected(ProtectedRequest)
        /// Answered by the connection itself.
        case byConnection
    }

    /// The request under way, as it is counted and logged; it goes when it is counted.
    private struct Current {
        let start: NIODeadline
        /// nil for bytes that were not a request.
        let method: HTTPMethod?
        let target: String
        /// The request's method is protected on its route.
        let protected: Bool
        /// Its route's (the top level's for bytes that were not a request).
        let policy: Policy
        var work: Work
        /// The status answered, for the access log; 0 before its answer.
        var answeredStatus = 0
    }

    private let loop: LoopContext
    private var context: ChannelHandlerContext?
    private var machine: ClientConnectionStateMachine
    private var current: Current?
    private var clientAddress: String?
    private var writer = ResponseWriter()
    /// The response bytes not yet handed to the channel (see `emit`).
    private var gathered: ByteBuffer?
    /// Response bytes were handed to the channel and not flushed yet.
    private var unflushed = false
    private var parser = RequestParser()
    /// Reads from the client pause while the upstream cannot take more, or requests wait.
    private var readGate = ReadGate()
    private var idleCheck: Scheduled<Void>?

    init(loop: LoopContext) {
        self.loop = loop
        machine = ClientConnectionStateMachine(
            now: .now(), idleTimeout: .milliseconds(loop.configuration.clientIdleTimeoutMs),
            headTimeout: .milliseconds(loop.configuration.clientHeaderTimeoutMs))
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        clientAddress = context.channel.remoteAddress?.ipAddress
        loop.clientConnections[ObjectIdentifier(self)] = self
        armIdleCheck(at: machine.firstIdleCheck, context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        loop.clientConnections[ObjectIdentifier(self)] = nil
    }

    /// What shedding at `max_connections` sees of this connection.
    var activity: ConnectionShedding.Activity {
        guard let quiet = machine.quietSince else { return .busy }
        let since = quiet.since.uptimeNanoseconds
        return quiet.readingHead ? .readingHead(since: since) : .idle(since: since)
    }

    /// Closed to make room at `max_connections`: it holds a descriptor and gives nothing.
    func shed() {
        context?.close(promise: nil)
    }

    private func armIdleCheck(at deadline: NIODeadline, context: ChannelHandlerContext) {
        idleCheck = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
            switch self.machine.idleCheckDue(now: .now()) {
            case .again(let at): self.armIdleCheck(at: at, context: context)
            case .close: context.close(promise: nil)
            }
        }
    }

    // MARK: - inbound

    func channelReadComplete(context: ChannelHandlerContext) {
        if case .passthrough(let exchange) = current?.work { exchange.flushUpstream() }
        context.fireChannelReadComplete()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        machine.readStarted(now: .now())
        do {
            try parser.feed(unwrapInboundIn(data)) { part in run(machine.received(.part(part))) }
        } catch {
            // The parser reads nothing after a refusal: this is the last of the connection's input.
            run(machine.received(.malformed(error)))
        }
        machine.readEnded()
    }

    private func run(_ action: ClientConnectionStateMachine.Action) {
        guard let context else { return }
        switch action {
        case .nothing:
            break
        case .pauseReads:
            readGate.pause(.pipelined)
        case .startRequest(let head):
            requestHead(head)
        case .deliverBody(let buffer):
            switch current?.work {
            case .passthrough(let exchange): exchange.requestBody(buffer)
            case .protected(let request): request.bodyReceived(buffer)
            case .byConnection, nil: break
            }
        case .deliverEnd:
            switch current?.work {
            case .passthrough(let exchange): exchange.requestEnd()
            case .protected(let request): request.bodyEnded()
            case .byConnection, nil: break
            }
        case .answerMalformed(let error, let newRequest):
            answerMalformed(error, newRequest: newRequest)
        case .cutResponse:
            abandonWork()
            cut(outcome: .passthrough)
        case .writeContinue:
            context.writeAndFlush(wrapOutboundOut(ResponseWriter.continueHead), promise: nil)
        case .close:
            context.close(promise: nil)
        case .closeForBug(let why):
            loop.logger.error("closing a client connection on an event its state cannot have", metadata: ["why": "\(why)"])
            // Whatever was under way is never answered now: it is counted here, once.
            abandonWork()
            count(.badRequest)
            context.close(promise: nil)
        }
    }

    /// Takes up pipelined requests once the current one is answered. Deferred to the next loop
    /// turn: the answer may have ended deep inside an upstream callback.
    private func resumePipelined() {
        guard let context, machine.hasPipelined else { return readGate.resume(.pipelined, context) }
        context.eventLoop.assumeIsolated().execute {
            while self.context != nil, let action = self.machine.nextPipelined() { self.run(action) }
            if !self.machine.hasPipelined { self.readGate.resume(.pipelined, self.context) }
            if case .passthrough(let exchange) = self.current?.work { exchange.flushUpstream() }
        }
    }

    private func requestHead(_ head: RequestHead) {
        var head = head
        if let origin = RequestTarget.originForm(of: head.target) { head.target = origin }
        loop.metrics.requestStarted()
        let policy = loop.routes.policy(target: head.target, host: head.values(named: "host").first)
        let protected = policy.protect && isProtected(head.method, by: policy)
        var current = Current(start: .now(), method: head.method, target: head.target, protected: protected, policy: policy, work: .byConnection)
        var kind = ClientConnectionStateMachine.Kind.streamed
        var refusal: ProtectedRequestMachine.Reply?
        if protected {
            switch ProtectedRequest.admit(head: head, policy: policy, loop: loop, clientAddress: clientAddress, client: self) {
            case .passThrough:
                break
            case .refused(let reply):
                kind = .refused
                refusal = reply
            case .collecting(let request):
                kind = .buffered
                current.work = .protected(request)
            }
        }
        // The machine and the request's facts come first: an exchange may answer (a 502) as
        // soon as it is made.
        self.current = current
        run(machine.requestStarted(
            kind, version: head.version, isHEAD: head.method == .HEAD, keepAlive: head.keepAlive, expectsContinue: head.expectsContinue))
        if kind == .streamed, machine.request != nil {
            self.current?.work = .passthrough(
                PassthroughExchange(client: self, loop: loop, clientHead: head, clientAddress: clientAddress, policy: policy))
        }
        if let refusal {
            guard case .problem(let problem) = refusal.content else { preconditionFailure("a head is refused only with a problem") }
            respond(ProxyResponse(problem: problem), outcome: refusal.outcome, requestEnded: false, closing: refusal.closesConnection)
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

    // MARK: - writing answers

    /// The head is held back (`gathered`) so that the small pieces after it leave with it. Taken
    /// over, not shared: appending to a buffer the caller still holds would copy it.
    private func hold(_ head: consuming ByteBuffer, context: ChannelHandlerContext) {
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
        guard machine.request != nil else { return }
        count(outcome)
        // The machine moves on before any write: a write can complete, and close the channel,
        // before it returns.
        let after = machine.responseEnded(requestEnded: requestEnded, clientActive: context?.channel.isActive ?? false, now: .now())
        guard let context, after != .gone else { return }
        if let end = writer.end { emit(end, context: context) }
        resumeReads()
        if case .closeAfterFlush(let outputOnly) = after {
            let last = gathered ?? ByteBuffer()
            gathered = nil
            unflushed = false
            context.writeAndFlush(wrapOutboundOut(last)).assumeIsolated().whenComplete { _ in
                context.close(mode: outputOnly ? .output : .all, promise: nil)
            }
        } else {
            flushResponse(context: context)
            resumePipelined()
        }
    }

    /// Every request is counted (and logged) once, when it gives way to the next.
    private func count(_ outcome: RequestOutcome) {
        guard let current else { return }
        self.current = nil
        loop.metrics.count(outcome, route: current.policy.routeIndex)
        loop.metrics.requestFinished(since: current.start)
        if let accessLog = loop.accessLog, current.protected || loop.configuration.accessLog == .all {
            accessLog.write(accessLogLine(outcome, current))
        }
    }

    /// docs/behaviour.md, "The access log". No header value is logged but the key's.
    private func accessLogLine(_ outcome: RequestOutcome, _ current: Current) -> [UInt8] {
        var line = AccessLogLine()
        line.field("method", current.method?.rawValue ?? "")
        let target = current.target.utf8
        line.field("path", Substring(target[..<(target.firstIndex(of: UInt8(ascii: "?")) ?? target.endIndex)]))
        // nginx's "client closed request": the client left before any answer.
        line.field("status", current.answeredStatus == 0 ? 499 : current.answeredStatus)
        line.field("outcome", outcome.rawValue)
        line.field("route", current.policy.route)
        if case .protected(let request) = current.work, let key = request.key, let record = request.recordID {
            line.field("key", key)
            line.field("record", record)
            if let store = request.replayedFrom { line.field("store", store.rawValue) }
            if let upstream = request.upstreamNanoseconds { line.milliseconds("upstream_ms", nanoseconds: upstream) }
        }
        line.milliseconds("total_ms", nanoseconds: NIODeadline.now().uptimeNanoseconds - current.start.uptimeNanoseconds)
        return line.finish()
    }

    /// Ends a response mid-way: the close is the only signal left that it is incomplete.
    private func cut(outcome: RequestOutcome) {
        gathered = nil
        count(outcome)
        machine.responseCut()
        context?.close(promise: nil)
    }

    // MARK: - back-pressure

    func read(context: ChannelHandlerContext) { readGate.read(context) }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        let isWritable = context.channel.isWritable
        switch current?.work {
        case .passthrough(let exchange): exchange.clientWritabilityChanged(isWritable: isWritable)
        case .protected(let request): request.clientWritabilityChanged(isWritable: isWritable)
        case .byConnection, nil: break
        }
        context.fireChannelWritabilityChanged()
    }

    // MARK: - connection events

    func channelInactive(context: ChannelHandlerContext) {
        switch machine.clientClosed() {
        case .abandonStreaming:
            abandonWork()
            count(.passthrough)
        case .incompleteRequest:
            count(.badRequest)
        case .carriesOn, .nothing:
            break
        }
        idleCheck?.cancel()
        self.context = nil
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            run(machine.quiesce())
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    /// The request under way goes on no further: its upstream exchange, if any, is abandoned.
    private func abandonWork() {
        if case .passthrough(let exchange) = current?.work { exchange.clientClosed() }
        current?.work = .byConnection
    }

    /// Malformed HTTP, reached in turn: 400 (or 431), then the connection closes.
    private func answerMalformed(_ error: RequestParser.ParseError, newRequest: Bool) {
        let problem: Problem =
            error.headTooLarge
            ? .headersTooLarge(limit: RequestParser.maxHeadBytes)
            : .malformedRequest("The request is not valid HTTP/1.1: \(error.description).")
        if newRequest {
            // The bad bytes are where a request should begin: that request is this answer's.
            loop.metrics.requestStarted()
            current = Current(start: .now(), method: nil, target: "", protected: false, policy: loop.routes.fallback, work: .byConnection)
        } else {
            abandonWork()
        }
        respond(ProxyResponse(problem: problem), outcome: .badRequest, requestEnded: true, closing: true)
    }
}

extension ProxyHandler: ClientResponder {
    func respond(_ response: ProxyResponse, outcome: RequestOutcome, requestEnded: Bool, closing: Bool) {
        guard let context, context.channel.isActive, let request = machine.request else {
            return endResponse(outcome: outcome, requestEnded: requestEnded)
        }
        current?.answeredStatus = Int(response.status.code)
        var headers = response.headers
        if let connection = responseHead(
            status: response.status, hasContentLength: headers.contains(name: "content-length"), request: request, closing: closing)
        {
            headers.replaceOrAdd(name: "Connection", value: "\(connection)")
        }
        var buffer = context.channel.allocator.buffer(capacity: 512 + min(response.body.readableBytes, Self.gatherLimit))
        writer.head(status: response.status, headers: headers, version: request.version, into: &buffer)
        hold(consume buffer, context: context)
        writer.body(response.body, allocator: context.channel.allocator) { emit($0, context: context) }
        endResponse(outcome: outcome, requestEnded: requestEnded)
    }

    func writeStreamedHead(_ head: ResponseHead) {
        guard let context, let request = machine.request else { return }
        current?.answeredStatus = Int(head.status.code)
        let connection = responseHead(status: head.status, hasContentLength: head.contentLength != nil, request: request)
        var buffer = context.channel.allocator.buffer(capacity: head.headerLines.readableBytes + 1024)
        writer.head(head, connection: connection, version: request.version, into: &buffer)
        hold(consume buffer, context: context)
    }

    /// A response's framing, which the machine turns into its `Connection` header, if any.
    private func responseHead(
        status: HTTPResponseStatus, hasContentLength: Bool, request: ClientConnectionStateMachine.Request, closing: Bool = false
    ) -> StaticString? {
        let framing = writer.frame(status: status, hasContentLength: hasContentLength, version: request.version, toHEAD: request.isHEAD)
        return machine.responseHead(framing: framing, closing: closing)
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
