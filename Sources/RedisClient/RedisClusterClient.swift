import NIOCore

/// Redis Cluster, confined to one event loop: one pipelined `RedisConnection` per primary,
/// each command sent to the primary that serves its key's hash slot.
///
/// The slot map comes from `CLUSTER SLOTS`, asked of the seed nodes (and of every node known
/// since) when the client starts, and again after a `MOVED` redirection or a lost connection
/// (a failover moves slots). A `MOVED` reply is followed at once to the node it names and
/// remembered; an `ASK` reply (a slot being migrated) is followed once, after `ASKING`. Until
/// the first map arrives, commands go to the first seed and follow its redirections.
public final class RedisClusterClient: RedisCommands {
    public let eventLoop: any EventLoop
    /// Credentials and timeout shared by every node; the address is each node's.
    private let configuration: RedisConfiguration
    private let seeds: [ClusterNode]
    private var map = ClusterSlotMap()
    private var connections: [ClusterNode: RedisConnection] = [:]
    private var refreshing = false
    private var lastRefresh: NIODeadline?
    private var closed = false
    public var onAvailabilityChange: ((_ server: String, _ available: Bool, _ error: RedisError?) -> Void)?
    /// Told once when no node gives a slot map (until one does again): every node down, or
    /// `redis_cluster = true` pointed at a Redis without cluster support.
    public var onSlotMapUnavailable: ((_ reason: String) -> Void)?
    private var slotMapUnavailableTold = false
    /// Told after each slot map read and each `MOVED` (the map may have changed).
    public var onSlotMapChange: (() -> Void)?

    /// Redirections one command may follow; more means the cluster is reconfiguring.
    static let maxRedirects = 5
    /// A refresh asked for sooner than this after the last one waits for it.
    static let refreshInterval = TimeAmount.milliseconds(100)

    /// Call on `eventLoop`. `configuration.address` is ignored; `database` must be 0 (a cluster
    /// has no other).
    public init(seeds: [ClusterNode], configuration: RedisConfiguration, eventLoop: any EventLoop) {
        precondition(!seeds.isEmpty, "a cluster needs at least one seed node")
        eventLoop.preconditionInEventLoop()
        self.seeds = seeds
        self.configuration = configuration
        self.eventLoop = eventLoop
        refresh()
    }

    public func send(_ arguments: [RedisArgument], key: RedisArgument?, completion: @escaping RedisCompletion) {
        let node = key.map { owner(ofSlot: $0.hashSlot) } ?? anyNode
        dispatch(.command(arguments), to: node, asking: false, redirects: 0, completion: completion)
    }

    public func run(
        _ script: RedisScript,
        keys: [RedisArgument],
        arguments: [RedisArgument],
        completion: @escaping RedisCompletion
    ) {
        let node = keys.first.map { owner(ofSlot: $0.hashSlot) } ?? anyNode
        dispatch(.script(script, keys: keys, arguments: arguments), to: node, asking: false, redirects: 0, completion: completion)
    }

    /// Every primary that serves slots must answer (one down leaves its slots unserved).
    public func ping(completion: @escaping (Result<Void, RedisError>) -> Void) {
        guard !closed else { return completion(.failure(.notConnected("the cluster client was closed"))) }
        let nodes = map.isEmpty ? [seeds[0]] : map.nodes
        var remaining = nodes.count
        var failure: RedisError?
        for node in nodes {
            connection(to: node).ping { result in
                if case .failure(let error) = result, failure == nil { failure = .notConnected("\(node): \(error)") }
                remaining -= 1
                if remaining == 0 { completion(failure.map { .failure($0) } ?? .success(())) }
            }
        }
    }

    public func close() {
        closed = true
        for connection in connections.values { connection.close() }
        connections.removeAll()
    }

    /// The primaries known now.
    public var knownNodes: [ClusterNode] { map.nodes }

    /// The primary that serves `key`'s slot, as far as is known.
    public func node(forKey key: String) -> ClusterNode {
        owner(ofSlot: HashSlot.of(key.utf8))
    }

    /// Asks for the slot map again (at most every `refreshInterval`).
    public func refreshSlotMap() { refresh() }

    // MARK: - routing

    private enum Command {
        case command([RedisArgument])
        case script(RedisScript, keys: [RedisArgument], arguments: [RedisArgument])
    }

    private func owner(ofSlot slot: Int) -> ClusterNode {
        map.node(forSlot: slot) ?? anyNode
    }

    private var anyNode: ClusterNode { map.nodes.first ?? seeds[0] }

    private func dispatch(
        _ command: Command,
        to node: ClusterNode,
        asking: Bool,
        redirects: Int,
        completion: @escaping RedisCompletion
    ) {
        guard !closed else { return completion(.failure(.notConnected("the cluster client was closed"))) }
        let connection = connection(to: node)
        let handle: RedisCompletion = { result in
            switch result {
            case .success(.error(let message)):
                guard let redirect = ClusterRedirect(error: message, answeredBy: node) else { return completion(result) }
                guard redirects < Self.maxRedirects else {
                    return completion(.failure(.server("too many cluster redirections, last: \(message)")))
                }
                if redirect.kind == .moved {
                    self.map.assign(slot: redirect.slot, to: redirect.node)
                    self.refresh()
                    self.onSlotMapChange?()
                }
                self.dispatch(
                    command, to: redirect.node, asking: redirect.kind == .ask, redirects: redirects + 1,
                    completion: completion)
            case .failure:
                // The node may be gone for good (a failover promotes a replica elsewhere).
                self.refresh()
                completion(result)
            case .success:
                completion(result)
            }
        }
        switch command {
        case .command(let arguments):
            if asking { connection.send(["ASKING"]) { _ in } }
            connection.send(arguments, completion: handle)
        case .script(let script, let keys, let arguments):
            connection.run(script, keys: keys, arguments: arguments, asking: asking, completion: handle)
        }
    }

    private func connection(to node: ClusterNode) -> RedisConnection {
        if let connection = connections[node] { return connection }
        let connection = RedisConnection(configuration: configuration.addressed(to: node), eventLoop: eventLoop)
        connection.onAvailabilityChange = { [weak self] server, available, error in
            self?.onAvailabilityChange?(server, available, error)
        }
        connections[node] = connection
        return connection
    }

    // MARK: - the slot map

    /// Asks for the slot map again, unless a refresh is under way or has just been done (it
    /// then runs once that interval is over).
    private func refresh() {
        guard !refreshing, !closed else { return }
        refreshing = true
        let now = NIODeadline.now()
        if let lastRefresh, now - lastRefresh < Self.refreshInterval {
            eventLoop.assumeIsolated().scheduleTask(deadline: lastRefresh + Self.refreshInterval) { self.askForSlots() }
        } else {
            askForSlots()
        }
    }

    private func askForSlots() {
        lastRefresh = .now()
        var candidates = map.nodes
        for seed in seeds where !candidates.contains(seed) { candidates.append(seed) }
        ask(candidates[...], lastProblem: "no node to ask")
    }

    /// Asks each candidate in turn until one answers with a map.
    private func ask(_ candidates: ArraySlice<ClusterNode>, lastProblem: String) {
        guard !closed else { return }
        guard let node = candidates.first else {
            // Nobody answered: try again later; commands meanwhile use what is known.
            refreshing = false
            if !slotMapUnavailableTold {
                slotMapUnavailableTold = true
                onSlotMapUnavailable?(lastProblem)
            }
            eventLoop.assumeIsolated().scheduleTask(in: .seconds(1)) { self.refresh() }
            return
        }
        connection(to: node).send(["CLUSTER", "SLOTS"]) { result in
            let map: ClusterSlotMap
            do {
                map = try ClusterSlotMap(clusterSlots: result.get(), askedHost: node.host)
                guard !map.isEmpty else { throw RedisError.unexpectedReply("no slots are served") }
            } catch {
                return self.ask(candidates.dropFirst(), lastProblem: "CLUSTER SLOTS on \(node): \(error)")
            }
            self.map = map
            self.refreshing = false
            self.slotMapUnavailableTold = false
            self.dropConnectionsToFormerNodes()
            self.onSlotMapChange?()
        }
    }

    /// Nodes no longer serving slots (removed, or demoted to replicas) are not kept connected;
    /// seeds stay, they are where the next refresh starts.
    private func dropConnectionsToFormerNodes() {
        let current = Set(map.nodes).union(seeds)
        for (node, connection) in connections where !current.contains(node) {
            connection.close()
            connections[node] = nil
        }
    }
}

extension RedisConfiguration {
    /// The settings for one node of a cluster: its address, the shared credentials, database 0.
    func addressed(to node: ClusterNode) -> RedisConfiguration {
        var configuration = self
        configuration.address = .tcp(host: node.host, port: node.port)
        configuration.database = 0
        return configuration
    }
}
