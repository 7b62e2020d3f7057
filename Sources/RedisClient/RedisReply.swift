import NIOCore

/// A RESP2 reply, deep-copied out of hiredis so that no C pointer outlives the reader.
public enum RedisReply: Equatable, Sendable {
    /// `+OK`-style simple string.
    case status(String)
    /// `-ERR …` reply: the server refused the command, the connection is fine.
    case error(String)
    case integer(Int64)
    /// Bulk string; binary-safe.
    case bulk(ByteBuffer)
    /// `$-1` or `*-1`.
    case null
    case array([RedisReply])
}

extension RedisReply {
    /// The bulk payload as bytes, or nil for any other kind of reply.
    public var bytes: [UInt8]? {
        if case .bulk(let buffer) = self { return Array(buffer.readableBytesView) }
        return nil
    }

    /// The bulk or status payload as UTF-8 text.
    public var string: String? {
        switch self {
        case .bulk(let buffer): return String(buffer: buffer)
        case .status(let text): return text
        default: return nil
        }
    }
}
