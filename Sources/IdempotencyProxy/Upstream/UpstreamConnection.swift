import IdempotencyCore
import NIOCore
import NIOHTTP1

/// Receives the parts of one upstream response. Called on the connection's event loop.
protocol UpstreamReceiver: AnyObject {
    func upstreamResponseHead(_ head: HTTPResponseHead)
    func upstreamResponseBody(_ buffer: ByteBuffer)
    func upstreamResponseEnd()
    /// The exchange failed after the request was (possibly) sent; no more parts follow.
    func upstreamFailed(_ failure: UpstreamFailure)
    /// The upstream socket can take more request body again (or cannot).
    func upstreamWritabilityChanged(isWritable: Bool)
}

enum UpstreamFailure: Error, Equatable {
    /// No complete response within `upstream_timeout`.
    case timedOut
    /// The connection closed or failed mid-exchange.
    case broken
    /// The upstream sent bytes that are not a valid HTTP response.
    case invalidResponse

    /// The proxy's own answer when nothing of the response has gone out yet (SPEC §3 rule 8).
    var problem: Problem {
        switch self {
        case .timedOut: return .upstreamTimeout
        case .broken: return .upstreamBroken
        case .invalidResponse: return .invalidUpstreamResponse
        }
    }
}

/// One keep-alive HTTP/1.1 connection to the upstream, carrying one exchange at a time.
///
/// It is reused only after a complete, well-framed response to a complete request; anything
/// else (timeout, a response cut short, `Connection: close`) retires it.
final class UpstreamConnection: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    private var context: ChannelHandlerContext?
    private var receiver: UpstreamReceiver?
    private var deadline: Scheduled<Void>?
    private var requestComplete = false
    private var reusable = true
    private(set) var isClosed = false
    /// When the connection went back to the pool; stale ones are not reused.
    var idleSince = NIODeadline.now()

    /// The client side pauses our reads while it cannot write.
    private var readGate = ReadGate()

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
        deadline = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
            self.finish(failure: .timedOut)
        }
    }

    func write(_ part: HTTPClientRequestPart, flush: Bool) {
        guard let context, !isClosed else { return }
        if case .end = part { requestComplete = true }
        context.write(wrapOutboundOut(part), promise: nil)
        if flush { context.flush() }
    }

    /// The client side gave up on the exchange (it disconnected): the connection is not
    /// reused since the rest of the response would be unread.
    func abandon() {
        receiver = nil
        deadline?.cancel()
        close()
    }

    func pauseReads() { readGate.pause() }

    func resumeReads() { readGate.resume(context) }

    // MARK: - channel events

    func read(context: ChannelHandlerContext) {
        readGate.read(context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let receiver else {
            // Bytes with no exchange: the upstream is out of step; never reuse this connection.
            close()
            return
        }
        switch unwrapInboundIn(data) {
        case .head(let head):
            if !head.isKeepAlive { reusable = false }
            receiver.upstreamResponseHead(head)
        case .body(let buffer):
            receiver.upstreamResponseBody(buffer)
        case .end:
            deadline?.cancel()
            deadline = nil
            self.receiver = nil
            // A response that ends before the request did leaves the request stream half-sent.
            if !requestComplete { reusable = false }
            receiver.upstreamResponseEnd()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        receiver?.upstreamWritabilityChanged(isWritable: context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        isClosed = true
        finish(failure: .broken)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        finish(failure: error is HTTPParserError ? .invalidResponse : .broken)
    }

    private func finish(failure: UpstreamFailure) {
        deadline?.cancel()
        deadline = nil
        let receiver = self.receiver
        self.receiver = nil
        reusable = false
        close()
        receiver?.upstreamFailed(failure)
    }

    private func close() {
        guard !isClosed else { return }
        isClosed = true
        context?.close(promise: nil)
    }
}
