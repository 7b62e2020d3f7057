import HTTPWire
import IdempotencyCore
import NIOCore

/// Streams one unprotected request to the upstream and its response back, with back-pressure
/// both ways: neither side is read faster than the other side can be written.
final class PassthroughExchange: UpstreamReceiver {
    private weak var client: (any ClientResponder)?
    private let loop: LoopContext
    /// The request's route's `upstream_timeout`.
    private let timeout: TimeAmount
    private let started = NIODeadline.now()

    private var connection: UpstreamConnection?
    /// Body parts that arrived before the upstream connection was ready.
    private var queued: [UpstreamRequestPart] = []
    /// The client has sent the whole request; until then the proxy is waiting on it.
    private var requestEnded = false
    /// Part of the response went out to the client.
    private var responseStarted = false
    /// Request bytes were written to the upstream and not flushed yet.
    private var unflushed = false
    private var finished = false

    init(client: any ClientResponder, loop: LoopContext, clientHead: RequestHead, clientAddress: String?, policy: Policy) {
        timeout = TimeAmount(policy.upstreamTimeout)
        self.client = client
        self.loop = loop
        let head = ForwardedRequest(
            from: clientHead, basePath: loop.configuration.upstream.basePath, hostHeader: loop.upstreamHostHeader,
            clientAddress: clientAddress, clientProtocol: loop.clientProtocol)
        // Usually a pooled connection is ready: the head goes out at once, with no callback.
        if let connection = loop.pool.takeIdle() {
            connected(connection, head: head, flush: false)
            return
        }
        loop.pool.acquire { result in
            switch result {
            case .success(let connection): self.connected(connection, head: head, flush: true)
            case .failure(let error):
                loop.logger.warning("upstream unreachable", metadata: ["error": "\(error)"])
                self.fail(problemFor: nil)
            }
        }
    }

    func requestBody(_ buffer: ByteBuffer) {
        forward(.body(buffer))
    }

    func requestEnd() {
        requestEnded = true
        forward(.end)
    }

    /// Sends what the client's last read brought: writes wait for it, so that a head and the
    /// body that came with it leave in one write.
    func flushUpstream() {
        guard unflushed, let connection else { return }
        unflushed = false
        connection.flush()
    }

    /// The client went away: stop the exchange, the connection cannot be reused.
    func clientClosed() {
        guard !finished else { return }
        finished = true
        connection?.abandon()
        connection = nil
    }

    /// The client can take more response bytes again (or cannot).
    func clientWritabilityChanged(isWritable: Bool) {
        if isWritable { connection?.resumeReads() } else { connection?.pauseReads() }
    }

    /// `flush` false: called while the client's read is handled, which flushes at its end.
    private func connected(_ connection: UpstreamConnection, head: ForwardedRequest, flush: Bool) {
        guard !finished else { return loop.pool.release(connection) }
        self.connection = connection
        connection.begin(receiver: self, timeout: timeout)
        connection.write(.head(head))
        for part in queued { connection.write(part) }
        queued.removeAll()
        unflushed = true
        if flush { flushUpstream() }
        if !connection.isWritable { client?.pauseReads() }
    }

    private func forward(_ part: UpstreamRequestPart) {
        guard !finished else { return }
        guard let connection else {
            queued.append(part)
            return
        }
        connection.write(part)
        unflushed = true
        if !connection.isWritable { client?.pauseReads() }
    }

    // MARK: - UpstreamReceiver

    func upstreamResponseHead(_ head: ResponseHead) {
        responseStarted = true
        // End to end already (`ResponseParser`); the client's framing is decided as it is written.
        client?.writeStreamedHead(head)
    }

    func upstreamResponseBody(_ buffer: ByteBuffer) {
        if client?.writeStreamedBody(buffer) == false { connection?.pauseReads() }
    }

    func upstreamResponseEnd() {
        guard !finished else { return }
        finished = true
        loop.metrics.upstreamExchange(since: started)
        if let connection {
            // Reused only if the request went out whole too; else the pool retires it.
            loop.pool.release(connection)
        }
        connection = nil
        client?.finishStreamed(outcome: .passthrough, requestEnded: requestEnded)
    }

    func upstreamFailed(_ failure: UpstreamFailure) {
        connection = nil
        fail(problemFor: failure)
    }

    func upstreamWritabilityChanged(isWritable: Bool) {
        if isWritable { client?.resumeReads() } else { client?.pauseReads() }
    }

    private func fail(problemFor failure: UpstreamFailure?) {
        guard !finished else { return }
        finished = true
        loop.metrics.upstreamExchange(since: started)
        if responseStarted {
            // Part of the response is already out: cutting the connection is the only honest signal.
            client?.abortStreamed()
            return
        }
        let problem = failure?.problem ?? .upstreamUnreachable
        client?.respond(ProxyResponse(problem: problem), outcome: .upstreamError, requestEnded: requestEnded, closing: false)
    }
}
