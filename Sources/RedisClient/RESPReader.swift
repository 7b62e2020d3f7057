import CHiredis
import NIOCore

/// hiredis's `redisReader`: feed it bytes as they arrive, take out complete replies.
///
/// Not thread-safe and not Sendable: one reader belongs to one connection on one event loop.
public final class RESPReader {
    private let reader: UnsafeMutablePointer<redisReader>
    /// Refuses array replies too long to allocate (see `shim.h`); outlives `reader`.
    private let guardrail: UnsafeMutablePointer<chiredis_reader_guard>

    /// Arrays announcing more elements are refused as a protocol error.
    public static let maxArrayElements = Int(CHIREDIS_MAX_ARRAY_ELEMENTS)

    public init() {
        guardrail = .allocate(capacity: 1)
        guard let reader = chiredis_reader_create(guardrail) else { fatalError("hiredis could not allocate a reader") }
        self.reader = reader
    }

    deinit {
        redisReaderFree(reader)
        guardrail.deallocate()
    }

    /// Appends received bytes; hiredis copies them into its own buffer.
    public func feed(_ buffer: ByteBuffer) throws(RedisError) {
        let status = buffer.withUnsafeReadableBytes { bytes -> Int32 in
            guard let base = bytes.baseAddress else { return REDIS_OK }
            return redisReaderFeed(reader, base.assumingMemoryBound(to: CChar.self), bytes.count)
        }
        if status != REDIS_OK { throw currentError() }
    }

    /// The next complete reply, or nil if more bytes are needed.
    public func next() throws(RedisError) -> RedisReply? {
        var raw: UnsafeMutableRawPointer?
        guard redisReaderGetReply(reader, &raw) == REDIS_OK else { throw currentError() }
        guard let raw else { return nil }
        defer { freeReplyObject(raw) }
        return Self.copy(raw.assumingMemoryBound(to: redisReply.self))
    }

    private func currentError() -> RedisError {
        let refused = guardrail.pointee.refusedElements
        if refused != 0 {
            return .protocolError("a reply announced an array of \(refused) elements, over the limit of \(Self.maxArrayElements)")
        }
        let message = withUnsafeBytes(of: reader.pointee.errstr) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        return RedisError(hiredisCode: reader.pointee.err, message: message)
    }

    /// Copies a hiredis reply tree into Swift values; the C tree is freed by the caller.
    private static func copy(_ reply: UnsafeMutablePointer<redisReply>) -> RedisReply {
        let r = reply.pointee
        switch r.type {
        case REDIS_REPLY_STRING:
            var buffer = ByteBufferAllocator().buffer(capacity: r.len)
            if r.len > 0 { buffer.writeBytes(UnsafeRawBufferPointer(start: r.str, count: r.len)) }
            return .bulk(buffer)
        case REDIS_REPLY_STATUS:
            return .status(text(r))
        case REDIS_REPLY_ERROR:
            return .error(text(r))
        case REDIS_REPLY_INTEGER:
            return .integer(Int64(r.integer))
        case REDIS_REPLY_ARRAY:
            var elements: [RedisReply] = []
            elements.reserveCapacity(r.elements)
            for i in 0..<r.elements {
                if let element = r.element[i] { elements.append(copy(element)) } else { elements.append(.null) }
            }
            return .array(elements)
        default:  // REDIS_REPLY_NIL
            return .null
        }
    }

    private static func text(_ r: redisReply) -> String {
        guard r.len > 0, let str = r.str else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: str, count: r.len), as: UTF8.self)
    }
}
