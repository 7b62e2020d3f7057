/// What the Sentinels and a master say, read without I/O (docs/behaviour.md, "Redis Sentinel").
package enum SentinelReplies {
    /// `SENTINEL get-master-addr-by-name NAME`: `[host, port]`, or nil when the Sentinel does not
    /// monitor that name (a null reply).
    package static func masterAddress(_ reply: RedisReply) throws(RedisError) -> ClusterNode? {
        switch reply {
        case .null: return nil
        case .error(let message): throw .server(message)
        case .array(let items):
            guard items.count == 2, let host = items[0].string, let port = items[1].string.flatMap({ Int($0) }),
                !host.isEmpty, (1...65_535).contains(port)
            else { throw .unexpectedReply("SENTINEL get-master-addr-by-name: \(reply)") }
            return ClusterNode(host: host, port: port)
        default:
            throw .unexpectedReply("SENTINEL get-master-addr-by-name: \(reply)")
        }
    }

    /// The `+switch-master` message: `NAME old-host old-port new-host new-port`; the new master
    /// when it is about `name`.
    package static func switchedMaster(_ payload: String, name: String) -> ClusterNode? {
        let fields = payload.split(separator: " ")
        guard fields.count == 5, fields[0] == name, let port = Int(fields[4]), (1...65_535).contains(port) else { return nil }
        return ClusterNode(host: String(fields[3]), port: port)
    }

    /// `ROLE`: whether the server is a master now (a replica, a Sentinel or an error is not).
    package static func isMaster(_ reply: RedisReply) -> Bool {
        guard case .array(let items) = reply, let role = items.first?.string else { return false }
        return role == "master"
    }

    /// A command refused because the server is no master (any longer): a failover happened, or
    /// is happening, and the master must be asked for again.
    package static func saysNotMaster(_ message: String) -> Bool {
        message.hasPrefix("READONLY") || message.hasPrefix("MASTERDOWN")
    }
}
