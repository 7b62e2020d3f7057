import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import RedisClient
@testable import TestSupport

@Suite struct HashSlotTests {
    @Test func crc16IsXMODEM() {
        #expect(HashSlot.crc16(Array("123456789".utf8)) == 0x31C3)  // the standard check value
    }

    @Test(arguments: [
        ("foo", 12182), ("bar", 5061), ("hello", 866), ("", 0),
        ("{user1000}.following", 3443), ("{user1000}.followers", 3443),
        ("foo{}{bar}", 8363),  // an empty tag: the whole key
        ("foo{{bar}}zap", 4015),  // the tag is "{bar"
        ("foo{bar}{zap}", 5061),  // the first tag only: "bar"
    ] as [(String, Int)])
    func slotOfAKeyOrItsHashTag(key: String, slot: Int) {
        #expect(HashSlot.of(Array(key.utf8)) == slot)
    }
}

@Suite struct ClusterSlotMapTests {
    static func range(_ start: Int, _ end: Int, _ host: String, _ port: Int) -> RedisReply {
        .array([
            .integer(Int64(start)), .integer(Int64(end)),
            .array([.bulk(ByteBuffer(string: host)), .integer(Int64(port)), .bulk(ByteBuffer(string: "id"))]),
            .array([.bulk(ByteBuffer(string: "10.0.0.9")), .integer(7000), .bulk(ByteBuffer(string: "replica"))]),
        ])
    }

    @Test func readsPrimariesPerRange() throws {
        let reply = RedisReply.array([Self.range(0, 99, "10.0.0.1", 7000), Self.range(100, 16383, "", 7001)])
        let map = try ClusterSlotMap(clusterSlots: reply, askedHost: "10.0.0.5")
        #expect(map.node(forSlot: 0) == ClusterNode(host: "10.0.0.1", port: 7000))
        #expect(map.node(forSlot: 99) == ClusterNode(host: "10.0.0.1", port: 7000))
        // An empty host is the node that answered.
        #expect(map.node(forSlot: 100) == ClusterNode(host: "10.0.0.5", port: 7001))
        #expect(map.nodes.count == 2)
    }

    @Test func leavesUncoveredSlotsUnassigned() throws {
        let map = try ClusterSlotMap(clusterSlots: .array([Self.range(5, 5, "h", 1)]), askedHost: "x")
        #expect(map.node(forSlot: 4) == nil)
        #expect(map.node(forSlot: 5) == ClusterNode(host: "h", port: 1))
    }

    @Test(arguments: [
        RedisReply.status("OK"),
        .array([.array([.integer(0), .integer(16384), .array([.bulk(ByteBuffer(string: "h")), .integer(1)])])]),
        .array([.array([.integer(9), .integer(3), .array([.bulk(ByteBuffer(string: "h")), .integer(1)])])]),
        .array([.array([.integer(0), .integer(3), .array([.bulk(ByteBuffer(string: "h")), .integer(0)])])]),
        .array([.array([.integer(0), .integer(3)])]),
    ])
    func refusesMalformedReplies(_ reply: RedisReply) {
        #expect(throws: RedisError.self) { try ClusterSlotMap(clusterSlots: reply, askedHost: "x") }
    }

    /// Node indexes are 16 bits, the largest meaning "unassigned": a reply that names more
    /// nodes than there are slots (ranges may repeat) is refused (65,536 of them used to trap).
    @Test func refusesMoreNodesThanSlots() throws {
        let ranges = (0...HashSlot.count).map { Self.range(0, 0, "10.0.\($0 / 250).\($0 % 250)", 7000) }
        #expect(throws: RedisError.self) { try ClusterSlotMap(clusterSlots: .array(ranges), askedHost: "x") }
        var map = try ClusterSlotMap(clusterSlots: .array(Array(ranges.dropLast())), askedHost: "x")
        map.assign(slot: 1, to: ClusterNode(host: "one-too-many", port: 1))
        #expect(map.node(forSlot: 1) == nil)
    }

    @Test func redirectionsNameSlotAndNode() {
        let here = ClusterNode(host: "10.0.0.5", port: 7000)
        func read(_ message: String) -> String? {
            ClusterRedirect(error: message, answeredBy: here).map { "\($0.kind) \($0.slot) \($0.node)" }
        }
        #expect(read("MOVED 3999 127.0.0.1:6381") == "moved 3999 127.0.0.1:6381")
        #expect(read("ASK 12 [::1]:7002") == "ask 12 [::1]:7002")
        #expect(read("MOVED 7 :7003") == "moved 7 10.0.0.5:7003")
        for other in ["ERR unknown command", "MOVED 16384 h:1", "MOVED x h:1", "ASK 1 h", "MOVED 1 h:0", "NOSCRIPT No matching script"] {
            #expect(ClusterRedirect(error: other, answeredBy: here) == nil, "\(other)")
        }
    }
}

/// A `RedisClusterClient` on its own event loop, driven from async tests.
private final class TestClusterClient: Sendable {
    let loop: any EventLoop
    private let group: MultiThreadedEventLoopGroup
    private let client: NIOLoopBound<RedisClusterClient>
    private let subscriber: NIOLoopBound<RedisClusterSubscriber>

    init(
        seeds: [Int], user: (name: String, password: String)? = nil,
        onSlotMapUnavailable: (@Sendable (String) -> Void)? = nil,
        onSubscribeRefused: (@Sendable (String) -> Void)? = nil
    ) async throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        self.loop = loop
        (client, subscriber) = try await loop.submit {
            let nodes = seeds.map { ClusterNode(host: "127.0.0.1", port: $0) }
            let configuration = RedisConfiguration(
                address: .tcp(host: "unused", port: 0), username: user?.name, password: user?.password,
                commandTimeout: .seconds(2))
            let client = RedisClusterClient(seeds: nodes, configuration: configuration, eventLoop: loop)
            client.onSlotMapUnavailable = onSlotMapUnavailable
            let subscriber = RedisClusterSubscriber(cluster: client, configuration: configuration)
            subscriber.onRefused = onSubscribeRefused
            return (NIOLoopBound(client, eventLoop: loop), NIOLoopBound(subscriber, eventLoop: loop))
        }.get()
    }

    /// Subscribes to a shard channel; the box counts the messages heard on it.
    func subscribe(_ channel: String) async throws -> NIOLockedValueBox<Int> {
        let heard = NIOLockedValueBox(0)
        try await loop.submit {
            _ = self.subscriber.value.subscribe(channel) { heard.withLockedValue { $0 += 1 } }
        }.get()
        return heard
    }

    func run(_ script: RedisScript, key: String, argument: String) async throws -> RedisReply {
        try await loop.flatSubmit {
            let promise = self.loop.makePromise(of: RedisReply.self)
            self.client.value.run(script, keys: [.string(key)], arguments: [.string(argument)]) {
                promise.completeWith($0.mapError { $0 })
            }
            return promise.futureResult
        }.get()
    }

    func send(_ arguments: [RedisArgument], key: String?) async throws -> RedisReply {
        try await loop.flatSubmit {
            let promise = self.loop.makePromise(of: RedisReply.self)
            self.client.value.send(arguments, key: key.map { .string($0) }) { promise.completeWith($0.mapError { $0 }) }
            return promise.futureResult
        }.get()
    }

    var knownNodes: Int { get async throws { try await loop.submit { self.client.value.knownNodes.count }.get() } }

    func waitForTheSlotMap() async throws {
        for _ in 0..<1_000 where try await knownNodes < 3 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(try await knownNodes == 3)
    }

    func close() async {
        try? await loop.submit { self.subscriber.value.close(); self.client.value.close() }.get()
        try? await group.shutdownGracefully()
    }
}

@Suite(.serialized) struct RedisClusterClientTests {
    static let setScript = RedisScript("return redis.call('SET', KEYS[1], ARGV[1])")

    /// The value of `key` as stored on the node that must serve it.
    static func storedValue(_ key: String, in cluster: RedisClusterProcess) async throws -> RedisReply {
        let node = try await TestRedisClient(port: cluster.port(servingSlot: HashSlot.of(Array(key.utf8))))
        defer { Task { await node.close() } }
        return try await node.send(["GET", .string(key)])
    }

    @Test func scriptsRunOnTheNodeThatServesTheirKey() async throws {
        let cluster = try await RedisClusterProcess()
        let client = try await TestClusterClient(seeds: [cluster.nodes[1].port])
        defer { Task { await client.close() } }
        let keys = (0..<60).map { "idem:\($0)" }
        for key in keys {
            // The first commands may go out before the slot map is in: MOVED is followed.
            #expect(try await client.run(Self.setScript, key: key, argument: "v-\(key)") == .status("OK"))
        }
        for key in keys { #expect(try await Self.storedValue(key, in: cluster) == .bulk(ByteBuffer(string: "v-\(key)"))) }
        #expect(try await client.knownNodes == 3)
        // Our slot function agrees with the server's.
        let probe = try await TestRedisClient(port: cluster.nodes[0].port)
        defer { Task { await probe.close() } }
        for key in keys.prefix(20) {
            #expect(try await probe.send(["CLUSTER", "KEYSLOT", .string(key)]) == .integer(Int64(HashSlot.of(Array(key.utf8)))))
        }
        // Commands with a key go to its node too (WAIT counts replicas of that node: none).
        #expect(try await client.send(["WAIT", "0", "10"], key: keys[0]) == .integer(0))
        #expect(try await client.send(["PING"], key: nil) == .status("PONG"))
    }

    @Test func aSlotThatMovedIsFollowedAndRemembered() async throws {
        let cluster = try await RedisClusterProcess()
        let client = try await TestClusterClient(seeds: [cluster.nodes[0].port])
        defer { Task { await client.close() } }
        let key = "moving-key"
        let slot = HashSlot.of(Array(key.utf8))
        try await client.waitForTheSlotMap()
        let to = cluster.primary(otherThanOwnerOf: slot).port
        try await cluster.assign(slot: slot, toNodeOn: to)
        // The client still thinks the old node serves the slot: it is told MOVED and follows.
        #expect(try await client.run(Self.setScript, key: key, argument: "moved") == .status("OK"))
        let newOwner = try await TestRedisClient(port: to)
        defer { Task { await newOwner.close() } }
        #expect(try await newOwner.send(["GET", .string(key)]) == .bulk(ByteBuffer(string: "moved")))
        #expect(try await client.run(Self.setScript, key: key, argument: "again") == .status("OK"))
        #expect(try await newOwner.send(["GET", .string(key)]) == .bulk(ByteBuffer(string: "again")))
    }

    @Test func aSlotBeingMigratedIsAskedOfItsNewNode() async throws {
        let cluster = try await RedisClusterProcess()
        let client = try await TestClusterClient(seeds: [cluster.nodes[0].port])
        defer { Task { await client.close() } }
        let key = "migrating-key"
        let slot = HashSlot.of(Array(key.utf8))
        try await client.waitForTheSlotMap()
        let owner = cluster.nodes.first { $0.port == cluster.port(servingSlot: slot) }!
        let importer = cluster.primary(otherThanOwnerOf: slot)
        let fromID = try await cluster.id(of: owner)
        let toID = try await cluster.id(of: importer)
        let from = try await TestRedisClient(port: owner.port)
        let to = try await TestRedisClient(port: importer.port)
        defer { Task { await from.close(); await to.close() } }
        #expect(try await to.send(["CLUSTER", "SETSLOT", RedisArgument(slot), "IMPORTING", .string(fromID)]) == .status("OK"))
        #expect(try await from.send(["CLUSTER", "SETSLOT", RedisArgument(slot), "MIGRATING", .string(toID)]) == .status("OK"))
        // The old node does not have the key and answers ASK: the script runs on the new one.
        #expect(try await client.run(Self.setScript, key: key, argument: "asked") == .status("OK"))
        let read = try await to.pipeline([["ASKING"], ["GET", .string(key)]])
        #expect(try read[1].get() == .bulk(ByteBuffer(string: "asked")))
        // The old node never had it: it sends readers on as well.
        guard case .error(let redirect) = try await from.send(["GET", .string(key)]) else { Issue.record("no ASK"); return }
        #expect(redirect.hasPrefix("ASK \(slot) "))
    }

    /// Shard channels are subscribed on the primary that serves their slot, and follow the
    /// slot when it moves (the old node says `sunsubscribe`; the map read then names the new
    /// one). `SPUBLISH` answers how many subscribers of its shard it reached.
    @Test func shardChannelsAreHeardWhereTheirSlotIs() async throws {
        let cluster = try await RedisClusterProcess()
        let client = try await TestClusterClient(seeds: [cluster.nodes[0].port])
        defer { Task { await client.close() } }
        try await client.waitForTheSlotMap()
        let channels = (0..<9).map { "wake:\($0)" }
        var heard: [String: NIOLockedValueBox<Int>] = [:]
        for channel in channels { heard[channel] = try await client.subscribe(channel) }
        #expect(Set(channels.map { cluster.port(servingSlot: HashSlot.of(Array($0.utf8))) }).count == 3)

        /// Publishes on `port` until a subscriber is reached (subscribing takes a moment).
        func reached(_ channel: String, on port: Int) async throws -> Bool {
            let publisher = try await TestRedisClient(port: port)
            defer { Task { await publisher.close() } }
            for _ in 0..<200 {
                if try await publisher.send(["SPUBLISH", .string(channel), "m"]) == .integer(1) { return true }
                try await Task.sleep(for: .milliseconds(50))
            }
            return false
        }
        func heardOnce(_ channel: String) async throws -> Bool {
            for _ in 0..<1_000 where heard[channel]!.withLockedValue({ $0 }) == 0 { try await Task.sleep(for: .milliseconds(10)) }
            return heard[channel]!.withLockedValue { $0 } == 1
        }
        for channel in channels {
            #expect(try await reached(channel, on: cluster.port(servingSlot: HashSlot.of(Array(channel.utf8)))), "\(channel)")
            #expect(try await heardOnce(channel), "\(channel)")
        }

        let moving = channels[0]
        let slot = HashSlot.of(Array(moving.utf8))
        let to = cluster.primary(otherThanOwnerOf: slot).port
        heard[moving]!.withLockedValue { $0 = 0 }
        try await cluster.assign(slot: slot, toNodeOn: to)
        #expect(try await reached(moving, on: to), "the channel did not follow its slot")
        #expect(try await heardOnce(moving))
    }

    /// A refused `SSUBSCRIBE` that is no redirection (here an ACL without it; before Redis 7
    /// the command does not exist) is reported once and not sent again and again.
    @Test func aRefusedShardSubscriptionIsReportedOnce() async throws {
        let cluster = try await RedisClusterProcess()
        for node in cluster.nodes {
            let admin = try await cluster.client(node)
            let user: [RedisArgument] = ["ACL", "SETUSER", "waiter", "on", ">pw", "~*", "&*", "+@all", "-ssubscribe"]
            #expect(try await admin.send(user) == .status("OK"))
            await admin.close()
        }
        let refusals = NIOLockedValueBox<[String]>([])
        let client = try await TestClusterClient(seeds: [cluster.nodes[0].port], user: ("waiter", "pw")) { _ in } onSubscribeRefused: {
            error in refusals.withLockedValue { $0.append(error) }
        }
        defer { Task { await client.close() } }
        try await client.waitForTheSlotMap()
        for index in 0..<6 { _ = try await client.subscribe("wake:\(index)") }
        for _ in 0..<500 where refusals.withLockedValue({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(20)) }
        try await Task.sleep(for: .milliseconds(300))  // several refresh intervals: no storm of retries
        let told = refusals.withLockedValue { $0 }
        #expect(told.count == 1)
        #expect(told.first?.contains("NOPERM") == true, "\(told)")
        var refused = 0
        for node in cluster.nodes {
            let probe = try await cluster.client(node)
            refused += try await probe.calls(of: "SSUBSCRIBE", count: "rejected_calls")
            await probe.close()
        }
        #expect(refused == 6, "each channel is asked for once")
    }

    /// `redis_cluster = true` pointed at a Redis without cluster support: the client says why
    /// it has no slot map (once), and commands still reach the seed.
    @Test func aSeedWithoutClusterSupportIsReported() async throws {
        let standalone = try RedisServerProcess()
        let reasons = NIOLockedValueBox<[String]>([])
        let client = try await TestClusterClient(seeds: [standalone.port]) { reason in
            reasons.withLockedValue { $0.append(reason) }
        }
        defer { Task { await client.close() } }
        #expect(try await client.run(Self.setScript, key: "k", argument: "v") == .status("OK"))
        for _ in 0..<500 where reasons.withLockedValue({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(20)) }
        let told = reasons.withLockedValue { $0 }
        #expect(told.count == 1)
        #expect(told.first?.contains("cluster support disabled") == true, "\(told)")
    }
}
