import NIOCore

/// Redis behind Sentinel, confined to one event loop: one pipelined `RedisConnection` to the
/// master the Sentinels name, moved to the new master after a failover.
///
/// The Sentinels are asked in turn (`SENTINEL get-master-addr-by-name`), the one that answered
/// last first; the master they name is used only once `ROLE` says it is one. The client
/// listens for `+switch-master` on every Sentinel, and asks again whenever the master stops
/// answering or answers `READONLY` or `MASTERDOWN` (a failover the messages did not announce,
/// or an old master that came back as a replica). While no master is known, commands fail at
/// once, so that the request path falls back (PostgreSQL alone, or `on_redis_error`) rather
/// than wait.
public final class RedisSentinelClient: RedisCommands {
    public let eventLoop: any EventLoop
    private let masterName: String
    private let sentinels: [ClusterNode]
    /// The master's credentials, database, timeout and TLS; its address is what the Sentinels say.
    private let configuration: RedisConfiguration
    /// How the Sentinels are reached: `sentinelPassword`, database 0, the same TLS and timeout.
    private let sentinelConfiguration: RedisConfiguration
    private var master: (node: ClusterNode, connection: RedisConnection)?
    private var askers: [ClusterNode: RedisConnection] = [:]
    private var watchers: [RedisConnection] = []
    /// The Sentinel to ask first: the one that answered last.
    private var preferred = 0
    private var discovering = false
    private var nextDiscovery: Scheduled<Void>?
    private var lastDiscovery = NIODeadline.distantPast
    /// Counts the masters adopted, so that a discovery that began before the last switch does
    /// not bring back the master it replaced.
    private var adoptions = 0
    private var unknownTold = false
    private var closed = false

    public var onAvailabilityChange: ((_ server: String, _ available: Bool, _ error: RedisError?) -> Void)?
    /// Told each time this client starts using a master.
    public var onMasterChange: ((_ new: ClusterNode) -> Void)?
    /// Told once when no Sentinel names a master that answers as one (until one does).
    public var onMasterUnknown: ((_ reason: String) -> Void)?

    /// Discoveries come at most this often: a burst of failing commands asks once.
    static let discoveryInterval = TimeAmount.milliseconds(200)
    /// While no master is known (the Sentinels are mid-failover), ask again this often.
    static let unknownRetry = TimeAmount.milliseconds(500)

    /// Call on `eventLoop`. `configuration.address` is ignored.
    public init(
        masterName: String, sentinels: [ClusterNode], sentinelPassword: String?, configuration: RedisConfiguration,
        eventLoop: any EventLoop
    ) {
        precondition(!sentinels.isEmpty, "Sentinel needs at least one Sentinel")
        eventLoop.preconditionInEventLoop()
        self.masterName = masterName
        self.sentinels = sentinels
        self.configuration = configuration
        self.eventLoop = eventLoop
        var sentinel = configuration
        sentinel.username = nil
        sentinel.password = sentinelPassword
        sentinel.database = 0
        sentinelConfiguration = sentinel
        for node in sentinels { watch(node) }
        discover()
    }

    /// The master in use, if any.
    public var currentMaster: ClusterNode? { master?.node }

    public var serverInUse: String? { master.map { "master \($0.node), from the Sentinels" } }

    /// The settings of a connection to `node` as the master (the subscriber follows with them).
    public func masterConfiguration(_ node: ClusterNode) -> RedisConfiguration {
        var configuration = self.configuration
        configuration.address = .tcp(host: node.host, port: node.port)
        return configuration
    }

    public func send(_ arguments: [RedisArgument], key: RedisArgument?, completion: @escaping RedisCompletion) {
        guard let master else { return noMaster(completion) }
        master.connection.send(arguments) { result in
            self.check(result)
            completion(result)
        }
    }

    public func run(_ script: RedisScript, keys: [RedisArgument], arguments: [RedisArgument], completion: @escaping RedisCompletion) {
        guard let master else { return noMaster(completion) }
        master.connection.run(script, keys: keys, arguments: arguments) { result in
            self.check(result)
            completion(result)
        }
    }

    public func ping(completion: @escaping (Result<Void, RedisError>) -> Void) {
        guard let master else { return completion(.failure(Self.noMasterError)) }
        master.connection.ping { result in
            if case .failure = result { self.discover() }
            completion(result)
        }
    }

    public func close() {
        closed = true
        nextDiscovery?.cancel()
        master?.connection.close()
        master = nil
        for connection in askers.values { connection.close() }
        for connection in watchers { connection.close() }
        askers.removeAll()
        watchers.removeAll()
    }

    // MARK: - following the master

    private static let noMasterError = RedisError.notConnected("no Redis master known from the Sentinels")

    private func noMaster(_ completion: RedisCompletion) {
        discover()
        completion(.failure(Self.noMasterError))
    }

    /// An answer that says the master is gone, or no master any longer: ask again.
    private func check(_ result: Result<RedisReply, RedisError>) {
        switch result {
        case .success(.error(let message)) where SentinelReplies.saysNotMaster(message): discover()
        case .failure(.io), .failure(.eof), .failure(.timeout), .failure(.connectionClosed), .failure(.notConnected): discover()
        default: break
        }
    }

    /// Asks the Sentinels for the master, unless a discovery is under way or has just been made
    /// (it then runs once that interval is over).
    private func discover() {
        guard !discovering, !closed, nextDiscovery == nil else { return }
        let due = lastDiscovery + Self.discoveryInterval
        if NIODeadline.now() < due { return discover(at: due) }
        discovering = true
        lastDiscovery = .now()
        let order = sentinels.indices.map { sentinels[($0 + preferred) % sentinels.count] }
        ask(order[...], generation: adoptions, lastProblem: "no Sentinel to ask")
    }

    private func discover(at deadline: NIODeadline) {
        guard nextDiscovery == nil, !closed else { return }
        nextDiscovery = eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
            self.nextDiscovery = nil
            self.discover()
        }
    }

    private func ask(_ candidates: ArraySlice<ClusterNode>, generation: Int, lastProblem: String) {
        guard !closed else { return }
        guard let sentinel = candidates.first else { return unknown(lastProblem) }
        asker(sentinel).send(["SENTINEL", "get-master-addr-by-name", .string(masterName)]) { result in
            guard !self.closed else { return }
            do {
                guard let node = try SentinelReplies.masterAddress(result.get()) else {
                    throw RedisError.unexpectedReply("it monitors no master named \(self.masterName)")
                }
                self.preferred = self.sentinels.firstIndex(of: sentinel) ?? 0
                self.verify(node, generation: generation) { isMaster in
                    if isMaster {
                        self.discovering = false
                    } else {
                        self.unknown("\(node), named by the Sentinel \(sentinel), is no master (yet)")
                    }
                }
            } catch {
                self.ask(candidates.dropFirst(), generation: generation, lastProblem: "Sentinel \(sentinel): \(error)")
            }
        }
    }

    /// No master found this time: said once, asked again shortly.
    private func unknown(_ reason: String) {
        discovering = false
        if !unknownTold {
            unknownTold = true
            onMasterUnknown?(reason)
        }
        discover(at: .now() + Self.unknownRetry)
    }

    /// Uses `node` as the master once `ROLE` says it is one. `generation`: the adoptions
    /// counted when the Sentinel was asked; a newer master adopted since wins.
    private func verify(_ node: ClusterNode, generation: Int, then done: @escaping (Bool) -> Void) {
        let inUse = master?.node == node ? master?.connection : nil
        let connection = inUse ?? RedisConnection(configuration: masterConfiguration(node), eventLoop: eventLoop)
        connection.send(["ROLE"]) { result in
            guard !self.closed else { return connection.close() }
            let isMaster = (try? result.get()).map(SentinelReplies.isMaster) ?? false
            if case .success(.array) = result, !isMaster, connection === self.master?.connection {
                // The master in use says it is one no longer (demoted, or back as a replica):
                // commands fail at once until the Sentinels name another.
                self.master = nil
                connection.close()
            }
            guard isMaster, generation == self.adoptions else {
                if connection !== self.master?.connection { connection.close() }
                // A newer switch adopted this very node meanwhile: that is a success too.
                return done(isMaster && self.master?.node == node)
            }
            self.adopt(node, connection)
            done(true)
        }
    }

    private func adopt(_ node: ClusterNode, _ connection: RedisConnection) {
        unknownTold = false
        guard master?.node != node else { return }
        let old = master
        adoptions += 1
        connection.onAvailabilityChange = { [weak self] server, available, error in
            self?.onAvailabilityChange?(server, available, error)
        }
        master = (node, connection)
        old?.connection.close()
        onMasterChange?(node)
    }

    /// `+switch-master` from `sentinel`: the new master, checked with `ROLE` at once.
    private func watch(_ sentinel: ClusterNode) {
        let connection = RedisConnection(configuration: sentinelAddressed(sentinel), eventLoop: eventLoop) { [weak self] reply in
            guard let self, case .message(_, let payload) = RedisPush(reply),
                let node = SentinelReplies.switchedMaster(payload, name: self.masterName), node != self.master?.node
            else { return }
            self.verify(node, generation: self.adoptions) { isMaster in
                if !isMaster { self.discover() }
            }
        }
        var reconnected = false
        connection.onReady = { [weak self, weak connection] in
            connection?.sendUnanswered(["SUBSCRIBE", "+switch-master"])
            // A switch announced while this Sentinel was out of reach was not heard: ask.
            if reconnected { self?.discover() }
            reconnected = true
        }
        watchers.append(connection)
    }

    private func asker(_ sentinel: ClusterNode) -> RedisConnection {
        if let connection = askers[sentinel] { return connection }
        let connection = RedisConnection(configuration: sentinelAddressed(sentinel), eventLoop: eventLoop)
        askers[sentinel] = connection
        return connection
    }

    private func sentinelAddressed(_ sentinel: ClusterNode) -> RedisConfiguration {
        var configuration = sentinelConfiguration
        configuration.address = .tcp(host: sentinel.host, port: sentinel.port)
        return configuration
    }
}
