import HTTPWire
import IdempotencyCore
import Logging
import NIOCore

/// Receives the parts of one upstream response. Called on the connection's event loop.
protocol UpstreamReceiver: AnyObject {
    func upstreamResponseHead(_ head: ResponseHead)
    func upstreamResponseBody(_ buffer: ByteBuffer)
    func upstreamResponseEnd()
    /// The exchange failed after the request was (possibly) sent; no more parts follow.
    func upstreamFailed(_ failure: UpstreamFailure)
    /// The upstream socket can take more request body again (or cannot).
    func upstreamWritabilityChanged(isWritable: Bool)
}

/// What goes to the upstream for one request, in order: the head, body pieces, the end.
enum UpstreamRequestPart {
    case head(ForwardedRequest)
    case body(ByteBuffer)
    case end
}

/// One keep-alive HTTP/1.1 connection to the upstream, carrying one exchange at a time. It
/// frames bytes itself (`RequestWriter`, `ResponseParser`): the only handler on the channel.
///
/// It is reused only after a complete, well-framed response to a complete request; anything
/// else (timeout, a response cut short, `Connection: close`) retires it.
final class UpstreamConnection: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let logger: Logger
    private var context: ChannelHandlerContext?
    private var receiver: UpstreamReceiver?
    /// When the current exchange times out.
    private var deadline: NIODeadline?
    /// The pending timeout check and when it fires. It is left to fire rather than cancelled
    /// when an exchange ends early (that would be a heap operation per request): it then finds
    /// nothing due and re-arms for the next exchange, if there is one.
    private var timer: (task: Scheduled<Void>, at: NIODeadline)?
    private var requestComplete = false
    private var writer = RequestWriter()
    private var parser = ResponseParser()
    private var reusable = true
    private(set) var isClosed = false
    /// When the connection went back to the pool; stale ones are not reused.
    var idleSince = NIODeadline.now()

    /// The client side pauses our reads while it cannot write.
    private var readGate = ReadGate()

    init(logger: Logger) {
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    var isWritable: Bool { context?.channel.isWritable ?? false }

    /// True when the connection can carry another exchange.
    var canBeReused: Bool { !isClosed && reusable && receiver == nil }

    /// Starts an exchange. The caller then writes the request with `write(_:)`.
    func begin(receiver: UpstreamReceiver, timeout: TimeAmount) {
        guard let context, !isClosed else {
            receiver.upstreamFailed(.broken)
            return
        }
        self.receiver = receiver
        requestComplete = false
        let deadline = NIODeadline.now() + timeout
        self.deadline = deadline
        armTimer(context)
    }

    private func armTimer(_ context: ChannelHandlerContext) {
        guard let deadline else { return }
        if let timer {
            if timer.at <= deadline { return }
            timer.task.cancel()
        }
        let task = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
            self.timer = nil
            guard let deadline = self.deadline, self.receiver != nil else { return }
            if NIODeadline.now() >= deadline {
                self.finish(failure: .timedOut)
            } else if let context = self.context {
                self.armTimer(context)
            }
        }
        timer = (task, deadline)
    }

    /// Writes without flushing: the caller flushes once the parts at hand are written.
    func write(_ part: UpstreamRequestPart) {
        guard let context, !isClosed else { return }
        switch part {
        case .head(let request):
            parser.expectResponse(toHEAD: request.isHEAD)
            writer = RequestWriter(chunked: request.chunked)
            context.write(wrapOutboundOut(request.head), promise: nil)
        case .body(let body):
            writer.body(body, allocator: context.channel.allocator) { context.write(wrapOutboundOut($0), promise: nil) }
        case .end:
            requestComplete = true
            if let end = writer.end { context.write(wrapOutboundOut(end), promise: nil) }
        }
    }

    func flush() {
        context?.flush()
    }

    /// The client side gave up on the exchange (it disconnected): the connection is not
    /// reused since the rest of the response would be unread.
    func abandon() {
        receiver = nil
        deadline = nil
        close()
    }

    func pauseReads() { readGate.pause(.peerFull) }

    func resumeReads() { readGate.resume(.peerFull, context) }

    // MARK: - channel events

    func read(context: ChannelHandlerContext) {
        readGate.read(context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard receiver != nil else {
            // Bytes with no exchange: the upstream is out of step; never reuse this connection.
            close()
            return
        }
        var parts: [ResponseParser.Part] = []
        do {
            try parser.feed(unwrapInboundIn(data), into: &parts)
        } catch {
            deliver(parts)
            return finish(failure: .invalidResponse, reason: error.description)
        }
        deliver(parts)
    }

    private func deliver(_ parts: [ResponseParser.Part]) {
        for part in parts {
            guard let receiver else { return }
            switch part {
            case .head(let head):
                receiver.upstreamResponseHead(head)
            case .body(let buffer):
                receiver.upstreamResponseBody(buffer)
            case .end(let keepAlive):
                deadline = nil
                self.receiver = nil
                // A response that ends before the request did leaves the request stream half-sent.
                if !requestComplete || !keepAlive { reusable = false }
                receiver.upstreamResponseEnd()
            }
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        receiver?.upstreamWritabilityChanged(isWritable: context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        isClosed = true
        var parts: [ResponseParser.Part] = []
        do {
            // A body delimited by the close ends here.
            try parser.connectionClosed(into: &parts)
            deliver(parts)
            finish(failure: .broken)
        } catch {
            finish(failure: .broken, reason: error.description)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        finish(failure: .broken)
    }

    private func finish(failure: UpstreamFailure, reason: String? = nil) {
        deadline = nil
        let receiver = self.receiver
        self.receiver = nil
        reusable = false
        close()
        if let reason, receiver != nil {
            logger.warning("upstream response unusable", metadata: ["reason": "\(reason)"])
        }
        receiver?.upstreamFailed(failure)
    }

    private func close() {
        timer?.task.cancel()
        timer = nil
        guard !isClosed else { return }
        isClosed = true
        context?.close(promise: nil)
    }
}
