import CHiredis

/// Everything that can go wrong with a Redis command, as one value.
///
/// The first five cases mirror hiredis's `REDIS_ERR_*` codes one to one; the rest are ours.
public enum RedisError: Error, Equatable, Sendable, CustomStringConvertible {
    /// `REDIS_ERR_IO`: the socket failed.
    case io(String)
    /// `REDIS_ERR_EOF`: the server closed the connection.
    case eof
    /// `REDIS_ERR_PROTOCOL`: the bytes received are not RESP.
    case protocolError(String)
    /// `REDIS_ERR_OOM`: hiredis could not allocate.
    case outOfMemory
    /// `REDIS_ERR_OTHER`: anything else hiredis reports.
    case other(String)
    /// No reply within the per-command timeout; the connection is dropped and re-established.
    case timeout
    /// The connection was lost while the command was in flight: it may or may not have run.
    case connectionClosed
    /// There is no connection right now (reconnecting); the command was not sent.
    case notConnected(String)
    /// The server answered with an error reply (`-ERR …`, `-WRONGPASS …`).
    case server(String)
    /// The reply had a shape the caller did not expect.
    case unexpectedReply(String)

    /// Maps a hiredis reader error code to its case.
    init(hiredisCode: Int32, message: String) {
        switch hiredisCode {
        case REDIS_ERR_IO: self = .io(message)
        case REDIS_ERR_EOF: self = .eof
        case REDIS_ERR_PROTOCOL: self = .protocolError(message)
        case REDIS_ERR_OOM: self = .outOfMemory
        default: self = .other(message)  // REDIS_ERR_OTHER and unknown codes
        }
    }

    public var description: String {
        switch self {
        case .io(let m): return "Redis I/O error: \(m)"
        case .eof: return "Redis closed the connection"
        case .protocolError(let m): return "Redis protocol error: \(m)"
        case .outOfMemory: return "out of memory while reading a Redis reply"
        case .other(let m): return "Redis error: \(m)"
        case .timeout: return "Redis command timed out"
        case .connectionClosed: return "Redis connection lost while the command was in flight"
        case .notConnected(let m): return "not connected to Redis: \(m)"
        case .server(let m): return "Redis replied with an error: \(m)"
        case .unexpectedReply(let m): return "unexpected Redis reply: \(m)"
        }
    }
}
