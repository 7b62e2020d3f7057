import NIOCore

/// Sharded Pub/Sub over a Redis Cluster, confined to the cluster client's event loop: each
/// channel is subscribed (`SSUBSCRIBE`) on the primary that serves its slot, through one
/// subscriber connection per primary. A message (`SPUBLISH`) then stays inside its shard
/// instead of going to every node, and a node that is down silences only its own channels.
///
/// Channels follow their slot: when the slot map changes (a failover, a migration; the server
/// also says `sunsubscribe` when a slot leaves it) they are subscribed again where they now
/// belong. Until then the callers' poll covers them.
public final class RedisClusterSubscriber: RedisPubSub {
    public let publishCommand = "SPUBLISH"
    public var onRefused: ((_ error: String) -> Void)?
    private var refusalTold = false
    private let cluster: RedisClusterClient
    private let configuration: RedisConfiguration
    private var listeners = PubSubListeners()
    /// The node each channel is subscribed on. A channel with listeners but no entry (the
    /// server dropped or refused it) is placed again at the next slot map.
    private var placement: [String: ClusterNode] = [:]
    private var connections: [ClusterNode: RedisConnection] = [:]
    private var closed = false

    /// Call on the cluster client's event loop. Takes over `cluster.onSlotMapChange`.
    public init(cluster: RedisClusterClient, configuration: RedisConfiguration) {
        self.cluster = cluster
        self.configuration = configuration
        cluster.onSlotMapChange = { [weak self] in self?.followSlots() }
    }

    public func subscribe(_ channel: String, listener: @escaping () -> Void) -> Int {
        let (id, first) = listeners.add(channel, listener)
        if first { place(channel) }
        return id
    }

    public func unsubscribe(_ channel: String, id: Int) {
        guard listeners.remove(channel, id: id), let node = placement.removeValue(forKey: channel) else { return }
        connections[node]?.sendUnanswered(["SUNSUBSCRIBE", .string(channel)])
    }

    public func close() {
        closed = true
        for connection in connections.values { connection.close() }
        connections.removeAll()
    }

    private func place(_ channel: String) {
        guard !closed else { return }
        let node = cluster.node(forKey: channel)
        placement[channel] = node
        connection(to: node).sendUnanswered(["SSUBSCRIBE", .string(channel)])
    }

    /// Subscribes channels where their slot is served now, and lets go of former primaries.
    private func followSlots() {
        for channel in listeners.channels where placement[channel] != cluster.node(forKey: channel) {
            if let node = placement[channel] { connections[node]?.sendUnanswered(["SUNSUBSCRIBE", .string(channel)]) }
            place(channel)
        }
        let kept = Set(cluster.knownNodes).union(placement.values)
        for (node, connection) in connections where !kept.contains(node) {
            connection.close()
            connections[node] = nil
        }
    }

    private func connection(to node: ClusterNode) -> RedisConnection {
        if let connection = connections[node] { return connection }
        let connection = RedisConnection(configuration: configuration.addressed(to: node), eventLoop: cluster.eventLoop) {
            [weak self] reply in self?.received(reply, from: node)
        }
        // Commands sent while connecting are dropped; this is where they are made.
        connection.onReady = { [weak self, weak connection] in
            guard let self, let connection else { return }
            for (channel, placed) in self.placement where placed == node {
                connection.sendUnanswered(["SSUBSCRIBE", .string(channel)])
            }
        }
        connections[node] = connection
        return connection
    }

    private func received(_ reply: RedisReply, from node: ClusterNode) {
        switch RedisPush(reply) {
        case .message(let channel, _):
            for listener in listeners.listeners(of: channel) { listener() }
        case .unsubscribed(let channel) where placement[channel] == node:
            // Not our doing (we forget a channel before unsubscribing it): its slot moved.
            placement[channel] = nil
            cluster.refreshSlotMap()
        case .error(let message) where ClusterRedirect(error: message, answeredBy: node) != nil:
            // A refused SSUBSCRIBE (`MOVED`: the map is out of date); the reply does not say
            // which channel, so every channel on this node is placed again.
            placement = placement.filter { $0.value != node }
            cluster.refreshSlotMap()
        case .error(let message) where !refusalTold:
            // Other refusals (no permission, no SSUBSCRIBE before Redis 7) would only repeat.
            refusalTold = true
            onRefused?("\(node): \(message)")
        case .error, .unsubscribed, .other:
            break
        }
    }
}
