import IdempotencyCore
import NIOCore

extension IdempotencyRecord {
    /// A record read from a store's reply in place: the reply's bytes are not copied first.
    static func decode(_ buffer: ByteBuffer) throws(Malformed) -> IdempotencyRecord {
        try buffer.withUnsafeReadableBytes { bytes in Result { () throws(Malformed) in try decode(bytes) } }.get()
    }
}
