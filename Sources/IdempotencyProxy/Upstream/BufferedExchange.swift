import HTTPWire
import IdempotencyCore
import NIOCore

/// Takes a response that grew too large to keep: it goes straight on to the client instead.
protocol ResponseSpill: AnyObject {
    /// The response outgrew the limit; `body` is what arrived so far. Returns false while the
    /// client cannot take more (reading from the upstream pauses until `resume`).
    func spillStarted(head: ResponseHead, body: ByteBuffer) -> Bool
    func spillBody(_ buffer: ByteBuffer) -> Bool
}

/// One upstream exchange with the whole request at hand and the response collected: what a
/// protected request needs, since its answer must be fingerprinted and stored. A response
/// larger than `spillAfter` bytes, which will not be stored anyway, is handed to the spill as it
/// arrives rather than held in memory.
final class BufferedExchange: UpstreamReceiver {
    enum Outcome {
        case response(ResponseHead, ByteBuffer)
        /// Too large: already passed on to the spill, `bodyLength` bytes in all.
        case spilled(ResponseHead, bodyLength: Int)
        /// No connection: nothing was sent.
        case notConnected(Error)
        case failed(UpstreamFailure)
    }

    private let pool: UpstreamPool
    private let spillAfter: Int?
    private weak var spill: ResponseSpill?
    private var connection: UpstreamConnection?
    private var head: ResponseHead?
    private var body: ByteBuffer
    private var spilledBytes: Int?
    private var completion: ((Outcome) -> Void)?

    private init(
        pool: UpstreamPool, allocator: ByteBufferAllocator, spillAfter: Int?, spill: ResponseSpill?,
        completion: @escaping (Outcome) -> Void
    ) {
        self.pool = pool
        self.body = allocator.buffer(capacity: 0)
        self.spillAfter = spillAfter
        self.spill = spill
        self.completion = completion
    }

    @discardableResult
    static func run(
        pool: UpstreamPool,
        head: ForwardedRequest,
        body: ByteBuffer,
        timeout: TimeAmount,
        allocator: ByteBufferAllocator,
        spillAfter: Int? = nil,
        spill: ResponseSpill? = nil,
        completion: @escaping (Outcome) -> Void
    ) -> BufferedExchange {
        let exchange = BufferedExchange(
            pool: pool, allocator: allocator, spillAfter: spillAfter, spill: spill, completion: completion)
        // Buffered exchanges carry requests of protected methods, which a connection closed
        // under them would cost a kept claim (see `maxIdleTimeForProtected`).
        pool.acquire(freshWithin: UpstreamPool.maxIdleTimeForProtected) { result in
            switch result {
            case .failure(let error):
                exchange.finish(.notConnected(error))
            case .success(let connection):
                exchange.connection = connection
                connection.begin(receiver: exchange, timeout: timeout)
                connection.write(.head(head))
                if body.readableBytes > 0 { connection.write(.body(body)) }
                connection.write(.end)
                connection.flush()
            }
        }
        return exchange
    }

    /// The spill's client can take more again.
    func resume() {
        connection?.resumeReads()
    }

    func upstreamResponseHead(_ head: ResponseHead) {
        self.head = head
        if let length = head.contentLength, length <= spillAfter ?? 64 * 1_048_576 {
            body.reserveCapacity(length)
        }
    }

    func upstreamResponseBody(_ buffer: ByteBuffer) {
        if let spilled = spilledBytes {
            spilledBytes = spilled + buffer.readableBytes
            // A client that went away takes nothing more: keep reading so the exchange ends.
            if spill?.spillBody(buffer) == false { connection?.pauseReads() }
            return
        }
        var buffer = buffer
        body.writeBuffer(&buffer)
        if let spillAfter, body.readableBytes > spillAfter, let head {
            spilledBytes = body.readableBytes
            let taken = body
            body = ByteBuffer()
            if spill?.spillStarted(head: head, body: taken) == false { connection?.pauseReads() }
        }
    }

    func upstreamResponseEnd() {
        if let connection { pool.release(connection) }
        connection = nil
        guard let head else { return finish(.failed(.invalidResponse)) }
        if let spilledBytes {
            finish(.spilled(head, bodyLength: spilledBytes))
        } else {
            finish(.response(head, body))
        }
    }

    func upstreamFailed(_ failure: UpstreamFailure) {
        connection = nil
        finish(.failed(failure))
    }

    func upstreamWritabilityChanged(isWritable: Bool) {}

    private func finish(_ outcome: Outcome) {
        let completion = self.completion
        self.completion = nil
        completion?(outcome)
    }
}
