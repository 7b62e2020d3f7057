import IdempotencyCore
import PostgresNIO

/// Why the long-term store gave no usable answer, worded for a log line.
enum LongTermStoreError: Error, Equatable, CustomStringConvertible {
    /// Not connected (refused, unreachable, closed) or reconnecting: nothing was sent.
    case unavailable(String)
    /// The statement was sent and the connection broke before its answer: it may have run.
    case unanswered(String)
    /// The statement was sent and no answer came within `postgres_timeout`: it may still run.
    case timeout
    /// PostgreSQL answered with an error (SQLSTATE and message).
    case server(sqlState: String, message: String)
    /// A row that is not a record this proxy wrote.
    case malformedRecord(String)
    /// PostgreSQL ran the claim after its deadline and wrote nothing: it was stalled, or its
    /// clock is ahead of this host's by more than `postgres_timeout`.
    case lateClaim
    /// The table exists but lacks what the proxy needs (docs/behaviour.md §3, long-term store).
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
        case .unavailable, .unanswered, .timeout: return true
        case .server(let sqlState, _): return sqlState.hasPrefix("28") || sqlState.hasPrefix("57P")
        case .malformedRecord, .unusableTable, .lateClaim: return false
        }
    }

    /// What this means to the request machine: a server restarting (57P, such as 57P01
    /// shutting down and 57P03 starting up) or out of connections (53300) is unavailable for
    /// now, like one not connected; so is a statement rolled back as a deadlock's victim
    /// (40P01) or in a serialization failure (40001), which wrote nothing.
    var failure: ProtectedRequestMachine.StoreFailure {
        switch self {
        case .unavailable: return .unavailable
        case .unanswered: return .interrupted
        case .timeout: return .timedOut
        case .server(let sqlState, _):
            return sqlState.hasPrefix("57P") || ["53300", "40P01", "40001"].contains(sqlState) ? .unavailable : .refused
        case .malformedRecord: return .unreadable
        case .lateClaim, .unusableTable: return .refused
        }
    }

    /// Something only a change of configuration, rights or schema mends: a failed login
    /// (class 28), a missing database (3D000), an unusable table. A server starting up or out
    /// of connections is not one.
    var isMisconfiguration: Bool {
        switch self {
        case .unusableTable: return true
        case .server(let sqlState, _): return sqlState.hasPrefix("28") || sqlState == "3D000"
        case .unavailable, .unanswered, .timeout, .malformedRecord, .lateClaim: return false
        }
    }

    var description: String {
        switch self {
        case .unavailable(let why): return "PostgreSQL unavailable: \(why)"
        case .unanswered(let why): return "PostgreSQL connection lost before the answer: \(why)"
        case .timeout: return "PostgreSQL did not answer within postgres_timeout"
        case .server(let sqlState, let message): return "PostgreSQL error \(sqlState): \(message)"
        case .malformedRecord(let why): return "malformed idempotency record in PostgreSQL: \(why)"
        case .unusableTable(let why): return why
        case .lateClaim: return "PostgreSQL ran the claim after its deadline (a stall, or its clock ahead of this host's); nothing was claimed"
        }
    }
}
