/// `MOVED slot host:port` (the slot has a new owner: remember it) or `ASK slot host:port`
/// (the slot is migrating: ask that node this once, after `ASKING`).
package struct ClusterRedirect: Equatable {
    enum Kind { case moved, ask }
    let kind: Kind
    let slot: Int
    let node: ClusterNode

    /// Nil for any other error reply. An empty host means the node that answered.
    package init?(error message: String, answeredBy: ClusterNode) {
        let parts = message.split(separator: " ")
        guard parts.count == 3, let slot = Int(parts[1]), (0..<HashSlot.count).contains(slot) else { return nil }
        switch parts[0] {
        case "MOVED": kind = .moved
        case "ASK": kind = .ask
        default: return nil
        }
        let address = parts[2]
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
            (1...65535).contains(port)
        else { return nil }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self.slot = slot
        node = ClusterNode(host: host.isEmpty ? answeredBy.host : host, port: port)
    }
}
