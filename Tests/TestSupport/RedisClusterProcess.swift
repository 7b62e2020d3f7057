import Foundation
import NIOSSL
import RedisClient

/// A real Redis Cluster on loopback: `count` primaries with the slots split evenly, and, when
/// asked, one replica per primary. The servers are stopped when this is released.
public final class RedisClusterProcess: @unchecked Sendable {
    /// The primaries, in slot order (the first serves slots 0…).
    public let nodes: [RedisServerProcess]
    /// `replicas[i]` replicates `nodes[i]`.
    public let replicas: [RedisServerProcess]
    /// `requirepass` of every node (and `masterauth` of the replicas), if any.
    public let password: String?
    /// TLS on every node's port and on the cluster bus (`rediss://` seeds).
    public let tls: RedisTLS?

    public init(
        primaries count: Int = 3, withReplicas: Bool = false, nodeTimeoutMs: Int = 5000, password: String? = nil,
        tls certificates: TestCertificates? = nil
    ) async throws {
        self.password = password
        tls = try certificates.map { RedisTLS(context: try $0.clientContext(trusting: $0.caFile)) }
        let tlsCluster = certificates == nil ? [] : ["--tls-cluster", "yes", "--tls-replication", "yes"]
        let auth = password.map { ["--requirepass", $0, "--masterauth", $0] } ?? []
        let total = withReplicas ? 2 * count : count
        var busPorts: [Int] = []
        var servers: [RedisServerProcess] = []
        for _ in 0..<total {
            // The cluster bus port is named, not left at port + 10000, which may be taken; it is
            // held until the server starts, so that no other port pick lands on it, and a start
            // that loses a port to someone else anyway is tried again.
            var attempt = 0
            while true {
                attempt += 1
                let bus = try ClosedPort()
                let arguments = [
                    "--cluster-enabled", "yes", "--cluster-port", "\(bus.port)", "--cluster-node-timeout", "\(nodeTimeoutMs)",
                ] + auth + tlsCluster
                do {
                    let server = try RedisServerProcess(arguments: arguments, tls: certificates) { bus.open() }
                    busPorts.append(bus.port)
                    servers.append(server)
                    break
                } catch where attempt < 3 {
                    continue
                }
            }
        }
        nodes = Array(servers[..<count])
        replicas = Array(servers[count...])
        for (index, node) in nodes.enumerated() {
            let first = index * HashSlot.count / count
            let last = (index + 1) * HashSlot.count / count - 1
            try await expectOK(node, ["CLUSTER", "ADDSLOTSRANGE", RedisArgument(first), RedisArgument(last)])
        }
        for server in servers.dropFirst() {
            try await expectOK(server, ["CLUSTER", "MEET", "127.0.0.1", RedisArgument(servers[0].port), RedisArgument(busPorts[0])])
        }
        try await waitUntil("every node knows every other") { info, _ in info.contains("cluster_known_nodes:\(total)") }
        for (replica, primary) in zip(replicas, nodes) {
            let primaryID = try await id(of: primary)
            // Gossip may not have told the replica about its primary yet.
            try await eventually("cluster: \(replica.port) replicates \(primary.port)", within: 20) {
                (try? await self.expectOK(replica, ["CLUSTER", "REPLICATE", .string(primaryID)])) != nil
            }
        }
        try await waitUntil("the cluster is up") { info, replication in
            info.contains("cluster_state:ok") && (!replication.contains("role:slave") || replication.contains("master_link_status:up"))
        }
    }

    /// `redis_url` for the proxy: two of the primaries as seeds.
    public var seedsURL: String {
        "\(tls == nil ? "redis" : "rediss")://\(password.map { ":\($0)@" } ?? "")127.0.0.1:\(nodes[0].port),127.0.0.1:\(nodes[1].port)"
    }

    /// The port of the primary that served `slot` when the cluster was made.
    public func port(servingSlot slot: Int) -> Int { nodes[slot * nodes.count / HashSlot.count].port }

    /// A primary that did not serve `slot` when the cluster was made.
    public func primary(otherThanOwnerOf slot: Int) -> RedisServerProcess {
        nodes.first { $0.port != port(servingSlot: slot) }!
    }

    /// Gives `slot` (holding no keys) to the node on `port`, on every node at once: the way a
    /// resharding ends. Clients that cached the old owner are answered `MOVED`.
    public func assign(slot: Int, toNodeOn port: Int) async throws {
        let owner = try await id(of: nodes.first { $0.port == port }!)
        for node in nodes { try await expectOK(node, ["CLUSTER", "SETSLOT", RedisArgument(slot), "NODE", .string(owner)]) }
    }

    /// Until `settled(CLUSTER INFO, INFO replication)` holds on every running node.
    public func waitUntil(_ what: String, _ settled: @escaping (String, String) -> Bool) async throws {
        try await eventually("cluster: \(what)", within: 20) {
            for server in self.nodes + self.replicas where server.processIdentifier != nil {
                guard let client = try? await self.client(server) else { return false }
                let info = (try? await client.send(["CLUSTER", "INFO"]).string) ?? ""
                let replication = (try? await client.send(["INFO", "replication"]).string) ?? ""
                await client.close()
                if !settled(info, replication) { return false }
            }
            return true
        }
    }

    /// A client for one node, authenticated when the cluster has a password.
    public func client(_ server: RedisServerProcess) async throws -> TestRedisClient {
        try await TestRedisClient(
            RedisConfiguration(address: .tcp(host: "127.0.0.1", port: server.port), password: password, tls: tls))
    }

    /// The node's cluster id (`CLUSTER MYID`).
    public func id(of server: RedisServerProcess) async throws -> String {
        let client = try await client(server)
        defer { Task { await client.close() } }
        guard let id = try await client.send(["CLUSTER", "MYID"]).string else { throw TestSupportError("no node id") }
        return id
    }

    private func expectOK(_ server: RedisServerProcess, _ command: [RedisArgument]) async throws {
        let client = try await client(server)
        defer { Task { await client.close() } }
        let reply = try await client.send(command)
        guard reply == .status("OK") else { throw TestSupportError("cluster setup: \(command.first!) → \(reply)") }
    }
}
