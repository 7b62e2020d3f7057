import Foundation
import RedisClient

/// A real Redis Cluster of `count` primaries (no replicas) on loopback, slots split evenly.
/// The servers are stopped when this is released.
public final class RedisClusterProcess: @unchecked Sendable {
    public let nodes: [RedisServerProcess]

    public init(primaries count: Int = 3) async throws {
        // The cluster bus port is named, not left at port + 10000, which may be taken.
        let busPorts = try (0..<count).map { _ in try FreePort.next() }
        nodes = try busPorts.map { busPort in
            try RedisServerProcess(arguments: [
                "--cluster-enabled", "yes", "--cluster-port", "\(busPort)", "--cluster-node-timeout", "5000",
            ])
        }
        for (index, node) in nodes.enumerated() {
            let client = try await TestRedisClient(port: node.port)
            defer { Task { await client.close() } }
            let first = index * HashSlot.count / count
            let last = (index + 1) * HashSlot.count / count - 1
            try expectOK(await client.send(["CLUSTER", "ADDSLOTSRANGE", RedisArgument(first), RedisArgument(last)]))
            if index > 0 {
                let meet: [RedisArgument] = ["CLUSTER", "MEET", "127.0.0.1", RedisArgument(nodes[0].port), RedisArgument(busPorts[0])]
                try expectOK(await client.send(meet))
            }
        }
        try await waitUntilSettled()
    }

    /// `redis_url` for the proxy: two of the nodes as seeds.
    public var seedsURL: String { "redis://127.0.0.1:\(nodes[0].port),127.0.0.1:\(nodes[1].port)" }

    /// The port of the node that serves `slot` now.
    public func port(servingSlot slot: Int) -> Int { nodes[slot * nodes.count / HashSlot.count].port }

    /// Gives `slot` (holding no keys) to the node on `port`, on every node at once: the way a
    /// resharding ends. Clients that cached the old owner are answered `MOVED`.
    public func assign(slot: Int, toNodeOn port: Int) async throws {
        let owner = try await TestRedisClient(port: port)
        defer { Task { await owner.close() } }
        guard let id = try await owner.send(["CLUSTER", "MYID"]).string else { throw TestSupportError("no node id") }
        for node in nodes {
            let client = try await TestRedisClient(port: node.port)
            defer { Task { await client.close() } }
            try expectOK(await client.send(["CLUSTER", "SETSLOT", RedisArgument(slot), "NODE", .string(id)]))
        }
    }

    /// Until every node reports `cluster_state:ok` and the same slot owners.
    private func waitUntilSettled(seconds: Double = 15) async throws {
        let clock = ContinuousClock()
        let start = clock.now
        while clock.now - start < .seconds(seconds) {
            var settled = true
            for node in nodes {
                let client = try await TestRedisClient(port: node.port)
                let info = try await client.send(["CLUSTER", "INFO"]).string ?? ""
                await client.close()
                if !info.contains("cluster_state:ok") || !info.contains("cluster_known_nodes:\(nodes.count)") { settled = false }
            }
            if settled { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TestSupportError("the cluster did not settle within \(seconds) s")
    }

    private func expectOK(_ reply: RedisReply) throws {
        guard reply == .status("OK") else { throw TestSupportError("cluster setup: \(reply)") }
    }
}
