import NIOCore
import NIOHTTP1

/// One upstream exchange with the whole request at hand and the whole response collected:
/// what a protected request needs, since its answer must be fingerprinted and stored.
final class BufferedExchange: UpstreamReceiver {
    enum Outcome {
        case response(HTTPResponseHead, ByteBuffer)
        /// No connection: nothing was sent.
        case notConnected(Error)
        case failed(UpstreamFailure)
    }

    private let pool: UpstreamPool
    private var connection: UpstreamConnection?
    private var head: HTTPResponseHead?
    private var body: ByteBuffer
    private var completion: ((Outcome) -> Void)?

    private init(pool: UpstreamPool, allocator: ByteBufferAllocator, completion: @escaping (Outcome) -> Void) {
        self.pool = pool
        self.body = allocator.buffer(capacity: 0)
        self.completion = completion
    }

    static func run(
        pool: UpstreamPool,
        head: HTTPRequestHead,
        body: ByteBuffer,
        timeout: TimeAmount,
        allocator: ByteBufferAllocator,
        completion: @escaping (Outcome) -> Void
    ) {
        let exchange = BufferedExchange(pool: pool, allocator: allocator, completion: completion)
        pool.acquire { result in
            switch result {
            case .failure(let error):
                exchange.finish(.notConnected(error))
            case .success(let connection):
                exchange.connection = connection
                connection.begin(receiver: exchange, timeout: timeout)
                connection.write(.head(head), flush: false)
                if body.readableBytes > 0 { connection.write(.body(.byteBuffer(body)), flush: false) }
                connection.write(.end(nil), flush: true)
            }
        }
    }

    func upstreamResponseHead(_ head: HTTPResponseHead) {
        self.head = head
        if let length = head.headers.first(name: "content-length").flatMap(Int.init), length <= 64 * 1_048_576 {
            body.reserveCapacity(length)
        }
    }

    func upstreamResponseBody(_ buffer: ByteBuffer) {
        var buffer = buffer
        body.writeBuffer(&buffer)
    }

    func upstreamResponseEnd() {
        if let connection { pool.release(connection) }
        connection = nil
        guard let head else { return finish(.failed(.invalidResponse)) }
        finish(.response(head, body))
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
