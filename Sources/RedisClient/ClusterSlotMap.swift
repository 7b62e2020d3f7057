/// One node of a Redis Cluster, as `CLUSTER SLOTS` and redirections name it.
public struct ClusterNode: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String { RedisConfiguration.Address.tcp(host: host, port: port).description }
}

/// Which primary serves each hash slot, from `CLUSTER SLOTS`, kept current by `MOVED`.
package struct ClusterSlotMap {
    private(set) var nodes: [ClusterNode] = []
    private var indexes: [ClusterNode: UInt16] = [:]
    /// Index into `nodes` per slot; `unassigned` for a slot no node serves.
    private var owners = [UInt16](repeating: unassigned, count: HashSlot.count)
    private static let unassigned = UInt16.max

    init() {}

    /// Reads a `CLUSTER SLOTS` reply: `[start, end, [host, port, id…], replicas…]` per range.
    /// An empty host means the node that was asked (`askedHost`).
    package init(clusterSlots reply: RedisReply, askedHost: String) throws(RedisError) {
        if case .error(let message) = reply { throw RedisError.server(message) }
        guard case .array(let ranges) = reply else { throw RedisError.unexpectedReply("CLUSTER SLOTS: \(reply)") }
        for range in ranges {
            guard case .array(let fields) = range, fields.count >= 3,
                case .integer(let start) = fields[0], case .integer(let end) = fields[1],
                0 <= start, start <= end, end < HashSlot.count,
                case .array(let primary) = fields[2], primary.count >= 2,
                let host = primary[0].string, case .integer(let port) = primary[1], (1...65535).contains(port)
            else { throw RedisError.unexpectedReply("CLUSTER SLOTS range: \(range)") }
            guard let index = self.index(of: ClusterNode(host: host.isEmpty ? askedHost : host, port: Int(port))) else {
                throw RedisError.unexpectedReply("CLUSTER SLOTS names more nodes than there are slots")
            }
            for slot in Int(start)...Int(end) { owners[slot] = index }
        }
    }

    var isEmpty: Bool { nodes.isEmpty }

    func node(forSlot slot: Int) -> ClusterNode? {
        let index = owners[slot]
        return index == Self.unassigned ? nil : nodes[Int(index)]
    }

    /// Ignored when the map is full of nodes (a refresh follows every `MOVED` anyway).
    mutating func assign(slot: Int, to node: ClusterNode) {
        if let index = index(of: node) { owners[slot] = index }
    }

    /// Nil once the map names as many nodes as there are slots: more cannot all own one, and
    /// an index must stay below `unassigned`.
    private mutating func index(of node: ClusterNode) -> UInt16? {
        if let known = indexes[node] { return known }
        guard nodes.count < HashSlot.count else { return nil }
        let index = UInt16(nodes.count)
        nodes.append(node)
        indexes[node] = index
        return index
    }
}
