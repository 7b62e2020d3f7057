import PostgresNIO

/// Why the long-term store gave no usable answer, worded for a log line.
enum LongTermStoreError: Error, Equatable, CustomStringConvertible {
    /// Not connected (refused, unreachable, closed) or reconnecting.
    case unavailable(String)
    /// No answer within `postgres_timeout`.
    case timeout
    /// PostgreSQL answered with an error (SQLSTATE and message).
    case server(sqlState: String, message: String)
    /// A row that is not a record this proxy wrote.
    case malformedRecord(String)
    /// The table exists but lacks what the proxy needs (SPEC §8.5).
    case unusableTable(String)

    init(_ error: any Error) {
        switch error {
        case let e as LongTermStoreError:
            self = e
        case let e as PSQLError:
            if let info = e.serverInfo {
                self = .server(sqlState: info[.sqlState] ?? "?", message: info[.message] ?? "\(e.code)")
            } else {
                self = .unavailable("\(e.code)\(e.underlying.map { ": \($0)" } ?? "")")
            }
        case let e as PostgresError:
            switch e {
            case .server(let message):
                self = .server(sqlState: message.fields[.sqlState] ?? "?", message: message.fields[.message] ?? "\(message)")
            case .connectionClosed: self = .unavailable("connection closed")
            case .protocol(let detail): self = .unavailable("protocol error: \(detail)")
            }
        default:
            self = .unavailable("\(error)")
        }
    }

    /// The connection cannot be trusted with the next statement. A statement the server
    /// refused leaves it usable, except for a failed login (SQLSTATE class 28) and a server
    /// shutting the session down (57P: admin shutdown, crash, cannot connect now).
    var brokeConnection: Bool {
        switch self {
        case .unavailable, .timeout: return true
        case .server(let sqlState, _): return sqlState.hasPrefix("28") || sqlState.hasPrefix("57P")
        case .malformedRecord, .unusableTable: return false
        }
    }

    /// Another try of a settlement may succeed: not connected, or a server restarting (57P,
    /// such as 57P01 shutting down and 57P03 starting up) or out of connections (53300). A
    /// timeout is not one: a paused server would hold the client for every try.
    var mayPass: Bool {
        switch self {
        case .unavailable: return true
        case .server(let sqlState, _): return sqlState.hasPrefix("57P") || sqlState == "53300"
        case .timeout, .malformedRecord, .unusableTable: return false
        }
    }

    /// Something only a change of configuration, rights or schema mends: a failed login
    /// (class 28), a missing database (3D000), an unusable table. A server starting up or out
    /// of connections is not one.
    var isMisconfiguration: Bool {
        switch self {
        case .unusableTable: return true
        case .server(let sqlState, _): return sqlState.hasPrefix("28") || sqlState == "3D000"
        case .unavailable, .timeout, .malformedRecord: return false
        }
    }

    var description: String {
        switch self {
        case .unavailable(let why): return "PostgreSQL unavailable: \(why)"
        case .timeout: return "PostgreSQL did not answer within postgres_timeout"
        case .server(let sqlState, let message): return "PostgreSQL error \(sqlState): \(message)"
        case .malformedRecord(let why): return "malformed idempotency record in PostgreSQL: \(why)"
        case .unusableTable(let why): return why
        }
    }
}
