import Foundation
import RedisClient

/// A real Sentinel setup on free loopback ports: a primary, one replica and three Sentinels
/// (`redis-server --sentinel`) monitoring it as `mymaster` with a quorum of 2, quick to notice
/// a dead primary (1 s). Tests kill the primary, ask for a planned failover, or stop a Sentinel.
/// With `tls`, every one of them speaks TLS only (replication and the Sentinels' own
/// connections too).
public final class RedisSentinelGroup: @unchecked Sendable {
    public static let masterName = "mymaster"

    public let primary: RedisServerProcess
    public let replica: RedisServerProcess
    public let sentinels: [SentinelProcess]
    private let tls: TestCertificates?

    public init(tls: TestCertificates? = nil) throws {
        self.tls = tls
        let primary = try RedisServerProcess(tls: tls)
        self.primary = primary
        let replication = tls == nil ? [] : ["--tls-replication", "yes"]
        replica = try RedisServerProcess(arguments: ["--replicaof", "127.0.0.1", "\(primary.port)"] + replication, tls: tls)
        sentinels = try (0..<3).map { _ in try SentinelProcess(monitoring: primary.port, tls: tls) }
    }

    /// The proxy's `redis_url`: every Sentinel.
    public var url: String {
        (tls == nil ? "redis://" : "rediss://") + sentinels.map { "127.0.0.1:\($0.port)" }.joined(separator: ",")
    }

    /// Waits until the replica is in sync and every Sentinel knows it and the two others, so
    /// that a failover can be agreed on.
    public func waitUntilSettled() async throws {
        try await eventually("the Sentinels knowing the replica and each other", pause: .milliseconds(200)) {
            for sentinel in sentinels {
                guard let fields = try? await sentinel.masterState(),
                    fields["num-slaves"] == "1", fields["num-other-sentinels"] == "2", fields["flags"] == "master"
                else { return false }
            }
            return try await info(port: replica.port, section: "replication").contains("master_link_status:up")
        }
    }

    /// The master's port as the first Sentinel still answering names it.
    public func masterPort() async throws -> Int? {
        for sentinel in sentinels where sentinel.isRunning {
            if let port = try? await sentinel.masterPort() { return port }
        }
        return nil
    }

    /// `INFO section` of the server (of this group) on `port`.
    public func info(port: Int, section: String) async throws -> String {
        let client = try await TestRedisClient.connect(port: port, tls: tls)
        let reply = try? await client.send(["INFO", .string(section)])
        await client.close()
        return reply?.string ?? ""
    }
}

extension TestRedisClient {
    /// A client of a test server, over TLS trusting the certificates' CA when they are given.
    static func connect(port: Int, tls: TestCertificates?) async throws -> TestRedisClient {
        var configuration = RedisConfiguration(address: .tcp(host: "127.0.0.1", port: port), commandTimeout: .seconds(2))
        if let tls { configuration.tls = RedisTLS(context: try tls.clientContext(trusting: tls.caFile)) }
        return try await TestRedisClient(configuration)
    }
}

/// One Sentinel: its own configuration file (Sentinel rewrites it) in a directory of its own.
public final class SentinelProcess: @unchecked Sendable {
    public let port: Int
    private let directory: URL
    private var process: Process?
    private let tls: TestCertificates?

    public init(monitoring primaryPort: Int, tls: TestCertificates? = nil) throws {
        self.tls = tls
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("idemproxy-sentinel-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        port = try FreePort.next()
        let name = RedisSentinelGroup.masterName
        let listen = tls.map {
            """
            port 0
            tls-port \(port)
            tls-cert-file \($0.serverCertFile)
            tls-key-file \($0.serverKeyFile)
            tls-ca-cert-file \($0.caFile)
            tls-auth-clients no
            tls-replication yes
            """
        } ?? "port \(port)"
        try """
            \(listen)
            bind 127.0.0.1
            dir \(directory.path)
            sentinel monitor \(name) 127.0.0.1 \(primaryPort) 2
            sentinel down-after-milliseconds \(name) 1000
            sentinel failover-timeout \(name) 10000
            sentinel parallel-syncs \(name) 1
            """.write(to: directory.appendingPathComponent("sentinel.conf"), atomically: true, encoding: .utf8)
        try start()
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }

    public func start() throws {
        let configuration = directory.appendingPathComponent("sentinel.conf").path
        process = try Process.server(RedisServerProcess.binary, arguments: [configuration, "--sentinel"], listeningOn: port)
    }

    public func stop() {
        process?.killNow()
        process = nil
    }

    public var isRunning: Bool { process?.isRunning ?? false }

    public func send(_ arguments: [RedisArgument]) async throws -> RedisReply {
        let client = try await TestRedisClient.connect(port: port, tls: tls)
        do {
            let reply = try await client.send(arguments)
            await client.close()
            return reply
        } catch {
            await client.close()
            throw error
        }
    }

    public func masterPort() async throws -> Int? {
        guard case .array(let items) = try await send(["SENTINEL", "get-master-addr-by-name", .string(RedisSentinelGroup.masterName)]),
            items.count == 2
        else { return nil }
        return items[1].string.flatMap { Int($0) }
    }

    /// `SENTINEL MASTER name` as a dictionary of its fields.
    public func masterState() async throws -> [String: String] {
        guard case .array(let items) = try await send(["SENTINEL", "MASTER", .string(RedisSentinelGroup.masterName)]) else {
            return [:]
        }
        var fields: [String: String] = [:]
        var index = 0
        while index + 1 < items.count {
            if let key = items[index].string { fields[key] = items[index + 1].string }
            index += 2
        }
        return fields
    }
}
